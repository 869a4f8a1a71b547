"""Learned tissue segmentation: a 2-D MONAI ``UNet`` on axial slices, 4 classes (BG/CSF/GM/WM).

Why 2-D slices and not 3-D patches: the default config trains on a 2-core CPU in about two
minutes. A 2-D U-Net costs a fraction of a 3-D one per voxel (3x3 instead of 3x3x3 kernels,
2-D feature maps), and every subject gives ~80 axial slices, i.e. hundreds of distinct training
samples from the handful of simulated training subjects, where a 3-D model would see a few
volumes (or overlapping patches of them) per epoch. Tissue contrast is local in-plane, so the
through-plane context a 3-D model would add matters little for CSF/GM/WM at 2-4 mm.

Loss: MONAI ``DiceCELoss`` (softmax, one-hot target). Validation score: mean tissue Dice
(labels 1, 2, 3; :func:`mrichain.scoring.metrics.dice`) over the validation volumes.

Training recipe: nnU-Net's (Isensee et al. 2021: SGD, Nesterov momentum 0.99, lr 1e-2, poly
schedule ``(1 - t/T)^0.9``, 1,000 epochs x 250 iterations, z-score normalisation, Dice + CE,
a third of each batch forced to hold foreground), adapted to a 2-core CPU and a cohort of a few
simulated subjects:

- **poly schedule** over the planned optimiser steps (``epochs x max_batches_per_epoch``): the rate
  decays to ~0 at the end, so the last epochs settle instead of oscillating as a constant 3e-3
  did; the low-rate epochs come last, so early stopping is off by default (``patience`` =
  ``epochs``) and the budget is fixed;
- **optimiser**: AdamW at 3e-3 rather than nnU-Net's SGD (1e-2, Nesterov 0.99): momentum 0.99
  averages the gradient over ~100 steps, about the whole default budget of a few hundred steps,
  while Adam's per-parameter scaling needs no such run-in; nnU-Net's is one setting away
  (``optimiser: sgd, lr: 0.01, momentum: 0.99``) for budgets of thousands of steps;
- **z-score per volume** over the image's own brain mask (:func:`mrichain.segment.brainmask.brain_mask_array`,
  computable at inference, so training and inference normalise alike; nnU-Net's "nonzero mask"
  normalisation for MRI): ``(x - mean_brain) / sd_brain`` applied to every voxel, background
  included (it becomes a near-constant negative value, not zeroed, so the network still sees the
  mask's edge). It removes the per-subject intensity scale (coil, tissue-parameter draws) that the
  99th percentile (``normalisation: percentile``, the former recipe) only partly removes;
- **foreground oversampling**: each training sample is with probability ``oversample_foreground``
  (0.33) replaced by a slice holding the rarest tissue class of the train split (CSF here), and
  every slice is kept, empty ones included (the network labels them at inference too). nnU-Net
  would plan a patch the size of the whole slice here (81 x 99 at 2 mm), so forcing foreground
  changes little on this cohort (79 of 82 slices hold brain, 77 CSF); it matters with a wider
  field of view (real scans);
- **2.5-D** (``context: c``): the slice and its ``c`` neighbours on each side as ``2c + 1`` input
  channels (edge slices repeat); off by default: through-plane context matters little for tissue
  classes at 2-4 mm (above), and it is a default only once it wins on val.
"""
from __future__ import annotations

from typing import Callable

import nibabel as nib
import numpy as np
import torch

from mrichain.io import load_image
from mrichain.slices import (SliceDataset, image_like, neighbour_stack, percentile_scale, predict_volume,
                             zscore_scale)
from mrichain.train.params import split_params

N_CLASSES = 4  # 0 BG, 1 CSF, 2 GM, 3 WM
MAX_CONTEXT = 3  # 2.5-D: at most 3 neighbours each side (the declared schema of ``context``)

#: Training parameters and their defaults (loop settings go to ``TrainSettings``, the rest to the card).
DEFAULTS: dict = {
    "epochs": 6,
    "batch_size": 8,
    "lr": 3e-3,
    "optimiser": "adamw",
    "schedule": "poly",
    "poly_exponent": 0.9,
    "weight_decay": 0.0,
    "patience": 6,
    "max_batches_per_epoch": 30,
    "device": "auto",
    "amp": True,
    "grad_clip": 1.0,
    "channels": [16, 32, 64, 128],
    "num_res_units": 1,
    "dropout": 0.0,
    "contrast": "T1w",
    "flips": True,
    "normalisation": "zscore",
    "context": 0,
    "oversample_foreground": 0.33,
    "threads": None,
}

#: What a card written before a hyper-parameter existed was trained with.
_CARD_DEFAULTS = {"channels": DEFAULTS["channels"], "num_res_units": DEFAULTS["num_res_units"],
                  "dropout": DEFAULTS["dropout"], "normalisation": "percentile", "context": 0,
                  "in_channels": 1, "out_channels": N_CLASSES}


def build(hyper_parameters: dict) -> torch.nn.Module:
    """MONAI 2-D ``UNet`` (``2 context + 1`` input channels, 4 classes, stride 2 between levels,
    batch norm)."""
    from monai.networks.nets import UNet

    hp = hyper_parameters
    channels = tuple(int(c) for c in hp["channels"])
    in_channels = 2 * int(hp.get("context", 0)) + 1
    if int(hp.get("in_channels", in_channels)) != in_channels:
        raise ValueError(f"in_channels {hp['in_channels']} != 2 x context + 1 = {in_channels}")
    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=N_CLASSES, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=int(hp["num_res_units"]),
                norm="batch", dropout=float(hp.get("dropout", 0.0)))


def _multiple(hp: dict) -> int:
    return 2 ** (len(hp["channels"]) - 1)


def normalise(x: np.ndarray, voxel_mm, how: str = "zscore") -> np.ndarray:
    """The network's input from an image [X, Y, Z] (float32, same shape), as in training and inference.

    ``zscore``: ``(x - mean) / sd`` over the image's own brain mask (voxel sizes ``voxel_mm`` in
    mm for its closing radius), every voxel transformed; ``percentile``: ``x / p99(x)``."""
    x = np.asarray(x, dtype=np.float32)
    if how == "percentile":
        return x / percentile_scale(x)
    if how != "zscore":
        raise ValueError(f"normalisation must be zscore or percentile, got {how!r}")
    from mrichain.segment.brainmask import brain_mask_array

    mean, sd = zscore_scale(x, brain_mask_array(x, voxel_mm))
    return ((x - mean) / sd).astype(np.float32)


def _loader(how: str):
    """``load_fn`` of :class:`~mrichain.slices.SliceDataset`: the normalised image and its labels."""
    return lambda item: _load_item(item, how)


def _load_item(item: dict, how: str = DEFAULTS["normalisation"]) -> dict[str, np.ndarray]:
    img = load_image(item["input"])
    x = np.asarray(img.dataobj, dtype=np.float32)
    out = {"input": normalise(x, img.header.get_zooms()[:3], how)}
    if "target" in item:
        lab = np.asarray(load_image(item["target"]).dataobj)
        if lab.shape != x.shape:
            raise ValueError(f"{item['target']}: labels {lab.shape} do not match image {x.shape}")
        out["target"] = lab.astype(np.int64)
    return out


def make_loss():
    """``loss_fn(model, batch, device)``: MONAI DiceCELoss, softmax over logits, one-hot target."""
    from monai.losses import DiceCELoss

    crit = DiceCELoss(to_onehot_y=True, softmax=True)

    def loss_fn(model, batch, device):
        return crit(model(batch["input"].to(device)), batch["target"].to(device))

    return loss_fn


def _segment(net, x: np.ndarray, device, multiple: int, batch_size: int = 16, context: int = 0) -> np.ndarray:
    """Labels [X, Y, Z] of a normalised volume ``x`` [X, Y, Z] (slice-wise, ``context`` neighbours)."""
    logits = predict_volume(net, neighbour_stack(x, context), batch_size=batch_size, device=device,
                            multiple=multiple)
    return np.argmax(logits, axis=0).astype(np.uint8)


def rarest_class_slices(volumes: list[dict]) -> tuple[int, Callable[[dict], np.ndarray]]:
    """The tissue class (1-3) with the fewest voxels over ``volumes``' ``target`` arrays, and the
    ``foreground`` function of :class:`~mrichain.slices.SliceDataset` marking the slices that hold it."""
    counts = np.sum([np.bincount(v["target"].ravel(), minlength=N_CLASSES)[:N_CLASSES] for v in volumes], axis=0)
    present = [k for k in (1, 2, 3) if counts[k] > 0]
    rarest = int(min(present, key=lambda k: counts[k])) if present else 1
    return rarest, lambda v: np.count_nonzero(v["target"] == rarest, axis=(0, 1)) > 0


def make_score(multiple: int, context: int = 0):
    def score_fn(model, val_data: SliceDataset, device) -> float:
        """Mean Dice over tissues 1-3 and validation volumes (higher is better)."""
        from mrichain.scoring.metrics import dice

        scores = []
        for vol in val_data.volumes:
            seg = _segment(model, vol["input"], device, multiple, context=context)
            d = dice(vol["target"], seg, labels=(1, 2, 3))
            scores.append(np.nanmean(list(d.values())))
        return float(np.mean(scores))

    return score_fn


def train(manifest: dict, params: dict | None, out_path: str, seed: int, *,
          on_epoch_end=None, progress: bool = True):
    """Train the 2-D U-Net through :func:`mrichain.train.fit`; returns its ``FitResult``.

    manifest: ``{"train": [{"input": image, "target": dseg}, ...], "val": [...]}`` NIfTI paths.
    params: overrides of :data:`DEFAULTS`. Writes ``out_path`` (state dict), the card JSON beside
    it (rebuilt by :func:`unet`), curve TSV/PNG and the resumable checkpoint.
    on_epoch_end, progress: passed to ``fit`` (tests interrupt through the former).
    """
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.manifest import check_manifest

    settings, rest = split_params(params, DEFAULTS, seed)
    if rest["threads"]:
        torch.set_num_threads(int(rest["threads"]))
    paths = check_manifest(manifest, ("input", "target"))
    context = int(rest["context"])
    hp = {"channels": [int(c) for c in rest["channels"]], "num_res_units": int(rest["num_res_units"]),
          "dropout": float(rest["dropout"]), "normalisation": str(rest["normalisation"]), "context": context,
          "in_channels": 2 * context + 1, "out_channels": N_CLASSES}
    multiple = _multiple(hp)
    flips = (0,) if rest["flips"] else ()
    load = _loader(hp["normalisation"])
    oversample = float(rest["oversample_foreground"])
    # with oversampling every slice is kept (empty ones are labelled at inference too)
    train_ds = SliceDataset(manifest["train"], load, mask_key=None if oversample > 0 else "target",
                            flip_axes=flips, multiple=multiple, context=context)
    rarest = None
    if oversample > 0:
        rarest, foreground = rarest_class_slices(train_ds.volumes)
        train_ds.set_oversampling(oversample, foreground)
    val_ds = SliceDataset(manifest["val"], load, mask_key="target", multiple=multiple)
    card = {
        "architecture": (f"MONAI UNet, 2-D axial slices ({2 * context + 1} input channel(s): the slice"
                         f"{f' and {context} neighbour(s) each side' if context else ''}), "
                         "4 classes (0 BG, 1 CSF, 2 GM, 3 WM)"),
        "method": "unet",
        "stage": "segment",
        "contrast": str(rest["contrast"]),
        "hyper_parameters": hp,
        "loss": "DiceCELoss(softmax, one-hot target)",
        "augmentation": {"flip_axes": list(flips)},
        "sampling": {"oversample_foreground": oversample, "foreground_class": rarest,
                     "foreground_slices": int(train_ds.foreground_index.size) if oversample > 0 else None},
        "normalisation": ("z-score per volume over its brain mask (brainmask.brain_mask_array)"
                          if hp["normalisation"] == "zscore" else "input / 99th percentile of the input volume"),
        "training_data_hash": hash_files(paths),
        "n_volumes": {"train": len(manifest["train"]), "val": len(manifest["val"])},
        "n_slices": {"train": len(train_ds), "val": len(val_ds)},
    }
    seed_everything(seed)
    model = build(hp)
    return fit(model, train_ds, val_ds, loss_fn=make_loss(), score_fn=make_score(multiple, context),
               settings=settings, out_path=out_path, card=card, score_name="dice_mean",
               on_epoch_end=on_epoch_end, progress=progress)


def load_model(model: str, device="cpu") -> tuple[torch.nn.Module, dict]:
    """The trained net (eval mode, on ``device``) and its card, from ``model`` (.pt) + its .json.
    The card's hyper-parameters are checked against the method's declared params
    (:func:`mrichain.train.params.check_hyper_parameters`) before the network is built."""
    from pathlib import Path

    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    card = Path(model).with_suffix(".json")
    extra = {"in_channels": {"type": "integer", "minimum": 1, "maximum": 2 * MAX_CONTEXT + 1},
             "out_channels": {"const": N_CLASSES}}
    return load_trained(model, lambda hp: build(check_hyper_parameters(
        card, hp, "segment", "unet", _CARD_DEFAULTS, extra=extra, required=("channels", "num_res_units"))), device)


def unet(image: nib.Nifti1Image, *, model: str, contrast: str = "T1w", threads: int = 1,
         batch_size: int = 16, device: str = "auto") -> nib.Nifti1Image:
    """Segment an image into 0 BG, 1 CSF, 2 GM, 3 WM with a trained 2-D U-Net.

    image: [X, Y, Z] float; model: the state dict written by :func:`train` (card beside it);
    ``contrast`` must be the one the model was trained on. Returns uint8 [X, Y, Z] labels with
    the affine of ``image``.
    """
    from mrichain.train import select_device

    torch.set_num_threads(int(threads))
    dev = select_device(device)
    net, card = load_model(model, dev)
    trained = card.get("contrast", "T1w")
    if contrast != trained:
        raise ValueError(f"model {model} was trained on {trained} images, asked to segment {contrast}")
    hp = {**_CARD_DEFAULTS, **card["hyper_parameters"]}
    x = normalise(np.asarray(image.dataobj, dtype=np.float32), image.header.get_zooms()[:3], hp["normalisation"])
    seg = _segment(net, x, dev, _multiple(hp), batch_size, context=int(hp["context"]))
    return image_like(seg, image.affine, np.uint8)
