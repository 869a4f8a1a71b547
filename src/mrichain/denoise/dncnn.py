"""Learned denoising: a DnCNN-style residual CNN on 2-D axial slices (Zhang et al. 2017).

MONAI ships no DnCNN, so the network is assembled from MONAI ``Convolution`` blocks: one
conv + ReLU, ``depth - 2`` conv (+ optional normalisation, none by default) + ReLU, one conv to
the residual; the output is ``input - residual`` (the network learns the noise field, not the
image). Chosen over a residual ``BasicUNet`` because it is DnCNN as published (no down-sampling,
so no padding to a multiple, no checkerboard or resampling blur at full resolution), it is small
and fast on a CPU, and its receptive field (``2 * depth + 1`` voxels) is what spatially white
Rician noise needs.

The hidden convolutions get He (Kaiming) initialisation for ReLU. Without a normalisation layer,
PyTorch's default initialisation shrinks the spatial spread of the activations about 2.5x per
layer, so the residual head of the default 8-layer net saw a near-constant feature map and its
training loss stayed at the identity's. Batch-norm (``norm="batch"``, as published) also fixes
that, but adds a train/inference difference (running statistics over a few whole slices) and
scored lower in a short trial on the benchmark cohort.

It is a denoiser, not a de-aliaser: coherent undersampling artefacts a quarter of the FOV wide
are the reconstruction stage's job, so the workflow trains it on fully sampled acquisitions only
(noise is then all that separates input from target); it is applied to every acquisition. The
noise differs between them: a zero-filled image of k-space with a fraction ``f`` of its lines
acquired carries ``sqrt(f)`` of the fully sampled image's noise (R4 with a 16 % centre: f = 0.37,
SNR 30 becomes about 50). A network trained on one SNR removes that much noise wherever it runs and
smooths away structure where the noise is weaker (on the default cohort at R4: 0.1 dB below its
input); the shipped configs therefore train it noise-level blind over an SNR range that holds every
acquisition's (``noise_snr_range: [25, 60]``) with Rician training noise (``noise_coils: 1``),
chosen on the val split at R4. ``python benchmarks/dncnn_noise_model.py --workdir <default run>``
(default cohort, run's seed and 80-step budget; gain over the undenoised input, val subjects):
cohort SNR only -0.09 dB at R4, +4.44 dB at R1; blind, Rician +0.10 / +3.52 dB; blind, the
acquisition's 8 coils -0.01 / +3.93 dB (its statistics match the R1 images': brain bias and
background floor agree to 1e-5, yet at R4 it stays at its input).

Intensities are normalised per volume by the 99th percentile of the input (target by the same
factor), and the factor is undone on output, so the method is blind to the scanner's scale.

By default it learns the noise of the training pairs, i.e. of the cohort's SNR (``acquire.snr``).
With ``noise_snr_range: [lo, hi]`` it is trained noise-level blind, as DnCNN-B: every training
item's input is re-synthesised from its noise-free target at an SNR drawn per item from [lo, hi]
(:mod:`mrichain.denoise.noise_levels`), and the card records the range (``noise_levels``), so that
an input outside it can be flagged (:func:`mrichain.denoise.noise_levels.trained_snr_range`).
"""
from __future__ import annotations


import nibabel as nib
import numpy as np
import torch
from torch import nn

from mrichain.denoise.noise_levels import NoiseLevelSlices, check_snr_range
from mrichain.io import load_image
from mrichain.slices import SliceDataset, image_like, percentile_scale, predict_volume
from mrichain.train.params import split_params

#: Training parameters and their defaults (loop settings go to ``TrainSettings``, the rest to the card).
DEFAULTS: dict = {
    "epochs": 6,
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "patience": 3,
    "max_batches_per_epoch": 30,
    "device": "auto",
    "amp": True,
    "grad_clip": 1.0,
    "depth": 8,
    "channels": 32,
    "norm": None,  # None (no normalisation layers) or a MONAI norm name such as "batch"
    "loss": "l1",
    "flips": True,
    "threads": None,
    # Noise-level blind training (off: None). [lo, hi]: each training item's input is the noise-free
    # target re-acquired at an SNR drawn log-uniformly from [lo, hi] (SNR = mean noise-free brain
    # signal / noise SD per real channel, as acquire.snr), RSS of `noise_coils` coils (the workflow
    # fills in acquire.n_coils); see mrichain.denoise.noise_levels. Validation stays on the val pairs.
    "noise_snr_range": None,
    "noise_coils": None,
}


class DnCNN(nn.Module):
    """[B, C, H, W] -> [B, C, H, W]: ``x - body(x)``, body = DnCNN's conv(/norm)/ReLU stack."""

    def __init__(self, depth: int = 8, channels: int = 32, in_channels: int = 1, norm: str | None = None):
        super().__init__()
        from monai.networks.blocks import Convolution

        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        layers = [Convolution(2, in_channels, channels, kernel_size=3, act="RELU", norm=None, bias=True)]
        for _ in range(depth - 2):
            layers.append(Convolution(2, channels, channels, kernel_size=3, act="RELU", norm=norm, bias=norm is None))
        layers.append(Convolution(2, channels, in_channels, kernel_size=3, conv_only=True, bias=True))
        self.body = nn.Sequential(*layers)
        # He initialisation of the hidden convs keeps the activations' spread roughly constant
        # through the ReLU stack (PyTorch's default shrinks it ~2.5x per layer without norm layers)
        for block in layers[:-1]:
            nn.init.kaiming_normal_(block.conv.weight, mode="fan_in", nonlinearity="relu")
            if block.conv.bias is not None:
                nn.init.zeros_(block.conv.bias)
        # Zero residual at initialisation: the untrained net is the identity, so training starts
        # from the input's PSNR and can only be selected (by validation) where it improves on it.
        last = layers[-1].conv
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def build(hyper_parameters: dict) -> DnCNN:
    hp = hyper_parameters
    return DnCNN(depth=int(hp["depth"]), channels=int(hp["channels"]), in_channels=int(hp.get("in_channels", 1)),
                 norm=hp.get("norm"))


def _load_item(item: dict) -> dict[str, np.ndarray]:
    x = np.asarray(load_image(item["input"]).dataobj, dtype=np.float32)
    scale = percentile_scale(x)
    out = {"input": x / scale}
    if "target" in item:
        out["target"] = np.asarray(load_image(item["target"]).dataobj, dtype=np.float32) / scale
    if "mask" in item:
        out["mask"] = (np.asarray(load_image(item["mask"]).dataobj) > 0).astype(np.float32)
    return out


def _load_target(item: dict) -> dict[str, np.ndarray]:
    """The noise-free target and brain mask of a training item, unnormalised (noise-blind training
    synthesises the input and normalises both itself)."""
    return {"target": np.asarray(load_image(item["target"]).dataobj, dtype=np.float32),
            "mask": (np.asarray(load_image(item["mask"]).dataobj) > 0).astype(np.float32)}


def make_loss(kind: str = "l1"):
    """``loss_fn(model, batch, device)`` for the engine: L1 or MSE on normalised intensities,
    averaged over the brain mask when the batch carries one."""
    if kind not in ("l1", "mse"):
        raise ValueError(f"loss must be 'l1' or 'mse', got {kind!r}")
    crit = nn.L1Loss(reduction="none") if kind == "l1" else nn.MSELoss(reduction="none")

    def loss_fn(model, batch, device):
        err = crit(model(batch["input"].to(device)), batch["target"].to(device))
        if "mask" not in batch:
            return err.mean()
        # inside the brain only: that is where the stage is scored, and the coil-combined noise
        # floor of the background would otherwise dominate the loss
        w = batch["mask"].to(device)
        return (err * w).sum() / w.sum().clamp_min(1.0)

    return loss_fn


def score_fn(model, val_data: SliceDataset, device) -> float:
    """Mean PSNR (dB) inside the brain mask over the validation volumes (higher is better)."""
    from mrichain.scoring.metrics import psnr

    scores = []
    for vol in val_data.volumes:
        pred = predict_volume(model, vol["input"], device=device)[0]
        scores.append(psnr(vol["target"], np.clip(pred, 0, None), mask=vol["mask"]))
    return float(np.mean(scores))


def train(manifest: dict, params: dict | None, out_path: str, seed: int, *,
          on_epoch_end=None, progress: bool = True):
    """Train the DnCNN through :func:`mrichain.train.fit`; returns its ``FitResult``.

    manifest: ``{"train": [{"input", "target", "mask"}, ...], "val": [...]}`` NIfTI paths
    (noisy image, noise-free image, brain mask), several acquisitions per subject allowed (the
    workflow passes the fully sampled ones: :meth:`mrichain.plan.manifests.Plan.train_manifest`).
    params: overrides of :data:`DEFAULTS`; ``noise_snr_range: [lo, hi]`` trains noise-level blind
    (:mod:`mrichain.denoise.noise_levels`: inputs synthesised from the targets at an SNR drawn per
    item, RSS of ``noise_coils`` coils, default 1 = Rician when not given; the card records the
    range under ``noise_levels``); absent or None trains on the manifest's pairs as they are. Writes ``out_path`` (state dict), the card JSON beside
    it (architecture + hyper-parameters, rebuilt by :func:`dncnn`), curve TSV/PNG, checkpoint.
    on_epoch_end, progress: passed to ``fit`` (tests interrupt through the former).
    """
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.manifest import check_manifest

    settings, rest = split_params(params, DEFAULTS, seed)
    if rest["threads"]:
        torch.set_num_threads(int(rest["threads"]))
    paths = check_manifest(manifest, ("input", "target", "mask"))
    hp = {"depth": int(rest["depth"]), "channels": int(rest["channels"]), "in_channels": 1, "norm": rest["norm"]}
    flips = (0,) if rest["flips"] else ()
    snr_range = check_snr_range(rest["noise_snr_range"])
    if snr_range is None:
        train_ds = SliceDataset(manifest["train"], _load_item, mask_key="mask", flip_axes=flips)
    else:
        coils = 1 if rest["noise_coils"] is None else int(rest["noise_coils"])
        train_ds = NoiseLevelSlices(manifest["train"], _load_target, snr_range=snr_range, n_coils=coils,
                                    flip_axes=flips)
    val_ds = SliceDataset(manifest["val"], _load_item, mask_key="mask")
    card = {
        "architecture": "DnCNN (residual, MONAI Convolution blocks), 2-D axial slices",
        "method": "dncnn",
        "stage": "denoise",
        "hyper_parameters": hp,
        "loss": {"kind": rest["loss"], "region": "brain mask", "space": "normalised intensities"},
        "augmentation": {"flip_axes": list(flips)},
        "normalisation": "input / 99th percentile of the input volume; undone on output",
        "training_data_hash": hash_files(paths),
        "n_volumes": {"train": len(manifest["train"]), "val": len(manifest["val"])},
        "n_slices": {"train": len(train_ds), "val": len(val_ds)},
    }
    if snr_range is not None:  # only then: a cohort-SNR model's card (and resume fingerprint) is as before
        card["noise_levels"] = {
            "snr_range": list(snr_range),
            "snr_definition": "mean noise-free signal in the brain mask / noise SD per real channel (acquire.snr)",
            "distribution": "log-uniform, one draw per training item",
            "noise_model": f"RSS of {coils} coil(s): noncentral chi, {2 * coils} degrees of freedom",
            "n_coils": coils,
            "inputs": "synthesised from the noise-free targets; validation on the manifest's val pairs",
        }
    seed_everything(seed)
    model = build(hp)
    return fit(model, train_ds, val_ds, loss_fn=make_loss(rest["loss"]), score_fn=score_fn,
               settings=settings, out_path=out_path, card=card, score_name="psnr_brain",
               on_epoch_end=on_epoch_end, progress=progress)


def load_model(model: str, device="cpu") -> tuple[DnCNN, dict]:
    """The trained net (eval mode, on ``device``) and its card, from ``model`` (.pt) + its .json.
    The card's hyper-parameters are checked against the method's declared params
    (:func:`mrichain.train.params.check_hyper_parameters`) before the network is built."""
    from pathlib import Path

    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    defaults = {"depth": DEFAULTS["depth"], "channels": DEFAULTS["channels"], "in_channels": 1, "norm": DEFAULTS["norm"]}
    card = Path(model).with_suffix(".json")
    return load_trained(model, lambda hp: build(check_hyper_parameters(
        card, hp, "denoise", "dncnn", defaults, extra={"in_channels": {"const": 1}},
        required=("depth", "channels"))), device)


def dncnn(image: nib.Nifti1Image, *, model: str, threads: int = 1, batch_size: int = 16,
          device: str = "auto") -> nib.Nifti1Image:
    """Denoise a magnitude image with a trained DnCNN.

    image: [X, Y, Z] float; model: the state dict written by :func:`train` (card beside it).
    Returns float32 [X, Y, Z] (clipped at 0, in the input's intensity units) with the same affine.
    """
    from mrichain.train import select_device

    torch.set_num_threads(int(threads))
    dev = select_device(device)
    net, _ = load_model(model, dev)
    x = np.asarray(image.dataobj, dtype=np.float32)
    scale = percentile_scale(x)
    y = predict_volume(net, x / scale, batch_size=batch_size, device=dev)[0] * scale
    return image_like(np.clip(y, 0, None), image.affine, np.float32)
