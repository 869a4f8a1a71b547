"""Learned reconstruction: end-to-end VarNet (Sriram et al. 2020) from MONAI, trained per 2-D slice.

The network unrolls ``cascades`` blocks, each a soft k-space data-consistency step plus a complex
U-Net refinement in the coil-combined image domain; coil sensitivities are learned from the ACS
lines by a second small complex U-Net (MONAI ``CoilSensitivityModel``). The output is the RSS of
the predicted coil images.

Identity start. MONAI's ``VariationalNetworkModel`` and ``VarNetBlock`` are subclassed (not
copied): each cascade's refinement term is multiplied by a learned scalar ``gate`` initialised at
0 (as ReZero, Bachlechner et al. 2021), everything else -- the soft data consistency with its
weight at 1, the sensitivity-map network -- is MONAI's. The untrained network therefore returns
the RSS of the inverse FFT of the sampled k-space, the zero-filled floor itself (the maps enter
only through the gated term, so they do not change it; the only difference is float32 rounding of
torch's FFT against NumPy's, ~1e-6 relative). A randomly initialised refinement subtracted in
every cascade started far below the floor (fastMRI SSIM against the truth ~0.07 where zero
filling gives ~0.85), and a few hundred CPU steps went into climbing back. With the gates at 0 the
first step moves only the gates (the U-Nets' gradient is the gate times theirs); Adam's
per-parameter step size makes the U-Nets' updates full-sized from the second step on.

Training recipe (fastMRI's brain E2E-VarNet, scaled to a CPU budget). fastMRI: 12 cascades, 18
channels, Adam lr 3e-4 (no weight decay), x0.1 at epoch 40 of 50, SSIM loss, batch 1 per GPU on
32 GPUs, some 10^5 optimiser steps. Here: Adam (AdamW with weight decay 0 is Adam), the step decay
x0.1 at 80 % of the planned epochs (``step_epochs`` null = round(0.8 x epochs)), SSIM loss, a few
cascades and channels and ``max_batches_per_epoch`` batches per epoch; no early stop inside the
budget (patience = the epochs: the decayed last 20 % is where fastMRI's curve gains its last
points). The learning rate is fastMRI's x10, 3e-3: a CPU budget is ~10^2 steps, three orders of
magnitude fewer, and at 3e-4 such a run barely leaves its start (on the default cohort, 40 steps
move val SSIM by +0.001 at 3e-4 and +0.024 at 3e-3); the identity start makes the larger rate
safe (a step that overshoots moves the gates, not a network far from the floor). The target is the
simulator's noise-free image (``target: noisefree``, default), not the noisy fully sampled RSS:
the chain's primary score is SSIM against that truth, and a network fitted to the RSS learns to
reproduce its noise. The epoch is selected on the validation volumes by the primary score itself
(fastMRI SSIM against the noise-free image inside the brain mask, data range the truth's volume
maximum); ``target: rss`` trains and selects against ``reconstruction_rss`` (fastMRI's own
setting, unmasked).

Accelerations. fastMRI trains one network per acceleration on undersampled data; here one network
serves every acquisition of the chain, the fully sampled one included, so it trains on all of them
(``include_fully_sampled``, the workflow's manifest lists every acquisition): against the noise-free
target a fully sampled slice is a denoising example, not the identity. Trained on the undersampled
files alone, its cascades lowered the fully sampled images' SSIM below the zero-filled (plain
inverse FFT) image's (default cohort: 0.936 against 0.941); trained on both, it is above it on
each of the 10 subjects (+0.0002 to +0.0011) and keeps most of its gain at R4 (test 0.848 against
0.854 trained on R4 alone, zero-filled 0.827). Selection stays on the undersampled val volumes.

Tensors (MONAI's convention): k-space [B, C, H, W, 2] (real/imaginary last), mask [B, 1, 1, W, 1]
bool. ``ComplexUnet`` pads H and W to a multiple of ``pad_factor`` (16 for its 4 poolings) and
crops back, so odd sizes (81 x 99) pass.

Intensity: every volume is divided by the 99.5th percentile of its zero-filled RSS image (computed
from the undersampled data alone, so the same at training and inference) and the output is
multiplied back: the network sees images of intensity ~1 and returns the input's units. The
target is divided by the same number.

``train`` fits through :func:`mrichain.train.fit`; ``varnet`` rebuilds the network from the card
JSON beside the state dict.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mrichain.fft import ifft2c, rss
from mrichain.io import read_kspace

#: model hyper-parameters (go into the card, rebuild the network at inference)
MODEL_DEFAULTS = {
    "cascades": 4,  # unrolled VarNet blocks
    "channels": 8,  # first-level features of each refinement U-Net (doubles per level)
    "sens_channels": 4,  # first-level features of the coil-sensitivity U-Net
    "pad_factor": 16,
}
#: training settings (-> mrichain.train.TrainSettings) and data options: fastMRI's recipe scaled
#: to the budget (module docstring)
TRAIN_DEFAULTS = {
    "epochs": 10,
    "batch_size": 4,
    "lr": 3e-3,  # fastMRI's Adam 3e-4 x10 for a budget ~1000x shorter (module docstring)
    "weight_decay": 0.0,  # AdamW without decay = fastMRI's Adam
    "optimiser": "adamw",
    "schedule": "step",  # x step_gamma every step_epochs epochs
    "step_epochs": None,  # null: round(0.8 x epochs), one decay at 80 % (fastMRI: epoch 40 of 50)
    "step_gamma": 0.1,
    "patience": 10,  # = epochs: no early stop inside the budget
    "max_batches_per_epoch": 15,
    "grad_clip": 1.0,
    "device": "auto",
    "amp": True,
    "loss": "ssim",  # ssim | l1 (on the normalised magnitude)
    "target": "noisefree",  # noisefree (the simulator's truth; selection in the brain) | rss
    "include_fully_sampled": True,  # train also on R1 files (denoising; with target rss the identity: set False)
    "val_max_slices": 32,  # central slices per validation volume scored (None: all)
    "num_threads": None,  # torch intra-op threads (None: torch's default); not part of the card
}
TARGETS = ("noisefree", "rss")


# ----------------------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------------------
def _features(c: int) -> tuple[int, ...]:
    """BasicUNet's six feature counts from the first level's width ``c``."""
    return (c, c, 2 * c, 4 * c, 8 * c, c)


def _make_sens_model_class():
    from monai.apps.reconstruction.networks.nets.coil_sensitivity_model import CoilSensitivityModel

    class _SensitivityModel(CoilSensitivityModel):
        """MONAI's model, with an ACS search that handles a batch of masks and a fully sampled mask.

        MONAI's ``get_fully_sampled_region`` walks one mask and runs off the end of a fully sampled
        one (IndexError); here the ACS block is the central run of lines acquired in *every* mask of
        the batch, bounded by the array.
        """

        def get_fully_sampled_region(self, mask):
            m = mask.reshape(-1, mask.shape[-2]).bool().all(0)
            w = m.shape[0]
            left = right = w // 2
            while right < w and bool(m[right]):
                right += 1
            while left >= 0 and bool(m[left]):
                left -= 1
            return left + 1, right

    return _SensitivityModel


def _make_varnet_classes():
    """MONAI's VarNet with each cascade's refinement gated by a learned scalar initialised at 0."""
    from monai.apps.reconstruction.networks.blocks.varnetblock import VarNetBlock
    from monai.apps.reconstruction.networks.nets.utils import sensitivity_map_expand, sensitivity_map_reduce
    from monai.apps.reconstruction.networks.nets.varnet import VariationalNetworkModel

    class GatedVarNetBlock(VarNetBlock):
        """MONAI's cascade, ``k - soft_dc(k) - gate * expand(refine(reduce(k)))``; ``gate`` [1]
        starts at 0, so an untrained block passes its k-space through (the data-consistency term
        is 0 while the k-space equals the measurement on the sampled lines)."""

        def __init__(self, refinement_model: nn.Module, spatial_dims: int = 2):
            super().__init__(refinement_model, spatial_dims)
            self.gate = nn.Parameter(torch.zeros(1))

        def forward(self, current_kspace, ref_kspace, mask, sens_maps):
            dc_out = self.soft_dc(current_kspace, ref_kspace, mask)
            refinement_out = sensitivity_map_expand(
                self.model(sensitivity_map_reduce(current_kspace, sens_maps, spatial_dims=self.spatial_dims)),
                sens_maps, spatial_dims=self.spatial_dims)
            return current_kspace - dc_out - self.gate * refinement_out

    class IdentityStartVarNet(VariationalNetworkModel):
        """MONAI's e2e-VarNet whose cascades are :class:`GatedVarNetBlock` (MONAI's forward):
        untrained, it returns the zero-filled RSS of the sampled k-space."""

        def __init__(self, coil_sensitivity_model, refinement_model, num_cascades: int = 12, spatial_dims: int = 2):
            super().__init__(coil_sensitivity_model, refinement_model, num_cascades, spatial_dims)
            self.cascades = nn.ModuleList([GatedVarNetBlock(c.model, spatial_dims) for c in self.cascades])

    return GatedVarNetBlock, IdentityStartVarNet


def build_model(cascades: int = 4, channels: int = 8, sens_channels: int = 4, pad_factor: int = 16,
                **_ignored) -> nn.Module:
    """An identity-start e2e-VarNet: ([B,C,H,W,2] k-space, [B,1,1,W,1] bool mask) -> [B,H,W] RSS."""
    from monai.apps.reconstruction.networks.nets.complex_unet import ComplexUnet

    sens = _make_sens_model_class()(spatial_dims=2, features=_features(sens_channels))
    sens.conv_net.pad_factor = pad_factor
    refine = ComplexUnet(spatial_dims=2, features=_features(channels), pad_factor=pad_factor)
    return _make_varnet_classes()[1](sens, refine, num_cascades=cascades, spatial_dims=2)


def volume_scale(kspace: np.ndarray) -> float:
    """Per-volume intensity scale: 99.5th percentile of the zero-filled RSS of ``kspace`` [S,C,H,W]."""
    s = float(np.percentile(rss(ifft2c(kspace), coil_axis=1), 99.5))
    return s if s > 0 else 1.0


def to_tensors(kspace: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """complex [..., C, H, W] and float [W] -> float32 [..., C, H, W, 2] and mask [W] (float32)."""
    k = torch.from_numpy(np.stack([kspace.real, kspace.imag], axis=-1).astype(np.float32))
    return k, torch.from_numpy(np.asarray(mask, dtype=np.float32).reshape(-1))


def _mask5(mask: torch.Tensor) -> torch.Tensor:
    """[B, W] or [W] -> bool [B, 1, 1, W, 1] (MONAI's mask layout)."""
    if mask.ndim == 1:
        mask = mask[None]
    return (mask > 0)[:, None, None, :, None]


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def _item(entry) -> dict:
    """A manifest item: ``{"kspace": h5, "target": noise-free NIfTI, "mask": brain-mask NIfTI}``
    (a bare path is ``{"kspace": path}``)."""
    return {k: str(v) for k, v in entry.items()} if isinstance(entry, dict) else {"kspace": str(entry)}


def _slices_first(path, shape, what: str) -> np.ndarray:
    """A NIfTI volume [X, Y, Z] -> [Z, X, Y], the k-space file's [S, H, W] (as the scorer reads it)."""
    from mrichain.io import load_image

    vol = np.moveaxis(np.asarray(load_image(path).dataobj, dtype=np.float32), -1, 0)
    if vol.shape != tuple(shape):
        raise ValueError(f"{path}: {what} of shape {vol.shape} (slices first) "
                         f"does not match the k-space's {tuple(shape)}")
    return vol


def _load(item: dict, target: str = "noisefree", include_fully_sampled: bool = True):
    """(masked k-space [S,C,H,W], mask [W], target [S,H,W], brain mask [S,H,W] bool or None), or
    None for a fully sampled file that is skipped. ``target``: ``noisefree`` reads the item's
    ``target`` (and ``mask`` when present: the validation score is then taken inside it); ``rss``
    the file's ``reconstruction_rss``."""
    path = item["kspace"]
    kf = read_kspace(path)
    mask = kf.mask if kf.mask is not None else np.ones(kf.kspace.shape[-1], np.float32)
    if not include_fully_sampled and np.all(mask > 0):
        return None
    k = kf.kspace * mask[None, None, None, :]
    shape = (k.shape[0], *k.shape[2:])
    brain = None
    if target == "noisefree":
        if "target" not in item:
            raise ValueError(f"{path}: target noisefree, but the manifest item names no noise-free image ('target')")
        image = _slices_first(item["target"], shape, "the noise-free target")
        if "mask" in item:
            brain = _slices_first(item["mask"], shape, "the brain mask") > 0.5
    elif target == "rss":
        if kf.reconstruction_rss is None:
            raise ValueError(f"{path}: no reconstruction_rss target; cannot train on it")
        image = kf.reconstruction_rss
    else:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return k, mask, np.asarray(image, np.float32), brain


class SliceDataset(torch.utils.data.Dataset):
    """2-D slices of fastMRI-layout files: dict(kspace [C,H,W,2], mask [W], target [H,W], maxval []).

    Each volume is normalised by :func:`volume_scale`; ``target`` is the noise-free image or the
    file's ``reconstruction_rss`` (``target``) divided by the same scale; ``maxval`` is the
    normalised target's volume maximum (the SSIM data range, as fastMRI). Files with all lines
    acquired are skipped unless ``include_fully_sampled``. ``volumes``: (k-space, mask, target,
    brain mask or None) per file, unnormalised, for validation.
    """

    def __init__(self, entries, include_fully_sampled: bool = False, target: str = "noisefree"):
        self.items = []
        self.volumes = []
        for entry in entries:
            loaded = _load(_item(entry), target, include_fully_sampled)
            if loaded is None:
                continue
            k, mask, image, brain = loaded
            scale = volume_scale(k)
            kt, mt = to_tensors(k / scale, mask)
            tt = torch.from_numpy((image / scale).astype(np.float32))
            maxval = torch.tensor(float(tt.max()))
            self.volumes.append((k, mask, image, brain))
            for s in range(k.shape[0]):
                self.items.append({"kspace": kt[s], "mask": mt, "target": tt[s], "maxval": maxval})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# ----------------------------------------------------------------------------------------------
# loss, score, training
# ----------------------------------------------------------------------------------------------
def _ssim_loss(pred: torch.Tensor, target: torch.Tensor, maxval: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (MONAI, 7x7 uniform window as fastMRI) with each sample's own data range."""
    from monai.losses import SSIMLoss

    d = maxval.reshape(-1, 1, 1, 1).clamp_min(1e-8)
    loss = SSIMLoss(spatial_dims=2, data_range=1.0, kernel_type="uniform", win_size=7)
    return loss(pred[:, None] / d, target[:, None] / d)


def make_loss_fn(kind: str = "ssim"):
    def loss_fn(model, batch, device):
        k = batch["kspace"].to(device)
        mask = _mask5(batch["mask"].to(device))
        target = batch["target"].to(device)
        pred = model(k, mask)
        if kind == "l1":
            return torch.nn.functional.l1_loss(pred, target)
        return _ssim_loss(pred.float(), target, batch["maxval"].to(device))

    return loss_fn


def predict(model: nn.Module, kspace: np.ndarray, mask: np.ndarray, *, batch_size: int = 8,
            device: torch.device | str = "cpu", scale: float | None = None) -> np.ndarray:
    """Run ``model`` over the slices of one volume: complex [S,C,H,W], [W] -> float32 [S,H,W].

    ``scale``: the volume's intensity normalisation, default :func:`volume_scale` of the slices
    given (pass the whole volume's when calling it on a batch of a volume's slices)."""
    kspace = kspace * np.asarray(mask, np.float32)[None, None, None, :]
    scale = volume_scale(kspace) if scale is None else float(scale)
    k, m = to_tensors(kspace / scale, mask)
    m5 = _mask5(m.to(device))
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, k.shape[0], batch_size):
            out.append(model(k[i:i + batch_size].to(device), m5).float().cpu())
    return (torch.cat(out).numpy() * scale).astype(np.float32)


def make_score_fn(max_slices: int | None = None, batch_size: int = 8):
    """Mean fastMRI SSIM (the target's volume max as data range) over the validation volumes:
    inside the brain mask where the volume has one (the primary score, ``ssim_truth``), else over
    the whole slices (fastMRI's ``ssim`` against ``reconstruction_rss``). ``max_slices``: only the
    central slices of each volume."""
    from mrichain.scoring.metrics import ssim

    def score_fn(model, val_data: SliceDataset, device):
        scores = []
        for k, mask, target, brain in val_data.volumes:
            if max_slices is not None and k.shape[0] > max_slices:
                lo = (k.shape[0] - max_slices) // 2
                k, target = k[lo:lo + max_slices], target[lo:lo + max_slices]
                brain = None if brain is None else brain[lo:lo + max_slices]
            pred = predict(model, k, mask, batch_size=batch_size, device=device)
            scores.append(ssim(target, pred, mask=brain))
        return float(np.mean(scores)) if scores else float("nan")

    return score_fn


def _files(entries) -> list[str]:
    return [f for e in entries for f in _item(e).values()]


def _resolve_step_epochs(params: dict | None) -> dict:
    """``step_epochs: null`` -> round(0.8 x epochs) (at least 1): the one x0.1 decay at 80 % of
    the planned epochs, wherever ``epochs`` is set."""
    params = dict(params or {})
    merged = {**TRAIN_DEFAULTS, **params}
    if merged.get("schedule") == "step" and merged.get("step_epochs") is None:
        params["step_epochs"] = max(1, int(round(0.8 * int(merged["epochs"]))))
    return params


def train(manifest: dict, params: dict | None, out_path: str, seed: int, *,
          on_epoch_end=None, progress: bool = True):
    """Train the VarNet on ``manifest`` and write ``out_path`` (state dict), its card, its curve.

    manifest: {"train": [{"kspace": h5, "target": noise-free NIfTI, "mask": brain mask}, ...],
    "val": [...]} (each file's own mask is the input's sampling; ``target`` and ``mask`` are read
    with ``target: noisefree``, ``reconstruction_rss`` with ``target: rss``). params: keys of
    ``TRAIN_DEFAULTS`` (loop settings) and ``MODEL_DEFAULTS`` (architecture); unknown keys are an
    error. Returns :class:`mrichain.train.FitResult` (score: fastMRI SSIM on the validation volumes
    against the training target, inside the brain mask for the noise-free one).
    """
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.params import hyper_parameters, split_params

    settings, opts = split_params(_resolve_step_epochs(params), {**TRAIN_DEFAULTS, **MODEL_DEFAULTS}, seed, "varnet")
    hyper = hyper_parameters(opts, MODEL_DEFAULTS)
    target = opts["target"]
    if target not in TARGETS:
        raise ValueError(f"varnet: target must be one of {TARGETS}, got {target!r}")

    if opts["num_threads"]:
        torch.set_num_threads(int(opts["num_threads"]))
    train_items, val_items = manifest["train"], manifest["val"]
    train_data = SliceDataset(train_items, include_fully_sampled=bool(opts["include_fully_sampled"]), target=target)
    val_data = SliceDataset(val_items, include_fully_sampled=False, target=target)
    if len(val_data.volumes) == 0:  # only fully sampled validation files: score those
        val_data = SliceDataset(val_items, include_fully_sampled=True, target=target)
    if len(train_data) == 0:
        raise ValueError("no undersampled training files in the manifest (set include_fully_sampled)")
    in_brain = bool(val_data.volumes) and all(v[3] is not None for v in val_data.volumes)
    reference = "noise-free image" if target == "noisefree" else "reconstruction_rss"

    seed_everything(int(seed))
    model = build_model(**hyper)
    card = {
        "architecture": "IdentityStartVarNet(monai.VariationalNetworkModel(CoilSensitivityModel, ComplexUnet)),"
                        " refinement gated by a learned scalar per cascade, initialised at 0",
        "hyper_parameters": hyper,
        "normalisation": "per volume: / 99.5th percentile of the zero-filled RSS",
        "loss": opts["loss"],
        "target": target,
        "selection": f"val SSIM against the {reference}" + (" inside the brain mask" if in_brain else ""),
        "include_fully_sampled": bool(opts["include_fully_sampled"]),
        "val_max_slices": opts["val_max_slices"],
        "training_data_hash": hash_files(_files(train_items) + _files(val_items)),
        "n_train_slices": len(train_data),
        "n_val_volumes": len(val_data.volumes),
    }
    return fit(model, train_data, val_data, loss_fn=make_loss_fn(opts["loss"]),
               score_fn=make_score_fn(opts["val_max_slices"]), settings=settings, out_path=out_path,
               card=card, score_name="ssim", on_epoch_end=on_epoch_end, progress=progress)


# ----------------------------------------------------------------------------------------------
# inference (the recon METHODS call shape)
# ----------------------------------------------------------------------------------------------
_CACHE: dict = {}


def load_model(model: str, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the network from the card beside ``model`` (``.json``) and load the state dict.
    The card's hyper-parameters are checked against the method's declared params
    (:func:`mrichain.train.params.check_hyper_parameters`) before the network is built."""
    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    path = Path(model)
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(device))
    if key in _CACHE:
        return _CACHE[key]
    card = path.with_suffix(".json")
    net, _ = load_trained(path, lambda hp: build_model(**check_hyper_parameters(card, hp, "reconstruct", "varnet",
                                                                               MODEL_DEFAULTS)), device)
    _CACHE.clear()
    _CACHE[key] = net
    return net


def varnet(kspace: np.ndarray, mask: np.ndarray | None = None, *, model: str, batch_size: int = 8,
           device: str = "auto", scale: float | None = None, **params) -> np.ndarray:
    """Reconstruct every slice with a trained VarNet.

    kspace: complex64 [S, C, H, W] (phase encode along W); mask: float32 [W] or None (fully
    sampled); model: path of the state dict ``.pt`` with its card ``.json`` beside it.
    Returns float32 [S, H, W] magnitude in the input's units (scale of ``reconstruction_rss``).
    Runs on CUDA when available (``device="auto"``), else CPU. ``scale``: the volume's intensity
    normalisation (:func:`predict`; default from the slices given). Other ``params`` are ignored.
    """
    from mrichain.train import select_device

    kspace = np.asarray(kspace)
    if kspace.ndim != 4:
        raise ValueError(f"kspace must be [S, C, H, W], got shape {kspace.shape}")
    W = kspace.shape[-1]
    mask = np.ones(W, np.float32) if mask is None else np.asarray(mask, np.float32).reshape(-1)
    if mask.shape[0] != W:
        raise ValueError(f"mask length {mask.shape[0]} != kspace width {W}")
    dev = select_device(device)
    net = load_model(model, dev)
    return predict(net, kspace, mask, batch_size=batch_size, device=dev, scale=scale)
