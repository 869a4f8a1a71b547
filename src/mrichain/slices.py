"""2-D axial-slice datasets and slice-wise inference, shared by the learned 2-D methods.

Volumes are [X, Y, Z] arrays (RAS, axial slices along Z). They are small (81x99x82 at 2 mm), so
a dataset keeps every volume in memory and indexes (volume, z) pairs; a sample is a dict of
``[1, H, W]`` tensors, one per array of the volume (``[2c + 1, H, W]`` for the arrays given
through-plane context ``c``: the slice and its ``c`` neighbours on each side, "2.5-D"),
zero-padded at the high end of X and Y to the dataset's common slice shape (the largest X, Y over
volumes, rounded up to ``multiple`` so that a network with ``k`` stride-2 stages sees sizes
divisible by ``2**k``).
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def percentile_scale(data: np.ndarray, q: float = 99.0) -> float:
    """Intensity scale of a volume: its ``q``-th percentile (> 0; falls back to max, then 1)."""
    data = np.asarray(data)
    s = float(np.percentile(data, q)) if data.size else 0.0
    if not s > 0:
        s = float(data.max()) if data.size else 0.0
    return s if s > 0 else 1.0


def zscore_scale(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean, SD) of ``data`` inside the boolean ``mask`` (nnU-Net's MRI normalisation: z-score
    per volume over its foreground). Falls back to the whole volume when the mask is empty and to
    SD 1 when the values are constant, so a degenerate volume never divides by zero."""
    data = np.asarray(data, dtype=np.float64)
    values = data[np.asarray(mask, bool)] if np.any(mask) else data.ravel()
    mean, sd = (float(values.mean()), float(values.std())) if values.size else (0.0, 1.0)
    return mean, (sd if sd > 0 else 1.0)


def neighbour_stack(volume: np.ndarray, context: int) -> np.ndarray:
    """[X, Y, Z] -> [2c + 1, X, Y, Z]: channel ``j`` holds slice ``z + j - c`` at slice ``z``,
    clamped to the volume (the edge slice repeats), so a 2-D network sees ``c`` neighbours on each
    side ("2.5-D" input). ``context`` 0 gives ``[1, X, Y, Z]``."""
    vol = np.asarray(volume)
    nz, c = vol.shape[-1], int(context)
    z = np.clip(np.arange(nz)[None, :] + np.arange(-c, c + 1)[:, None], 0, nz - 1)  # [2c+1, Z]
    return np.moveaxis(vol[..., z], -2, 0)


def round_up(n: int, multiple: int) -> int:
    return int(-(-int(n) // int(multiple)) * int(multiple))


def pad2d(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad the last two axes of ``a`` at their high end to ``shape`` (H, W)."""
    ph, pw = shape[0] - a.shape[-2], shape[1] - a.shape[-1]
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {a.shape[-2:]} to smaller {tuple(shape)}")
    if ph == 0 and pw == 0:
        return a
    return np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)])


class SliceDataset(Dataset):
    """Map-style dataset over the axial slices of several in-memory volumes.

    items: anything ``load_fn`` understands (e.g. manifest dicts of file paths).
    load_fn(item) -> dict name -> np.ndarray [X, Y, Z] (all of one shape; float arrays for
    images, int64 for label maps). A sample is ``{name: tensor [1, H, W]}`` for slice z.
    mask_key: the array whose nonzero voxels mark the brain; slices with fewer than
    ``min_voxels`` of them are skipped (``None``: keep every slice).
    flip_axes: in-plane axes (0 = X left-right, 1 = Y anterior-posterior) that are each flipped
    with probability 1/2 per sample, drawn from torch's global RNG (the training engine seeds it
    per epoch, so augmentation is reproducible and resumable). Same flip for every array.
    multiple: the common slice shape is rounded up to a multiple of this.
    context, context_keys: the arrays named in ``context_keys`` are given as ``[2c + 1, H, W]``,
    the slice and ``context`` neighbours on each side (:func:`neighbour_stack`; 0: ``[1, H, W]``).
    oversample, foreground: each sample is, with probability ``oversample`` (one draw of torch's
    global generator, made before the flips and only when ``oversample`` > 0), replaced by a slice
    drawn uniformly from the *foreground* slices, those where ``foreground(volume)`` (a boolean
    [Z] per volume) is true: nnU-Net's foreground oversampling (a third of each batch forced to
    hold foreground) at the level of whole slices. The fraction of foreground slices drawn is
    then ``oversample + (1 - oversample) * f0``, with ``f0`` their share of the kept slices.
    """

    def __init__(
        self,
        items: Iterable,
        load_fn: Callable[[object], dict],
        *,
        mask_key: str | None = "mask",
        min_voxels: int = 1,
        flip_axes: Sequence[int] = (),
        multiple: int = 1,
        context: int = 0,
        context_keys: Sequence[str] = ("input",),
        oversample: float = 0.0,
        foreground: Callable[[dict], np.ndarray] | None = None,
    ):
        self.items = list(items)
        self.volumes: list[dict[str, np.ndarray]] = [load_fn(it) for it in self.items]
        if not self.volumes:
            raise ValueError("SliceDataset needs at least one volume")
        for item, vol in zip(self.items, self.volumes):
            shapes = {k: v.shape for k, v in vol.items()}
            if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 3:
                raise ValueError(f"{item}: arrays must be 3-D and of one shape, got {shapes}")
        self.flip_axes = tuple(int(a) for a in flip_axes)
        self.multiple = int(multiple)
        h = max(next(iter(v.values())).shape[0] for v in self.volumes)
        w = max(next(iter(v.values())).shape[1] for v in self.volumes)
        self.shape = (round_up(h, multiple), round_up(w, multiple))
        self.index: list[tuple[int, int]] = []
        for vi, vol in enumerate(self.volumes):
            nz = next(iter(vol.values())).shape[2]
            if mask_key is None:
                keep = range(nz)
            else:
                counts = np.count_nonzero(vol[mask_key], axis=(0, 1))
                keep = np.flatnonzero(counts >= max(int(min_voxels), 1))
            self.index.extend((vi, int(z)) for z in keep)
        if not self.index:
            raise ValueError("no slice holds brain voxels")
        self.context, self.context_keys = int(context), tuple(context_keys)
        if self.context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.set_oversampling(oversample, foreground)

    def set_oversampling(self, oversample: float, foreground: Callable[[dict], np.ndarray] | None) -> None:
        """Draw a fraction ``oversample`` of the samples from the ``foreground`` slices (see the
        class docstring); a caller that picks the foreground from the loaded volumes (e.g. their
        rarest class) calls this after construction."""
        oversample = float(oversample)
        if not 0.0 <= oversample < 1.0:
            raise ValueError(f"oversample must lie in [0, 1), got {oversample}")
        index = np.zeros(0, np.int64)
        if oversample > 0:
            if foreground is None:
                raise ValueError("oversample > 0 needs a foreground function")
            fg = [np.asarray(foreground(v), bool).reshape(-1) for v in self.volumes]
            index = np.array([i for i, (vi, z) in enumerate(self.index) if fg[vi][z]], np.int64)
            if not index.size:
                raise ValueError("oversample > 0 but no kept slice is foreground")
        self.oversample, self.foreground_index = oversample, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.oversample > 0 and bool(torch.rand(()) < self.oversample):
            i = int(self.foreground_index[int(torch.randint(len(self.foreground_index), ()))])
        vi, z = self.index[i]
        sample = {k: torch.from_numpy(self._slice(k, a, z)) for k, a in self.volumes[vi].items()}
        return self.flip(sample)

    def _slice(self, key: str, a: np.ndarray, z: int) -> np.ndarray:
        """``[C, H, W]`` array of slice ``z`` of ``a`` (C = 2 context + 1 for ``context_keys``, else 1)."""
        c = self.context if key in self.context_keys else 0
        if c:
            zs = np.clip(np.arange(z - c, z + c + 1), 0, a.shape[2] - 1)
            s = np.moveaxis(a[:, :, zs], -1, 0)
        else:
            s = a[:, :, z][None]
        return pad2d(np.ascontiguousarray(s), self.shape).copy()

    def flip(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sample`` with each of ``flip_axes`` flipped with probability 1/2 (one draw of torch's
        global generator per axis), the same flips for every ``[1, H, W]`` array."""
        for ax in self.flip_axes:
            if bool(torch.rand(()) < 0.5):
                sample = {k: torch.flip(t, dims=(ax + 1,)) for k, t in sample.items()}
        return sample


@torch.no_grad()
def predict_volume(
    net: torch.nn.Module,
    volume: np.ndarray,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    multiple: int = 1,
) -> np.ndarray:
    """Run a 2-D network over every axial slice of a volume, ``batch_size`` slices at a time.

    volume: [X, Y, Z] or [C, X, Y, Z] float. The net maps [B, C, H, W] -> [B, C_out, H, W]
    (H, W padded up to ``multiple``, cropped back after). Returns float32 [C_out, X, Y, Z].
    The net is used as given (call ``net.eval()`` first).
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim == 3:
        vol = vol[None]
    c, x, y, nz = vol.shape
    shape = (round_up(x, multiple), round_up(y, multiple))
    slices = pad2d(np.moveaxis(vol, -1, 0), shape)  # [Z, C, H, W]
    outs = []
    for s in range(0, nz, batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(slices[s:s + batch_size])).to(device)
        outs.append(net(batch)[:, :, :x, :y].float().cpu().numpy())
    return np.moveaxis(np.concatenate(outs, axis=0), 0, -1)  # [C_out, X, Y, Z]


def image_like(data: np.ndarray, affine: np.ndarray, dtype=np.float32):
    """A NIfTI image of ``data`` cast to ``dtype`` with ``affine`` as qform and sform (mm):
    :func:`mrichain.io.nifti_image`."""
    from mrichain.io import nifti_image

    return nifti_image(data, affine, dtype=dtype)
