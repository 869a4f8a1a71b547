"""Learned motion correction: a residual 2-D U-Net that removes motion ghosts from the zero-filled
image, trained on motion synthesised from the train split's still acquisitions.

Input: the zero-filled root-sum-of-squares (RSS) of the moving head's k-space, one axial slice
[H, W]. Target (``target``): by default the noise-free still head, the image the stage is scored
against and the target of the chain's learned reconstruction (:mod:`mrichain.recon.varnet`): the
corrected image stands in for the reconstruction downstream, so the network removes motion,
aliasing and noise together, as the anchors' networks are trained towards the motion-free image.
Autofocus and the floor return zero-filled images, so part of the network's lead over them is
de-aliasing and denoising, not motion: ``target: still`` (the zero-filled RSS of the *still*
k-space, the same noise and undersampling) trains it on motion alone, for that comparison.
Network: MONAI ``BasicUNet`` (2-D, instance norm, as MONAI ships it)
predicting a residual added to the input, its last convolution initialised to zero, so the
untrained network is the identity: the floor ``none`` (the fastMRI/VarNet identity start,
:mod:`mrichain.recon.varnet`). The anchors of learned retrospective correction (Johnson and
Drangova, MRM 2019; Küstner et al., MRM 2019) train image-to-image networks on motion simulated
from motion-free scans in the same way.

Training data, synthesised per item (as DnCNN-B's noise, :mod:`mrichain.denoise.noise_levels`):
for an axial slice of a train subject, a trajectory is drawn at one of the config's motion levels
(:func:`mrichain.simulate.motion.draw_trajectory`, ``acquire.motion``'s shots, ordering and
levels, filled in by the workflow), and the slice's k-space is corrupted *exactly* as the
simulator corrupts it: the still file's k-space (its noise included) plus, on each moved shot's
acquired lines, the k-space difference between the moved and the still noise-free head seen
through the simulator's coils (:func:`mrichain.simulate.coils.sensitivity_maps`, fixed to the
scanner). The moved head is resampled from a slab of slices around the slice
(:func:`mrichain.simulate.motion.move_object`), so through-plane shifts are included. A share
``still_fraction`` of the items stays still (the network must leave a still scan alone). Each
item's draws come from a NumPy generator seeded from torch's global generator, which the engine
seeds per epoch (config seed, epoch). Validation: the val subjects' still acquisitions moved once
each, at a trajectory seeded by (seed, volume), scored by the stage's primary score (SSIM against
the noise-free still head inside the brain mask, :func:`mrichain.scoring.metrics.ssim`).

Detection (each shot's score, :func:`shot_energy`): the energy the correction puts on each shot's
acquired lines. The ideal correction changes the k-space only on the moved shots' lines (the still
file minus the moved one), so the k-space of (corrected - input), coil-combined with low-resolution
sensitivities from the central lines, concentrates on the moved shots; scored per acquired value,
relative to the median shot.

Intensities are divided by the 99th percentile of the input volume and multiplied back on output.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mrichain.fft import fft2c, ifft2c, rss
from mrichain.slices import SliceDataset, pad2d, percentile_scale, predict_volume
from mrichain.train.params import hyper_parameters, split_params

#: Training parameters and their defaults (loop settings go to ``TrainSettings``, the rest to the card).
DEFAULTS: dict = {
    "epochs": 8,
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "patience": 4,
    "max_batches_per_epoch": 30,
    "device": "auto",
    "amp": True,
    "grad_clip": 1.0,
    "channels": 16,  # BasicUNet's first-level width (features c, c, 2c, 4c, 8c, c)
    "still_fraction": 0.2,  # share of training items left still
    "slab": 3,  # slices on each side of a training slice resampled with it (through-plane motion)
    "val_slices": 16,  # central brain slices per validation volume scored (None: all)
    "target": "noisefree",  # what the output should be: the noise-free still head, or the still zero-filled image
    "motion": None,  # acquire.motion ({shots, ordering, levels}); the workflow fills it in
    "threads": None,
}
_HP_DEFAULTS = {"channels": DEFAULTS["channels"]}
MULTIPLE = 16  # BasicUNet halves the slice four times


def _features(c: int) -> tuple[int, ...]:
    return (c, c, 2 * c, 4 * c, 8 * c, c)


class ResidualUNet(nn.Module):
    """[B, 1, H, W] -> [B, 1, H, W]: ``x + unet(x)``; H and W multiples of 16. The U-Net's last
    convolution starts at zero: untrained, the network is the identity."""

    def __init__(self, channels: int = 16):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=_features(int(channels)))
        nn.init.zeros_(self.unet.final_conv.weight)
        nn.init.zeros_(self.unet.final_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.unet(x)


def build(hyper_parameters: dict) -> ResidualUNet:
    return ResidualUNet(channels=int(hyper_parameters["channels"]))


# ----------------------------------------------------------------------------------------------
# motion synthesised on a still acquisition
# ----------------------------------------------------------------------------------------------
def moving_levels(motion: dict) -> list[dict]:
    """The levels of ``acquire.motion`` under which the head moves (``movements`` > 0)."""
    if not motion or not motion.get("levels"):
        raise ValueError("motion correction training needs acquire.motion (shots, ordering, levels)")
    levels = [dict(v) for _, v in sorted(motion["levels"].items()) if int(v.get("movements", 0)) > 0]
    if not levels:
        raise ValueError("acquire.motion.levels: no level moves the head (every movements is 0)")
    return levels


def moved_slice(kspace: np.ndarray, mask: np.ndarray, noisefree: np.ndarray, maps: np.ndarray, z: int,
                trajectory, voxel_mm, slab: int) -> np.ndarray:
    """Slice ``z``'s k-space [C, H, W] complex64 as if acquired along ``trajectory``.

    kspace: the still file's [Z, C, H, W] (acquired lines only); mask: [W]; noisefree: [H, W, Z]
    the still head; maps: [C, H, W, Z] the simulator's coils. On each moved shot's acquired lines
    the still k-space gets the k-space difference of the moved and still noise-free slice (the
    moved head resampled on the slices ``z +- slab``, zero beyond the volume): the simulator's
    corruption (:func:`mrichain.simulate.motion.corrupt_kspace`) with this file's noise.
    """
    from mrichain.simulate.motion import move_object

    nz = noisefree.shape[2]
    lo, hi = max(0, z - slab), min(nz, z + slab + 1)
    block = noisefree[:, :, lo:hi]
    still = block[:, :, z - lo]
    out = np.array(kspace[z], dtype=np.complex64)
    acquired = np.asarray(mask).reshape(-1) > 0
    for s in np.flatnonzero(np.any(trajectory.poses != 0, axis=1)):
        lines = (trajectory.shot == s) & acquired
        if not lines.any():
            continue
        moved = move_object(block, trajectory.poses[s], voxel_mm)[:, :, z - lo]
        diff = fft2c(maps[..., z] * (moved - still)[None])
        out[..., lines] += diff[..., lines].astype(np.complex64)
    return out


class MotionVolumes:
    """The still acquisitions of a manifest's items, loaded once: per item ``kspace`` [Z, C, H, W],
    ``mask`` [W], ``noisefree`` [H, W, Z], ``brain`` [H, W, Z], the simulator's coil ``maps``
    [C, H, W, Z], the voxel size, the still zero-filled RSS ``still`` [H, W, Z] and its 99th
    percentile ``scale`` (the input's normalisation). items: ``{"kspace", "truth", "mask"}`` paths
    (k-space file, noise-free image, brain mask)."""

    def __init__(self, items: list[dict]):
        import nibabel as nib

        from mrichain.io import load_image, read_kspace
        from mrichain.simulate.coils import sensitivity_maps

        self.volumes = []
        for item in items:
            kf = read_kspace(item["kspace"])
            mask = np.ones(kf.kspace.shape[-1], np.float32) if kf.mask is None else np.asarray(kf.mask, np.float32)
            k = np.asarray(kf.kspace, np.complex64) * mask
            nf = np.asarray(load_image(item["truth"]).dataobj, np.float32)
            brain = np.asarray(load_image(item["mask"]).dataobj) > 0
            if nf.shape != (k.shape[2], k.shape[3], k.shape[0]) or brain.shape != nf.shape:
                raise ValueError(f"{item['kspace']}: k-space {k.shape} does not match the noise-free image "
                                 f"{nf.shape} / brain mask {brain.shape} (expected [X, Y, Z] = [H, W, Z])")
            still = np.moveaxis(rss(ifft2c(k), coil_axis=1), 0, -1).astype(np.float32)  # [H, W, Z]
            self.volumes.append({
                "kspace": k, "mask": mask, "noisefree": nf, "brain": brain,
                "maps": sensitivity_maps(nf.shape, k.shape[1], np.asarray(kf.affine, np.float64)),
                "voxel_mm": tuple(float(v) for v in nib.affines.voxel_sizes(np.asarray(kf.affine, np.float64))),
                "still": still, "scale": percentile_scale(still),
            })

    def moved_input(self, vi: int, z: int, trajectory, slab: int) -> np.ndarray:
        """The zero-filled RSS [H, W] of slice ``z`` of volume ``vi`` moved along ``trajectory``."""
        v = self.volumes[vi]
        k = moved_slice(v["kspace"], v["mask"], v["noisefree"], v["maps"], z, trajectory, v["voxel_mm"], slab)
        return rss(ifft2c(k), coil_axis=0).astype(np.float32)


def _draw(rng: np.random.Generator, motion: dict, levels: list[dict], width: int, mask: np.ndarray):
    from mrichain.simulate.motion import draw_trajectory

    level = levels[int(rng.integers(len(levels)))]
    return draw_trajectory(width, level, int(motion["shots"]), motion["ordering"], rng, acquired=mask > 0)


TARGETS = ("noisefree", "still")
"""``target`` params: the :class:`MotionVolumes` array the network's output should match."""


class MotionSlices(SliceDataset):
    """Training slices with motion drawn per item (module docstring). A sample is ``{"input",
    "target": [1, H, W] float32}`` divided by the still volume's 99th percentile, zero-padded to
    a multiple of 16; ``target``: one of :data:`TARGETS`."""

    def __init__(self, data: MotionVolumes, motion: dict, *, target: str, still_fraction: float, slab: int):
        self.data, self.motion, self.levels = data, motion, moving_levels(motion)
        self.target, self.still_fraction, self.slab = target, float(still_fraction), int(slab)
        super().__init__(range(len(data.volumes)), lambda i: {"mask": data.volumes[i]["brain"].astype(np.float32)},
                         mask_key="mask", multiple=MULTIPLE)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        vi, z = self.index[i]
        v = self.data.volumes[vi]
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        target = v[self.target][:, :, z]
        if rng.random() < self.still_fraction:
            x = v["still"][:, :, z]
        else:
            x = self.data.moved_input(vi, z, _draw(rng, self.motion, self.levels, len(v["mask"]), v["mask"]),
                                      self.slab)
        pair = np.stack([x, target])[:, None] / np.float32(v["scale"])  # [2, 1, H, W]
        pair = pad2d(pair, self.shape)
        return {"input": torch.from_numpy(np.ascontiguousarray(pair[0])),
                "target": torch.from_numpy(np.ascontiguousarray(pair[1]))}


def val_volumes(data: MotionVolumes, motion: dict, seed: int, slab: int, max_slices: int | None) -> list[dict]:
    """Each val volume moved once (a trajectory seeded by (seed, volume), at its levels in turn) on
    its central brain slices: ``{"input", "truth", "brain"}`` [S, H, W] (input normalised as the
    network sees it, ``scale`` to undo it)."""
    levels = moving_levels(motion)
    out = []
    for vi, v in enumerate(data.volumes):
        rng = np.random.default_rng([int(seed), vi, 11])
        traj = _draw(rng, motion, [levels[vi % len(levels)]], len(v["mask"]), v["mask"])
        zs = np.flatnonzero(v["brain"].any(axis=(0, 1)))
        if max_slices and len(zs) > max_slices:
            zs = zs[len(zs) // 2 - max_slices // 2:][:max_slices]
        x = np.stack([data.moved_input(vi, int(z), traj, slab) for z in zs])
        out.append({"input": x / np.float32(v["scale"]), "scale": v["scale"],
                    "truth": np.moveaxis(v["noisefree"][:, :, zs], -1, 0),
                    "brain": np.moveaxis(v["brain"][:, :, zs], -1, 0)})
    return out


def _apply(net, slices: np.ndarray, device, batch_size: int = 16) -> np.ndarray:
    """The network on normalised slices [S, H, W] -> [S, H, W] float32
    (:func:`mrichain.slices.predict_volume`, which takes axial slices last)."""
    out = predict_volume(net, np.moveaxis(np.asarray(slices, np.float32), 0, -1), batch_size=batch_size,
                         device=device, multiple=MULTIPLE)[0]
    return np.moveaxis(out, -1, 0)


def score_fn(model, val_data: list[dict], device) -> float:
    """Mean SSIM against the noise-free still head inside the brain mask over the val volumes
    (higher is better): the motion stage's primary score."""
    from mrichain.scoring.metrics import ssim

    return float(np.mean([ssim(v["truth"], np.clip(_apply(model, v["input"], device), 0, None) * v["scale"],
                               mask=v["brain"]) for v in val_data]))


def loss_fn(model, batch, device):
    """L1 between the network's output and the still image over the whole slice (ghosts land in
    the background too)."""
    return nn.functional.l1_loss(model(batch["input"].to(device)), batch["target"].to(device))


def train(manifest: dict, params: dict | None, out_path: str, seed: int, *, on_epoch_end=None,
          progress: bool = True):
    """Train the residual U-Net through :func:`mrichain.train.fit`; returns its ``FitResult``.

    manifest: ``{"train": [{"kspace", "truth", "mask"}, ...], "val": [...]}``: each subject's
    *still* k-space file at the motion stage's acquisition, its noise-free image and brain mask
    (:meth:`mrichain.plan.manifests.Plan.train_manifest`). params: overrides of :data:`DEFAULTS`;
    ``motion`` is ``acquire.motion`` (the workflow fills it in). Writes ``out_path`` and its card,
    curve and checkpoint as every learned method.
    """
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.manifest import check_manifest

    settings, rest = split_params(params, DEFAULTS, seed, "motion.params.unet")
    if rest["threads"]:
        torch.set_num_threads(int(rest["threads"]))
    motion = rest["motion"]
    moving_levels(motion)
    if rest["target"] not in TARGETS:
        raise ValueError(f"motion.params.unet.target: {rest['target']!r} is not one of {list(TARGETS)}")
    paths = check_manifest(manifest, ("kspace", "truth", "mask"))
    hp = hyper_parameters(rest, _HP_DEFAULTS)
    train_ds = MotionSlices(MotionVolumes(manifest["train"]), motion, target=rest["target"],
                            still_fraction=rest["still_fraction"], slab=rest["slab"])
    val = val_volumes(MotionVolumes(manifest["val"]), motion, seed, int(rest["slab"]), rest["val_slices"])
    card = {
        "architecture": "residual 2-D BasicUNet (MONAI), identity at initialisation, on the zero-filled RSS",
        "method": "unet",
        "stage": "motion",
        "hyper_parameters": hp,
        "loss": {"kind": "l1", "region": "whole slice", "space": "input / 99th percentile of the still volume"},
        "target": {"noisefree": "the noise-free still head",
                   "still": "zero-filled RSS of the still acquisition (same noise and undersampling)"}[rest["target"]],
        "motion": {"levels": motion["levels"], "shots": int(motion["shots"]), "ordering": motion["ordering"],
                   "still_fraction": float(rest["still_fraction"]), "slab": int(rest["slab"]),
                   "synthesis": "still k-space + moved-minus-still noise-free k-space on the moved shots' lines"},
        "normalisation": "input / 99th percentile of the input volume; undone on output",
        "training_data_hash": hash_files(paths),
        "n_volumes": {"train": len(manifest["train"]), "val": len(manifest["val"])},
        "n_slices": {"train": len(train_ds), "val": int(sum(len(v["input"]) for v in val))},
    }
    seed_everything(seed)
    return fit(build(hp), train_ds, val, loss_fn=loss_fn, score_fn=score_fn, settings=settings,
               out_path=out_path, card=card, score_name="ssim_truth", on_epoch_end=on_epoch_end, progress=progress)


def load_model(model: str, device="cpu") -> tuple[ResidualUNet, dict]:
    """The trained network (eval mode, on ``device``) and its card; the card's hyper-parameters
    checked against the declared params before the network is built."""
    from pathlib import Path

    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    card = Path(model).with_suffix(".json")
    return load_trained(model, lambda hp: build(check_hyper_parameters(card, hp, "motion", "unet", _HP_DEFAULTS,
                                                                       required=("channels",))), device)


# ----------------------------------------------------------------------------------------------
# inference
# ----------------------------------------------------------------------------------------------
def shot_energy(kspace: np.ndarray, mask: np.ndarray | None, shot: np.ndarray, before: np.ndarray,
                after: np.ndarray, calib_lines: int = 16) -> np.ndarray:
    """float64 [n_shots]: the energy per acquired value that the correction ``before`` -> ``after``
    (magnitudes [S, H, W]) puts on each shot's acquired lines, relative to the median shot (NaN
    for a shot with no acquired line).

    The change is given the input's phase: coil-combined with low-resolution sensitivities (the
    coil images of the central ``calib_lines`` lines over their RSS), so ``after`` carries the
    phase of the combined input; its 2-D FFT is compared line by line.
    """
    k = np.asarray(kspace)
    acquired = np.ones(k.shape[-1], bool) if mask is None else np.asarray(mask).reshape(-1) > 0
    k = k * acquired
    w = k.shape[-1]
    low = np.zeros(w, bool)
    low[max(0, w // 2 - calib_lines // 2):w // 2 + calib_lines // 2] = True
    low_images = ifft2c(k * low)  # [S, C, H, W]
    maps = low_images / np.maximum(rss(low_images, coil_axis=1)[:, None], 1e-12)
    combined = np.sum(np.conj(maps) * ifft2c(k), axis=1)  # [S, H, W]
    phase = np.exp(1j * np.angle(combined))
    change = fft2c((np.asarray(after) - np.asarray(before)) * phase)  # [S, H, W]
    shot = np.asarray(shot).reshape(-1)
    out = np.full(int(shot.max()) + 1, np.nan)
    for s in range(len(out)):
        lines = (shot == s) & acquired
        if lines.any():
            out[s] = float(np.sum(np.abs(change[..., lines]) ** 2) / lines.sum())
    med = float(np.nanmedian(out))
    return out / med if med > 0 else np.where(np.isnan(out), np.nan, 1.0)


def correct(kspace: np.ndarray, mask: np.ndarray | None, shot: np.ndarray, *, model: str, threads: int = 1,
            batch_size: int = 16, device: str = "auto", **params) -> tuple[np.ndarray, np.ndarray]:
    """The motion stage's ``unet`` (:mod:`mrichain.motion`): the zero-filled RSS of ``kspace``
    [S, C, H, W] (``mask`` [W] or None) corrected slice by slice by the trained network
    (``model``: the state dict of :func:`train`, card beside it). Returns the corrected image
    float32 [S, H, W] (>= 0, the zero-filled scale) and each shot's score [n_shots]
    (:func:`shot_energy`). Other ``params`` are accepted and ignored."""
    from mrichain.recon.zerofilled import zerofilled
    from mrichain.train import select_device

    torch.set_num_threads(int(threads))
    dev = select_device(device)
    net, _ = load_model(model, dev)
    before = zerofilled(kspace, mask)  # [S, H, W]
    scale = percentile_scale(before)
    after = np.clip(_apply(net, before / np.float32(scale), dev, int(batch_size)), 0, None) * np.float32(scale)
    return after.astype(np.float32), shot_energy(kspace, mask, shot, before, after)
