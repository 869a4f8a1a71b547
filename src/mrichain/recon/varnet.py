"""Learned reconstruction: end-to-end VarNet (Sriram et al. 2020) from MONAI, trained per 2-D slice.

The network (``monai.apps.reconstruction.networks.nets.varnet.VariationalNetworkModel``) unrolls
``cascades`` blocks, each a soft k-space data-consistency step plus a complex U-Net refinement in
the coil-combined image domain; coil sensitivities are learned from the ACS lines by a second small
complex U-Net (MONAI ``CoilSensitivityModel``). The output is the RSS of the predicted coil images,
the fastMRI target ``reconstruction_rss``.

Tensors (MONAI's convention): k-space [B, C, H, W, 2] (real/imaginary last), mask [B, 1, 1, W, 1]
bool. ``ComplexUnet`` pads H and W to a multiple of ``pad_factor`` (16 for its 4 poolings) and
crops back, so odd sizes (81 x 99) pass.

Intensity: every volume is divided by the 99.5th percentile of its zero-filled RSS image (computed
from the undersampled data alone, so the same at training and inference) and the output is
multiplied back: the network sees images of intensity ~1 and returns the input's units.

``train`` fits through :func:`mrichain.train.fit` (SSIM loss, fastMRI SSIM on the validation
volumes as the score); ``varnet`` rebuilds the network from the card JSON beside the state dict.
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
#: training settings (-> mrichain.train.TrainSettings) and data options
TRAIN_DEFAULTS = {
    "epochs": 4,
    "batch_size": 4,
    "lr": 3e-3,
    "weight_decay": 0.0,
    "patience": 3,
    "max_batches_per_epoch": 15,
    "grad_clip": 1.0,
    "device": "auto",
    "amp": True,
    "loss": "ssim",  # ssim | l1 (on the normalised magnitude)
    "include_fully_sampled": False,  # train also on R1 files (identity mapping; wastes budget)
    "val_max_slices": 32,  # central slices per validation volume scored (None: all)
    "num_threads": None,  # torch intra-op threads (None: torch's default); not part of the card
}


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


def build_model(cascades: int = 4, channels: int = 8, sens_channels: int = 4, pad_factor: int = 16,
                **_ignored) -> nn.Module:
    """A MONAI e2e-VarNet: input ([B,C,H,W,2] k-space, [B,1,1,W,1] bool mask) -> [B,H,W] RSS."""
    from monai.apps.reconstruction.networks.nets.complex_unet import ComplexUnet
    from monai.apps.reconstruction.networks.nets.varnet import VariationalNetworkModel

    sens = _make_sens_model_class()(spatial_dims=2, features=_features(sens_channels))
    sens.conv_net.pad_factor = pad_factor
    refine = ComplexUnet(spatial_dims=2, features=_features(channels), pad_factor=pad_factor)
    return VariationalNetworkModel(sens, refine, num_cascades=cascades, spatial_dims=2)


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
def _load(path, include_fully_sampled: bool = True):
    kf = read_kspace(path)
    if kf.reconstruction_rss is None:
        raise ValueError(f"{path}: no reconstruction_rss target; cannot train on it")
    mask = kf.mask if kf.mask is not None else np.ones(kf.kspace.shape[-1], np.float32)
    if not include_fully_sampled and np.all(mask > 0):
        return None
    k = kf.kspace * mask[None, None, None, :]
    return k, mask, kf.reconstruction_rss


class SliceDataset(torch.utils.data.Dataset):
    """2-D slices of fastMRI-layout files: dict(kspace [C,H,W,2], mask [W], target [H,W], maxval []).

    Each volume is normalised by :func:`volume_scale`; ``maxval`` is the normalised target's volume
    maximum (the SSIM data range, as fastMRI). Files with all lines acquired are skipped unless
    ``include_fully_sampled``.
    """

    def __init__(self, paths, include_fully_sampled: bool = False):
        self.items = []
        self.volumes = []  # (kspace, mask, target) per file, unnormalised, for validation
        for p in paths:
            loaded = _load(p, include_fully_sampled)
            if loaded is None:
                continue
            k, mask, target = loaded
            scale = volume_scale(k)
            kt, mt = to_tensors(k / scale, mask)
            tt = torch.from_numpy((target / scale).astype(np.float32))
            maxval = torch.tensor(float(tt.max()))
            self.volumes.append((k, mask, target))
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
    """Mean fastMRI SSIM (volume max as data range) over the validation volumes."""
    from mrichain.metrics import ssim

    def score_fn(model, val_data: SliceDataset, device):
        scores = []
        for k, mask, target in val_data.volumes:
            if max_slices is not None and k.shape[0] > max_slices:
                lo = (k.shape[0] - max_slices) // 2
                k, target = k[lo:lo + max_slices], target[lo:lo + max_slices]
            pred = predict(model, k, mask, batch_size=batch_size, device=device)
            scores.append(ssim(target, pred))
        return float(np.mean(scores)) if scores else float("nan")

    return score_fn


def _paths(entries) -> list[str]:
    return [str(e["kspace"] if isinstance(e, dict) else e) for e in entries]


def train(manifest: dict, params: dict | None, out_path: str, seed: int, *,
          on_epoch_end=None, progress: bool = True):
    """Train the VarNet on ``manifest`` and write ``out_path`` (state dict), its card, its curve.

    manifest: {"train": [{"kspace": h5}, ...], "val": [{"kspace": h5}, ...]} (files with
    ``reconstruction_rss``; each file's own mask is the input's sampling). params: keys of
    ``TRAIN_DEFAULTS`` (loop settings) and ``MODEL_DEFAULTS`` (architecture); unknown keys are an
    error. Returns :class:`mrichain.train.FitResult` (score: fastMRI SSIM on the validation volumes).
    """
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.params import hyper_parameters, split_params

    settings, opts = split_params(params, {**TRAIN_DEFAULTS, **MODEL_DEFAULTS}, seed, "varnet")
    hyper = hyper_parameters(opts, MODEL_DEFAULTS)

    if opts["num_threads"]:
        torch.set_num_threads(int(opts["num_threads"]))
    train_paths, val_paths = _paths(manifest["train"]), _paths(manifest["val"])
    train_data = SliceDataset(train_paths, include_fully_sampled=bool(opts["include_fully_sampled"]))
    val_data = SliceDataset(val_paths, include_fully_sampled=False)
    if len(val_data.volumes) == 0:  # only fully sampled validation files: score those
        val_data = SliceDataset(val_paths, include_fully_sampled=True)
    if len(train_data) == 0:
        raise ValueError("no undersampled training files in the manifest (set include_fully_sampled)")

    seed_everything(int(seed))
    model = build_model(**hyper)
    card = {
        "architecture": "monai.VariationalNetworkModel(CoilSensitivityModel, ComplexUnet)",
        "hyper_parameters": hyper,
        "normalisation": "per volume: / 99.5th percentile of the zero-filled RSS",
        "loss": opts["loss"],
        "include_fully_sampled": bool(opts["include_fully_sampled"]),
        "val_max_slices": opts["val_max_slices"],
        "training_data_hash": hash_files(train_paths + val_paths),
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
