"""Real fastMRI files: the ISMRMRD header, slice-by-slice reconstruction, fastMRI's crop and scores.

A fastMRI multi-coil file holds ``kspace`` complex64 [slices, coils, H, W] (H the readout, 2x
oversampled: 640 rows for a 320-row image; W the phase encode), ``reconstruction_rss`` float32
[slices, h, w] (the recon size, 320 x 320 for the brain), an ``ismrmrd_header`` XML string and,
in the challenge's test files, a ``mask`` [W] of the acquired lines. Single-coil files hold
``kspace`` [slices, H, W] and are read as one coil.

What is done as fastMRI does it (``fastmri/data/mri_data.py``, ``transforms.py``, ``evaluate.py``):

- the header is read with ElementTree in the ISMRMRD namespace, with fastMRI's queries (the
  first match of ``encoding//encodedSpace//matrixSize//x`` etc.);
- ``padding_left = enc_y // 2 - center`` and ``padding_right = padding_left + maximum + 1``
  (``encodingLimits/kspace_encoding_step_1``): the mask is zeroed outside
  [padding_left, padding_right), for a retrospective mask and for a file's own mask alike
  (``VarNetDataTransform``);
- one retrospective mask per volume (fastMRI seeds the mask function per file), here from
  :func:`mrichain.simulate.sampling.cartesian_mask` with ``seed``;
- the image is centre-cropped to the recon matrix (x, y) = (rows, columns), except that an image
  narrower than the crop is cropped to (W, W) (``UnetDataTransform``'s "check for FLAIR 203");
- scores: NMSE, PSNR and SSIM of the volume with ``data_range = target.max()`` after
  ``evaluate.py``'s centre crop of both volumes to (w, w), w the target's width.

Voxel sizes come from the header: recon field of view / recon matrix in-plane, and the recon
field of view in z (one slice) as the slice thickness. The header carries no slice position or
orientation (fastMRI's files keep no acquisition headers), so the affine is diagonal: correct
millimetres, nominal axes (rows -> x, columns -> y, slices -> z), volume centred on the origin;
slice gaps, if any, are not known and not modelled.

Memory: k-space is read ``batch_slices`` slices at a time through h5py (a 20-coil brain slice is
33 MB, a volume about 0.5 GB); only the cropped float32 images [S, h, w] are kept for the volume.
Every size a file claims is checked before it is read (:func:`mrichain.io.check_kspace_dataset`:
coils, rows, columns, slices, stored bytes; the header's matrices; one batch and the output volume
against :func:`mrichain.io.max_image_bytes`), so a small file cannot make the reader allocate more.
"""
from __future__ import annotations

import inspect
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from mrichain.fft import ifft2c, rss
from mrichain.io import (MAX_MATRIX, InputImageError, check_claimed_bytes, check_image_dataset, check_kspace_dataset,
                         check_mask_dataset, check_voxel_mm)

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"

#: fastMRI's centre fraction for its two challenge accelerations (used when none is given)
FASTMRI_CENTER_FRACTIONS = {4: 0.08, 8: 0.04}
#: most bytes an ``ismrmrd_header`` dataset may claim (a scanner's header is 10-30 kB of XML)
MAX_HEADER_BYTES = 1024 ** 2


@dataclass(frozen=True)
class Limit:
    """An ISMRMRD encoding limit (line indices): minimum, maximum (inclusive), center."""

    minimum: int
    maximum: int
    center: int


@dataclass(frozen=True)
class FastMRIHeader:
    """The geometry of a fastMRI file, from its ``ismrmrd_header``.

    Matrices are (x, y, z) in samples (x the readout -> k-space/image rows H, y the phase encode ->
    columns W, z one per 2-D slice); fields of view are (x, y, z) in mm.
    ``kspace_encoding_step_1`` is the range of phase-encode lines the scanner acquired.
    """

    path: str
    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    kspace_encoding_step_1: Limit

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """Voxel size of the recon image (rows, columns, slice thickness) in mm: recon FOV / recon matrix."""
        return tuple(float(f) / int(n) for f, n in zip(self.recon_fov_mm, self.recon_matrix))

    @property
    def padding_left(self) -> int:
        """First acquired phase-encode column, as fastMRI: ``enc_y // 2 - center``."""
        return self.encoded_matrix[1] // 2 - self.kspace_encoding_step_1.center

    @property
    def padding_right(self) -> int:
        """One past the last acquired column, as fastMRI: ``padding_left + maximum + 1``."""
        return self.padding_left + self.kspace_encoding_step_1.maximum + 1

    def crop_size(self, image_width: int) -> tuple[int, int]:
        """fastMRI's crop (rows, columns) for an image [.., H, image_width]: the recon matrix (x, y),
        or (W, W) when the image is narrower than the recon width (fastMRI's "FLAIR 203" case)."""
        size = (self.recon_matrix[0], self.recon_matrix[1])
        if image_width < size[1]:
            size = (image_width, image_width)
        return size

    def affine(self, n_slices: int | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
        """4x4 diagonal affine (rows, columns, slice index) -> mm with :attr:`voxel_size_mm`; with
        ``shape`` (rows, columns) and ``n_slices`` the volume's centre is at the origin."""
        vox = np.asarray(self.voxel_size_mm, dtype=np.float64)
        aff = np.diag([*vox, 1.0])
        if shape is not None and n_slices is not None:
            aff[:3, 3] = -(np.asarray([*shape, n_slices], dtype=np.float64) - 1) / 2 * vox
        return aff


# ----------------------------------------------------------------------------------------------
# header
# ----------------------------------------------------------------------------------------------
def _query(root: ET.Element, path: list[str], source: Path) -> str:
    """fastMRI's ``et_query``: the first ``.//ns:a//ns:b...`` match's text; missing -> InputImageError."""
    xpath = "." + "".join(f"//ismrmrd:{el}" for el in path)
    node = root.find(xpath, {"ismrmrd": ISMRMRD_NAMESPACE})
    if node is None or node.text is None or not node.text.strip():
        raise InputImageError(f"{source}: ismrmrd_header has no {'/'.join(path)}")
    return node.text.strip()


def _number(root, path, source, kind):
    text = _query(root, path, source)
    try:
        return kind(float(text)) if kind is int and "." in text else kind(text)
    except ValueError:
        raise InputImageError(f"{source}: ismrmrd_header {'/'.join(path)} is not a number: {text!r}") from None


def parse_header(xml: str | bytes, source: str | os.PathLike = "<ismrmrd_header>") -> FastMRIHeader:
    """Parse an ISMRMRD header XML document (str or bytes) into a :class:`FastMRIHeader`.

    ``source`` names the file in error messages. Raises :class:`InputImageError` for XML that does
    not parse, a root that is not an ISMRMRD header, and missing or non-numeric fields.
    """
    source = Path(source)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InputImageError(f"{source}: ismrmrd_header is not readable XML ({exc})") from exc
    if root.tag != f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader":
        raise InputImageError(f"{source}: ismrmrd_header root is {root.tag!r}, expected ismrmrdHeader "
                              f"in the namespace {ISMRMRD_NAMESPACE}")

    def triple(space, what, kind):
        return tuple(_number(root, ["encoding", space, what, ax], source, kind) for ax in "xyz")

    lims = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
    header = FastMRIHeader(
        path=str(source),
        encoded_matrix=triple("encodedSpace", "matrixSize", int),
        recon_matrix=triple("reconSpace", "matrixSize", int),
        encoded_fov_mm=triple("encodedSpace", "fieldOfView_mm", float),
        recon_fov_mm=triple("reconSpace", "fieldOfView_mm", float),
        kspace_encoding_step_1=Limit(*(_number(root, lims + [k], source, int) for k in ("minimum", "maximum", "center"))),
    )
    if min(header.recon_matrix) < 1 or min(header.encoded_matrix) < 1:
        raise InputImageError(f"{source}: ismrmrd_header has an empty matrix "
                              f"(encoded {header.encoded_matrix}, recon {header.recon_matrix})")
    for space, matrix in (("encodedSpace", header.encoded_matrix), ("reconSpace", header.recon_matrix)):
        if max(matrix) > MAX_MATRIX:
            raise InputImageError(f"{source}: ismrmrd_header {space} matrixSize {matrix} is too large; "
                                  f"allowed 1-{MAX_MATRIX} along each axis")
    if not (min(header.recon_fov_mm) > 0 and np.all(np.isfinite(header.recon_fov_mm))):
        raise InputImageError(f"{source}: ismrmrd_header reconSpace fieldOfView_mm {header.recon_fov_mm} must be > 0")
    check_voxel_mm(header.voxel_size_mm, source, "ismrmrd_header voxel size",
                   why="reconSpace fieldOfView_mm / matrixSize")
    return header


def has_header(path: str | os.PathLike) -> bool:
    """Whether an HDF5 file carries an ``ismrmrd_header`` (a fastMRI file; the simulator's do not).
    An unreadable file answers False: the reader that follows names the problem."""
    try:
        with h5py.File(path, "r") as f:
            return "ismrmrd_header" in f
    except Exception:
        return False


def read_header(path: str | os.PathLike) -> FastMRIHeader:
    """The :class:`FastMRIHeader` of a fastMRI file's ``ismrmrd_header`` dataset.

    Raises :class:`mrichain.io.InputImageError` naming the file when it is not HDF5, has no
    ``ismrmrd_header``, or the header is unreadable or lacks a field fastMRI reads.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "ismrmrd_header" not in f:
                raise InputImageError(f"{path}: no 'ismrmrd_header' dataset (a fastMRI file carries one)")
            dset = f["ismrmrd_header"]
            if not isinstance(dset, h5py.Dataset) or dset.size * dset.dtype.itemsize > MAX_HEADER_BYTES:
                raise InputImageError(f"{path}: ismrmrd_header is not a string of at most {MAX_HEADER_BYTES} bytes")
            xml = dset[()]
    except InputImageError:
        raise
    except Exception as exc:
        raise InputImageError(f"{path}: cannot read HDF5 file ({type(exc).__name__}: {exc})") from exc
    if isinstance(xml, np.ndarray):  # stored as a 1-element array rather than a scalar
        xml = xml.reshape(-1)[0] if xml.size == 1 else xml.tobytes()
    return parse_header(xml, path)


# ----------------------------------------------------------------------------------------------
# k-space, slice by slice
# ----------------------------------------------------------------------------------------------
def kspace_shape(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """(slices, coils, H, W) of the file's ``kspace`` without reading it (single-coil: coils = 1)."""
    path = Path(path)
    with _open(path) as f:
        return _kspace_dataset(f, path)[1]


def iter_kspace_batches(path: str | os.PathLike, batch_slices: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_slice, kspace)`` with kspace complex64 [b, C, H, W], b <= ``batch_slices``.

    Reads ``batch_slices`` slices at a time (h5py hyperslabs), so memory holds one batch, never the
    volume. Single-coil files ([S, H, W]) get C = 1. Raises :class:`InputImageError` naming the
    file for a missing or non-complex ``kspace`` and for NaN/inf in a batch.
    """
    path = Path(path)
    if batch_slices < 1:
        raise ValueError(f"batch_slices must be >= 1, got {batch_slices}")
    with _open(path) as f:
        dset, (S, C, H, W) = _kspace_dataset(f, path)
        check_claimed_bytes(path, min(batch_slices, S) * C * H * W * max(dset.dtype.itemsize, 8),
                            f"a batch of {min(batch_slices, S)} kspace slices")
        for s0 in range(0, S, batch_slices):
            try:
                k = dset[s0: min(s0 + batch_slices, S)]
            except Exception as exc:
                raise InputImageError(f"{path}: cannot read kspace slices {s0}.. ({type(exc).__name__}: {exc})") from exc
            if k.ndim == 3:
                k = k[:, None]
            if not np.all(np.isfinite(k)):
                raise InputImageError(f"{path}: kspace slices {s0}..{s0 + k.shape[0] - 1} hold NaN/inf values")
            yield s0, k.astype(np.complex64, copy=False)


def iter_kspace_slices(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield each slice's k-space, complex64 [C, H, W], one slice in memory at a time."""
    for _, batch in iter_kspace_batches(path, 1):
        yield batch[0]


def _open(path: Path):
    try:
        return h5py.File(path, "r")
    except Exception as exc:
        raise InputImageError(f"{path}: cannot read HDF5 file ({type(exc).__name__}: {exc})") from exc


def _kspace_dataset(f: h5py.File, path: Path) -> tuple[h5py.Dataset, tuple[int, int, int, int]]:
    """The ``kspace`` dataset and its (slices, coils, H, W), its type, shape bounds and stored bytes
    checked (:func:`mrichain.io.check_kspace_dataset`; nothing read)."""
    if "kspace" not in f:
        raise InputImageError(f"{path}: no 'kspace' dataset (fastMRI layout expected)")
    return f["kspace"], check_kspace_dataset(f["kspace"], path)


def read_file_mask(path: str | os.PathLike) -> np.ndarray | None:
    """The file's own ``mask`` (float32 [W], 1 = acquired; fastMRI test files), or None."""
    path = Path(path)
    with _open(path) as f:
        if "mask" not in f:
            return None
        check_mask_dataset(f["mask"], path)
        mask = np.asarray(f["mask"][()], dtype=np.float32).reshape(-1)
        W = _kspace_dataset(f, path)[1][-1]
    if mask.shape[0] != W:
        raise InputImageError(f"{path}: mask length {mask.shape[0]} does not match kspace width {W}")
    return mask


# ----------------------------------------------------------------------------------------------
# masks, crop
# ----------------------------------------------------------------------------------------------
def zero_padding(mask: np.ndarray, header: FastMRIHeader) -> np.ndarray:
    """``mask`` [W] with the columns outside [padding_left, padding_right) set to 0, as fastMRI
    (bounds clipped to [0, W]: a header whose limits disagree with the k-space width zeroes no
    more than the array has)."""
    out = np.array(mask, dtype=np.float32).reshape(-1)
    W = out.shape[0]
    left = int(np.clip(header.padding_left, 0, W))
    right = int(np.clip(header.padding_right, 0, W))
    out[:left] = 0
    out[right:] = 0
    return out


def volume_mask(header: FastMRIHeader, width: int, *, file_mask: np.ndarray | None = None,
                acceleration: float | None = None, center_fraction: float | None = None,
                mask_kind: str = "equispaced", seed: int = 0) -> np.ndarray | None:
    """The sampling mask float32 [W] for every slice of one volume, or None (all lines used).

    - a file with its own ``mask`` (undersampled test files): that mask; ``acceleration`` must
      then be None or 1 (undersampling it again is refused);
    - ``acceleration`` > 1: :func:`mrichain.simulate.sampling.cartesian_mask` (MONAI's fastMRI
      masks) of ``width`` lines seeded by ``seed``; ``center_fraction`` defaults to fastMRI's
      0.08 at R4 and 0.04 at R8 and must be given for other accelerations;
    - otherwise all lines.

    In every case the columns outside the header's encoding limits are zeroed (fastMRI's padding);
    None is returned only when that leaves every line acquired.
    """
    from mrichain.simulate.sampling import cartesian_mask

    retrospective = acceleration is not None and float(acceleration) > 1
    if file_mask is not None:
        if retrospective:
            raise ValueError(f"{header.path}: the file is already undersampled (it carries a mask); "
                             f"a retrospective acceleration {acceleration} cannot be applied")
        mask = np.asarray(file_mask, np.float32).reshape(-1)
    elif retrospective:
        if center_fraction is None:
            if float(acceleration) not in FASTMRI_CENTER_FRACTIONS:
                raise ValueError(f"center_fraction is needed for acceleration {acceleration} "
                                 f"(fastMRI's defaults: {FASTMRI_CENTER_FRACTIONS})")
            center_fraction = FASTMRI_CENTER_FRACTIONS[float(acceleration)]
        mask = cartesian_mask(width, float(acceleration), float(center_fraction), mask_kind, int(seed))
    else:
        mask = np.ones(width, np.float32)
    if mask.shape[0] != width:
        raise ValueError(f"mask length {mask.shape[0]} != kspace width {width}")
    mask = zero_padding(mask, header)
    return None if np.all(mask > 0) else mask


def center_crop(data: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """fastMRI's ``center_crop`` over the last two axes: [..., H, W] -> [..., shape[0], shape[1]].

    Raises ValueError when ``shape`` is larger than the data (fastMRI's "Invalid shapes")."""
    H, W = data.shape[-2:]
    if not (0 < shape[0] <= H and 0 < shape[1] <= W):
        raise ValueError(f"cannot centre-crop [{H}, {W}] to {tuple(shape)}")
    r0 = (H - shape[0]) // 2
    c0 = (W - shape[1]) // 2
    return data[..., r0: r0 + shape[0], c0: c0 + shape[1]]


# ----------------------------------------------------------------------------------------------
# reconstruction
# ----------------------------------------------------------------------------------------------
def volume_scale(path: str | os.PathLike, mask: np.ndarray | None, batch_slices: int = 1) -> float:
    """99.5th percentile of the volume's zero-filled RSS image (uncropped), read batch by batch.

    The intensity normalisation that :mod:`mrichain.recon.cs` and :mod:`mrichain.recon.varnet`
    compute over the whole volume they are given; passed to them as ``scale=`` so that a volume
    reconstructed in slice batches is normalised as one (1.0 if the image is all zero).
    """
    images = []
    for _, k in iter_kspace_batches(path, batch_slices):
        if mask is not None:
            k = k * mask[None, None, None, :]
        images.append(rss(ifft2c(k), coil_axis=1).astype(np.float32))
    s = float(np.percentile(np.concatenate(images), 99.5))
    return s if s > 0 else 1.0


def _takes_scale(fn) -> bool:
    try:
        return "scale" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def reconstruct_fastmri(path: str | os.PathLike, method: str = "zerofilled", params: dict | None = None, *,
                        acceleration: float | None = None, center_fraction: float | None = None,
                        mask_kind: str = "equispaced", seed: int = 0, batch_slices: int = 4) -> nib.Nifti1Image:
    """Reconstruct a fastMRI file slice batch by slice batch into a NIfTI volume at the recon size.

    path: a fastMRI HDF5 file with an ``ismrmrd_header``; method: a key of
    :data:`mrichain.recon.METHODS`, called as ``METHODS[method](kspace [b, C, H, W], mask [W] or
    None, **params)`` (learned methods take ``model=<.pt>`` in ``params``).
    acceleration > 1 undersamples a fully sampled file retrospectively (one mask for the volume,
    see :func:`volume_mask`); a file's own mask is used as is. The padding columns outside the
    header's encoding limits are never counted as acquired.

    Methods that take ``scale=`` (CS, VarNet: they divide the data by a per-volume intensity) get
    the whole volume's :func:`volume_scale` (one extra streaming pass over the file), so batching
    does not change their normalisation. Every method here works slice by slice otherwise; CS's
    coil maps are calibrated per slice (:func:`mrichain.recon.cs.coil_maps`), so nothing needs the
    whole volume in memory.

    Returns float32 [h, w, S] (h, w = :meth:`FastMRIHeader.crop_size`) whose affine has the
    header's voxel sizes (:meth:`FastMRIHeader.affine`).
    """
    from mrichain.recon import METHODS, volume_image

    if method not in METHODS:
        raise KeyError(f"unknown reconstruction method {method!r}; known: {sorted(METHODS)}")
    path = Path(path)
    header = read_header(path)
    S, _, H, W = kspace_shape(path)
    crop = header.crop_size(W)
    if crop[0] > H:
        raise InputImageError(f"{path}: the recon matrix {header.recon_matrix[:2]} is taller than the "
                              f"k-space's {H} rows")
    mask = volume_mask(header, W, file_mask=read_file_mask(path), acceleration=acceleration,
                       center_fraction=center_fraction, mask_kind=mask_kind, seed=seed)
    fn = METHODS[method]
    kwargs = dict(params or {})
    if _takes_scale(fn) and "scale" not in kwargs:
        kwargs["scale"] = volume_scale(path, mask, batch_slices)
    check_claimed_bytes(path, S * crop[0] * crop[1] * 4, f"the reconstructed volume {(S, *crop)}")
    out = np.empty((S, *crop), dtype=np.float32)
    for s0, k in iter_kspace_batches(path, batch_slices):
        img = np.asarray(fn(k, mask, **kwargs), dtype=np.float32)
        out[s0: s0 + k.shape[0]] = center_crop(img, crop)
    return volume_image(out, header.affine(S, crop))


# ----------------------------------------------------------------------------------------------
# target and scores
# ----------------------------------------------------------------------------------------------
def read_target(path: str | os.PathLike) -> np.ndarray | None:
    """The file's ``reconstruction_rss``, float32 [S, h, w], centre-cropped as the reconstruction is
    (:meth:`FastMRIHeader.crop_size` of the k-space width); None if the file carries no target
    (fastMRI's test files)."""
    path = Path(path)
    header = read_header(path)
    W = kspace_shape(path)[-1]
    with _open(path) as f:
        if "reconstruction_rss" not in f:
            return None
        check_image_dataset(f["reconstruction_rss"], path)
        target = np.asarray(f["reconstruction_rss"][()], dtype=np.float32)
    crop = header.crop_size(W)
    try:
        return np.ascontiguousarray(center_crop(target, crop))
    except ValueError as exc:
        raise InputImageError(f"{path}: reconstruction_rss {target.shape[1:]} is smaller than the crop {crop}") from exc


def evaluate_volume(target: np.ndarray, recon: np.ndarray | nib.Nifti1Image) -> dict[str, float]:
    """fastMRI's scores of one volume: ``{"nmse", "psnr", "ssim"}``, as ``fastmri/evaluate.py``.

    target: [S, h, w] (:func:`read_target`); recon: [S, h, w], or the NIfTI [h, w, S] of
    :func:`reconstruct_fastmri`. Both are centre-cropped to (w, w) as ``evaluate.py`` does (a
    no-op for fastMRI's square targets; h < w is refused, as fastMRI's crop refuses it); then
    NMSE ||gt - pred||^2 / ||gt||^2 over the volume, PSNR (dB) with ``data_range = gt.max()``,
    and SSIM (skimage, 7x7 window) per slice with ``data_range = gt.max()`` of the volume,
    averaged over slices (:mod:`mrichain.scoring.metrics`, which implements these definitions).
    """
    if isinstance(recon, nib.Nifti1Image):
        recon = np.transpose(np.asarray(recon.dataobj), (2, 0, 1))
    gt = np.asarray(target)
    pred = np.asarray(recon)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"target and recon must be [S, h, w] of one shape, got {gt.shape} and {pred.shape}")
    w = gt.shape[-1]
    gt = center_crop(gt, (w, w))
    pred = center_crop(pred, (w, w))
    maxval = float(gt.max())
    from mrichain.scoring import metrics  # scikit-image: only where a volume is scored

    return {
        "nmse": metrics.nmse(gt, pred),
        "psnr": metrics.psnr(gt, pred, maxval=maxval),
        "ssim": metrics.ssim(gt, pred, maxval=maxval),
    }
