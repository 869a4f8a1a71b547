"""Learned registration: a diffeomorphic VoxelMorph network to a fixed template, trained semi-supervised.

The model is assembled from MONAI's named parts (as voxelmorph's ``networks.py``/``layers.py``):

- backbone: :class:`monai.networks.nets.VoxelMorphUNet` on the concatenated (moving, fixed) pair,
  run at **half resolution** (both images average-pooled by 2) for CPU speed; it outputs a
  stationary velocity field ``v`` [B, 3, X/2, Y/2, Z/2] in half-resolution voxel units
  (Kaiming init and instance norm keep its activations alive: :class:`HalfResVoxelMorph`);
- integration: :class:`monai.networks.blocks.DVF2DDF` (scaling and squaring, ``int_steps``
  squarings) turns ``v`` into a diffeomorphic displacement ``u`` at half resolution, which is
  upsampled trilinearly (x2 in size and magnitude) to a full-resolution DDF [B, 3, X, Y, Z]
  in voxel units of the fixed grid (``phi(x) = x + u(x)``: where fixed voxel ``x`` samples moving);
- warping: :class:`monai.networks.blocks.Warp` (bilinear for images, nearest for labels).

Loss (VoxelMorph's semi-supervised recipe): local normalised cross-correlation
(:class:`monai.losses.LocalNormalizedCrossCorrelationLoss`, ``ncc_kernel`` voxels) between warped
moving and fixed, plus ``lambda`` x bending energy (:class:`monai.losses.BendingEnergyLoss`) of
the half-resolution displacement, plus ``lambda_dice`` (0.01) x soft Dice of the warped train
labels against the template labels (training only; inference needs no labels). Intensities are
normalised per image (divided by the 99th percentile of the non-zero voxels, clipped to [0, 1.5]).

Inference resamples the moving image (and labels, nearest neighbour) onto the fixed grid first
when the grids differ (``nibabel.processing.resample_from_to``, world coordinates, no affine
alignment: the learned model handles the residual non-linear part only, like the simulation).
"""
from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mrichain.io import nifti_image

ARCHITECTURE = "voxelmorph-halfres-svf"

DEFAULT_HYPER = {
    "channels": [16, 32, 32, 32, 32, 32],
    "final_conv_channels": [16, 16],
    "int_steps": 7,
    "lambda": 1.0,
    "ncc_kernel": 9,
    "lambda_dice": 0.01,
    "norm": "instance",
}
#: The loop: Adam as VoxelMorph, but at 1e-3 rather than its 1e-4 (its 150,000 steps are ~1,000x
#: this cohort's budget; with live activations a 2-voxel shift is learned in ~10 steps at 1e-3),
#: one epoch of linear warm-up (Adam's first steps are large on an untrained instance-normed
#: network) and a cosine decay to 0 over the planned steps, so the last epochs refine rather than
#: jump and the val score of the selected epoch is not one lucky step's. Batch 1 as VoxelMorph.
DEFAULT_LOOP = {"epochs": 8, "lr": 1e-3, "batch_size": 1, "patience": 4, "max_batches_per_epoch": 16,
                "grad_clip": 1.0, "weight_decay": 0.0, "schedule": "cosine", "warmup_epochs": 1}


# --------------------------------------------------------------------------------------- model
#: LeakyReLU slope of VoxelMorph's convolutions (its TensorFlow default, kept by MONAI's backbone).
NEGATIVE_SLOPE = 0.2
#: Standard deviation of the flow head's initial weights (VoxelMorph's ``Normal(0, 1e-5)``): the
#: untrained network is the identity warp to within ~1e-4 voxel.
FLOW_INIT_SD = 1e-5


class HalfResVoxelMorph(torch.nn.Module):
    """VoxelMorph with the backbone and the velocity integration at half resolution.

    forward(moving, fixed): moving, fixed [B, 1, X, Y, Z] (any size; padded internally) ->
    (warped [B, 1, X, Y, Z], ddf [B, 3, X, Y, Z] in voxels, half-res ddf [B, 3, ~X/2, ~Y/2, ~Z/2]).

    Activations are kept alive from the input to the flow head. MONAI's backbone with no
    normalisation and PyTorch's default init (weight variance 1/(3 fan_in), about a sixth of the
    2/(1.04 fan_in) that keeps the SD through a LeakyReLU(0.2)) shrinks the activation SD level by
    level, about 17x from the input to the flow head on a 2 mm brain pair: the head's weight gradient (and with
    Adam, whose steps are ~lr per weight, the flow change per step, which scales with the head's
    input) is then so small that a few hundred steps move the warp by a fraction of a voxel.
    So: every convolution but the head is Kaiming-initialised for LeakyReLU(0.2) (fan-in, zero
    bias) and, with ``norm="instance"`` (default), followed by an affine instance norm (the
    normalisation of nnU-Net and of later registration networks, independent of the batch size,
    which is 1 here). The flow head (the last, 3-channel conv) keeps VoxelMorph's Normal(0, 1e-5)
    init and has neither norm nor activation, so the untrained network is the identity warp and
    the first steps grow the head's weights against a live input.
    """

    def __init__(self, channels=(16, 32, 32, 32, 32, 32), final_conv_channels=(16, 16), int_steps: int = 7,
                 norm: str | None = "instance"):
        super().__init__()
        from monai.networks.blocks import DVF2DDF, Warp
        from monai.networks.nets import VoxelMorphUNet

        if norm not in (None, "instance"):
            raise ValueError(f"norm: {norm!r} is not one of ['instance', None]")
        self.backbone = VoxelMorphUNet(
            spatial_dims=3, in_channels=2, unet_out_channels=int(channels[-1]), channels=tuple(int(c) for c in channels),
            final_conv_channels=tuple(int(c) for c in final_conv_channels),
            norm=("instance", {"affine": True}) if norm == "instance" else None,
        )
        # the flow head: no normalisation (it would rescale the flow to unit SD), no activation
        head_block = self.backbone.net[1].final_conv_out
        if hasattr(head_block, "adn"):
            del head_block.adn
        convs = [m for m in self.backbone.modules() if isinstance(m, torch.nn.Conv3d)]
        with torch.no_grad():
            for conv in convs[:-1]:
                torch.nn.init.kaiming_normal_(conv.weight, a=NEGATIVE_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
                torch.nn.init.zeros_(conv.bias)
            convs[-1].weight.normal_(0.0, FLOW_INIT_SD)
            convs[-1].bias.zero_()
        self.levels = len(channels) // 2
        self.int_steps = int(int_steps)
        self.dvf2ddf = DVF2DDF(num_steps=self.int_steps, mode="bilinear", padding_mode="border") if self.int_steps > 0 else None
        self.warp = Warp(mode="bilinear", padding_mode="border")
        self.warp_nearest = Warp(mode="nearest", padding_mode="zeros")

    @property
    def flow_head(self) -> torch.nn.Conv3d:
        """The last convolution: live features [B, final_conv_channels[-1], ...] -> velocity [B, 3, ...]."""
        return self.backbone.net[1].final_conv_out.conv

    def velocity(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Half-resolution velocity [B, 3, ...] and the full-resolution padding used."""
        mult = 2 ** (self.levels + 1)
        shape = moving.shape[2:]
        pad = [(-s) % mult for s in shape]
        padding = []
        for p in reversed(pad):  # F.pad wants last dim first
            padding += [p // 2, p - p // 2]
        x = torch.cat([moving, fixed], dim=1)
        x = F.pad(x, padding)
        x = F.avg_pool3d(x, 2)
        return self.backbone(x), (padding, tuple(shape))

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor):
        v, (padding, shape) = self.velocity(moving, fixed)
        ddf_half = self.dvf2ddf(v) if self.dvf2ddf is not None else v
        ddf = 2.0 * F.interpolate(ddf_half, scale_factor=2.0, mode="trilinear", align_corners=False)
        # crop back to the input grid
        px = padding[4], padding[2], padding[0]
        ddf = ddf[:, :, px[0]:px[0] + shape[0], px[1]:px[1] + shape[1], px[2]:px[2] + shape[2]]
        return self.warp(moving, ddf), ddf, ddf_half


def activation_sds(model: HalfResVoxelMorph, moving: torch.Tensor, fixed: torch.Tensor) -> list[tuple[str, float]]:
    """SD of the input of every convolution of ``model``'s backbone, in forward order, on one pair
    (moving, fixed [B, 1, X, Y, Z]); the first entry is the (pooled) image pair, the last the flow
    head's input. A collapse shows as a last/first ratio far below 1."""
    sds: list[tuple[str, float]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: sds.append((name, float(inp[0].std()))))
             for name, m in model.backbone.named_modules() if isinstance(m, torch.nn.Conv3d)]
    try:
        with torch.no_grad():
            model.velocity(moving, fixed)
    finally:
        for h in hooks:
            h.remove()
    return sds


def build_model(hyper: dict) -> HalfResVoxelMorph:
    return HalfResVoxelMorph(channels=hyper["channels"], final_conv_channels=hyper["final_conv_channels"],
                             int_steps=hyper["int_steps"], norm=hyper["norm"])


# ---------------------------------------------------------------------------------- data utils
def normalise_intensity(data: np.ndarray) -> np.ndarray:
    """Divide by the 99th percentile of the non-zero voxels, clip to [0, 1.5] (float32)."""
    data = np.asarray(data, dtype=np.float32)
    nz = data[data > 0]
    scale = float(np.percentile(nz, 99)) if nz.size else 1.0
    return np.clip(data / max(scale, 1e-6), 0.0, 1.5).astype(np.float32)


def _to_fixed_grid(img: nib.Nifti1Image, fixed: nib.Nifti1Image, order: int) -> np.ndarray:
    """``img``'s data on ``fixed``'s grid (world coordinates; no-op when the grids already agree)."""
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.shape == fixed.shape[:3] and np.allclose(img.affine, fixed.affine, atol=1e-4):
        return data
    from nibabel.processing import resample_from_to

    src = nib.Nifti1Image(np.asarray(data, dtype=np.float32), img.affine)
    out = resample_from_to(src, (fixed.shape[:3], fixed.affine), order=order, mode="constant", cval=0.0)
    return np.asarray(out.dataobj)


def _load(path) -> nib.Nifti1Image:
    from mrichain.io import load_image

    return load_image(path)


class PairDataset(Dataset):
    """Moving images (and labels) to one fixed template; items are dicts of CPU tensors [1, X, Y, Z]."""

    def __init__(self, items: list[dict], fixed: nib.Nifti1Image, fixed_labels: np.ndarray | None):
        self.fixed = torch.from_numpy(normalise_intensity(fixed.get_fdata(dtype=np.float32)))[None]
        self.fixed_labels = None if fixed_labels is None else torch.from_numpy(fixed_labels.astype(np.int64))[None]
        self.moving, self.labels = [], []
        for it in items:
            mov = _load(it["moving"])
            self.moving.append(torch.from_numpy(normalise_intensity(_to_fixed_grid(mov, fixed, 1)))[None])
            if it.get("labels"):
                lab = _to_fixed_grid(_load(it["labels"]), fixed, 0)
                self.labels.append(torch.from_numpy(np.rint(lab).astype(np.int64))[None])
            else:
                self.labels.append(None)

    def __len__(self):
        return len(self.moving)

    def __getitem__(self, i):
        item = {"moving": self.moving[i], "fixed": self.fixed}
        if self.fixed_labels is not None and self.labels[i] is not None:
            item["labels"], item["fixed_labels"] = self.labels[i], self.fixed_labels
        return item


# --------------------------------------------------------------------------------------- losses
class RegistrationLoss:
    """Local NCC(warped, fixed) + lambda * bending energy of the half-resolution displacement
    + lambda_dice * soft Dice loss of the warped training labels against the fixed labels.

    The Dice term is VoxelMorph's semi-supervised variant (Balakrishnan et al. 2019, auxiliary
    segmentations at training time only): the train split's labels (labels 0-3) are one-hot
    encoded [B, 4, X, Y, Z], warped bilinearly with the same ``ddf`` (so the term has a gradient
    in the flow) and compared with the one-hot fixed labels by MONAI's ``DiceLoss`` without the
    background channel (0 = perfect overlap, 1 = none). Its default weight 0.01 is VoxelMorph's
    segmentation weight; it is added only for items that carry labels, and inference never needs
    them. ``lambda_dice = 0`` gives the unsupervised loss.
    """

    def __init__(self, lam: float, ncc_kernel: int, lambda_dice: float = DEFAULT_HYPER["lambda_dice"]):
        from monai.losses import BendingEnergyLoss, DiceLoss, LocalNormalizedCrossCorrelationLoss

        self.lam, self.lambda_dice = float(lam), float(lambda_dice)
        self.dice = DiceLoss(include_background=False, reduction="mean")
        self.ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=int(ncc_kernel), kernel_type="rectangular")
        self.bending = BendingEnergyLoss(normalize=False)

    def __call__(self, model, batch, device):
        moving, fixed = batch["moving"].to(device), batch["fixed"].to(device)
        warped, ddf, ddf_half = model(moving, fixed)
        loss = self.ncc(warped, fixed) + self.lam * self.bending(ddf_half)
        if self.lambda_dice > 0 and "labels" in batch:
            lab = F.one_hot(batch["labels"][:, 0].to(device), 4).permute(0, 4, 1, 2, 3).float()
            ref = F.one_hot(batch["fixed_labels"][:, 0].to(device), 4).permute(0, 4, 1, 2, 3).float()
            loss = loss + self.lambda_dice * self.dice(model.warp(lab, ddf), ref)
        return loss


def warp_labels(model: HalfResVoxelMorph, labels: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour warp of an integer label map [B, 1, X, Y, Z] with ``ddf``."""
    return model.warp_nearest(labels.float(), ddf).round().long()


def val_dice(model, data: PairDataset, device) -> float:
    """Mean Dice (labels 1, 2, 3; MONAI) of warped val labels vs the fixed labels."""
    from mrichain.scoring.metrics import dice

    fixed = data.fixed[None].to(device)
    ref = data.fixed_labels[0].numpy()
    scores = []
    for mov, lab in zip(data.moving, data.labels):
        if lab is None:
            continue
        _, ddf, _ = model(mov[None].to(device), fixed)
        warped = warp_labels(model, lab[None].to(device), ddf)[0, 0].cpu().numpy()
        scores.extend(v for v in dice(warped, ref).values() if np.isfinite(v))
    return float(np.mean(scores)) if scores else float("nan")


# ------------------------------------------------------------------------------------- training
def train(manifest: dict, params: dict, out_path: str, seed: int = 0, *, on_epoch_end=None, progress: bool = True):
    """Train the network on ``manifest`` and write ``out_path`` (.pt), its card (.json) and curve.

    manifest: ``{"fixed": T1w.nii.gz, "fixed_labels": dseg.nii.gz, "train": [{"moving", "labels"}],
    "val": [{"moving", "labels"}]}``. The train items' labels feed the semi-supervised Dice term
    (``lambda_dice`` > 0; an item without labels trains on NCC + bending only); the card's
    ``n_train_labelled`` says how many did.
    params: loop keys (:class:`mrichain.train.engine.TrainSettings`: ``epochs, lr, schedule,
    warmup_epochs, ...``) and model keys (``channels, final_conv_channels, int_steps, lambda,
    ncc_kernel, lambda_dice, norm``); defaults in ``DEFAULT_LOOP``/``DEFAULT_HYPER``.
    Validation score: mean Dice of the nearest-neighbour warped val labels (labels 1-3).
    """
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.params import hyper_parameters, split_params

    settings, rest = split_params(params, {**DEFAULT_LOOP, **DEFAULT_HYPER}, seed, "voxelmorph")
    hyper = hyper_parameters(rest, DEFAULT_HYPER)
    fixed = _load(manifest["fixed"])
    fixed_labels = np.rint(_load(manifest["fixed_labels"]).get_fdata()).astype(np.int64)
    train_ds = PairDataset(manifest["train"], fixed, fixed_labels if hyper["lambda_dice"] > 0 else None)
    val_ds = PairDataset(manifest["val"], fixed, fixed_labels)
    paths = [manifest["fixed"], manifest["fixed_labels"]] + [
        p for it in list(manifest["train"]) + list(manifest["val"]) for p in (it["moving"], it.get("labels")) if p]
    card = {
        "architecture": ARCHITECTURE,
        "hyper_parameters": hyper,
        "training_data_hash": hash_files(paths),
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "n_train_labelled": sum(lab is not None for lab in train_ds.labels) if train_ds.fixed_labels is not None else 0,
        "fixed_shape": list(fixed.shape[:3]),
        "description": f"VoxelMorphUNet (MONAI; Kaiming init, {'instance norm' if hyper['norm'] else 'no norm'}, "
                       "flow head Normal(0, 1e-5)) at half "
                       "resolution -> stationary velocity -> DVF2DDF (scaling and squaring) -> x2 trilinear "
                       "-> Warp; loss LNCC + lambda*bending energy + lambda_dice*Dice of warped train labels",
    }
    seed_everything(int(seed))
    model = build_model(hyper)
    loss = RegistrationLoss(hyper["lambda"], hyper["ncc_kernel"], hyper["lambda_dice"])
    return fit(model, train_ds, val_ds, loss_fn=loss, score_fn=val_dice, settings=settings, out_path=out_path,
               card=card, score_name="dice", on_epoch_end=on_epoch_end, progress=progress)


# ------------------------------------------------------------------------------------ inference
def load_model(model: str | Path) -> tuple[HalfResVoxelMorph, dict]:
    """Rebuild the network from the card JSON beside ``model`` and load its state dict.
    The card's hyper-parameters are checked against the method's declared params
    (:func:`mrichain.train.params.check_hyper_parameters`) before the network is built."""
    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    card = Path(model).with_suffix(".json")
    return load_trained(model, lambda hp: build_model(check_hyper_parameters(card, hp, "register", "voxelmorph",
                                                                            DEFAULT_HYPER)), "cpu", DEFAULT_HYPER)


def jacobian_determinant(ddf: np.ndarray) -> np.ndarray:
    """det(I + grad u) of a displacement ``ddf`` [3, X, Y, Z] in voxels (central differences)."""
    grads = [np.gradient(ddf[i], axis=(0, 1, 2)) for i in range(3)]
    j = np.empty((3, 3) + ddf.shape[1:], dtype=np.float64)
    for i in range(3):
        for k in range(3):
            j[i, k] = grads[i][k] + (1.0 if i == k else 0.0)
    det = (j[0, 0] * (j[1, 1] * j[2, 2] - j[1, 2] * j[2, 1])
           - j[0, 1] * (j[1, 0] * j[2, 2] - j[1, 2] * j[2, 0])
           + j[0, 2] * (j[1, 0] * j[2, 1] - j[1, 1] * j[2, 0]))
    return det.astype(np.float32)


def voxelmorph(moving: nib.Nifti1Image, fixed: nib.Nifti1Image, *, model: str, labels: nib.Nifti1Image | None = None,
               seed: int = 0, threads: int = 1, **kw):
    """Register ``moving`` to ``fixed`` with the trained network ``model`` (.pt, card .json beside it).

    moving, fixed, labels: nibabel [X, Y, Z]; moving and labels are first resampled onto the fixed
    grid if their grids differ (linear / nearest, world coordinates). ``threads``: torch CPU
    threads during inference. Returns :class:`mrichain.register.RegistrationResult` on the fixed
    grid: warped image (original moving intensities, bilinear), warped labels (nearest, uint8),
    the Jacobian determinant of ``phi = id + ddf`` in fixed space, ``seconds`` = network +
    warping wall time (excluding loading the model and the resampling to the fixed grid).
    """
    from mrichain.register import RegistrationResult
    from mrichain.train import seed_everything

    if kw:
        raise TypeError(f"voxelmorph: unexpected parameters {sorted(kw)}")
    seed_everything(int(seed))
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        net, _ = load_model(model)
        mov_raw = _to_fixed_grid(moving, fixed, 1).astype(np.float32)
        lab = None if labels is None else np.rint(_to_fixed_grid(labels, fixed, 0)).astype(np.int64)
        fix = normalise_intensity(fixed.get_fdata(dtype=np.float32))
        t0 = time.perf_counter()
        with torch.no_grad():
            m = torch.from_numpy(normalise_intensity(mov_raw))[None, None]
            f = torch.from_numpy(fix)[None, None]
            _, ddf, _ = net(m, f)
            warped = net.warp(torch.from_numpy(mov_raw)[None, None], ddf)[0, 0].numpy()
            warped_lab = None if lab is None else warp_labels(net, torch.from_numpy(lab)[None, None], ddf)[0, 0].numpy()
        seconds = time.perf_counter() - t0
        jac = jacobian_determinant(ddf[0].numpy())
    finally:
        torch.set_num_threads(saved_threads)
    aff = fixed.affine
    return RegistrationResult(
        warped=nifti_image(warped, aff, dtype=np.float32),
        warped_labels=None if warped_lab is None else nifti_image(np.clip(warped_lab, 0, 255), aff, dtype=np.uint8),
        jacobian=nifti_image(jac, aff, dtype=np.float32),
        seconds=seconds,
    )
