"""Learned tissue segmentation: a 2-D MONAI ``UNet`` on axial slices, 4 classes (BG/CSF/GM/WM).

Why 2-D slices and not 3-D patches: the default config trains on a 2-core CPU in about two
minutes. A 2-D U-Net costs a fraction of a 3-D one per voxel (3x3 instead of 3x3x3 kernels,
2-D feature maps), and every subject gives ~80 axial slices, i.e. hundreds of distinct training
samples from the handful of simulated training subjects, where a 3-D model would see a few
volumes (or overlapping patches of them) per epoch. Tissue contrast is local in-plane, so the
through-plane context a 3-D model would add matters little for CSF/GM/WM at 2-4 mm.

Loss: MONAI ``DiceCELoss`` (softmax, one-hot target). Validation score: mean tissue Dice
(labels 1, 2, 3; :func:`mrichain.metrics.dice`) over the validation volumes.
Intensities are normalised per volume by the 99th percentile of the image.
"""
from __future__ import annotations


import nibabel as nib
import numpy as np
import torch

from mrichain.io import load_image
from mrichain.slices import SliceDataset, image_like, percentile_scale, predict_volume
from mrichain.train.params import split_params

N_CLASSES = 4  # 0 BG, 1 CSF, 2 GM, 3 WM

#: Training parameters and their defaults (loop settings go to ``TrainSettings``, the rest to the card).
DEFAULTS: dict = {
    "epochs": 6,
    "batch_size": 8,
    "lr": 3e-3,
    "weight_decay": 0.0,
    "patience": 3,
    "max_batches_per_epoch": 30,
    "device": "auto",
    "amp": True,
    "grad_clip": 1.0,
    "channels": [16, 32, 64, 128],
    "num_res_units": 1,
    "dropout": 0.0,
    "contrast": "T1w",
    "flips": True,
    "threads": None,
}


def build(hyper_parameters: dict) -> torch.nn.Module:
    """MONAI 2-D ``UNet`` (1 input channel, 4 classes, stride 2 between levels, batch norm)."""
    from monai.networks.nets import UNet

    hp = hyper_parameters
    channels = tuple(int(c) for c in hp["channels"])
    return UNet(spatial_dims=2, in_channels=1, out_channels=N_CLASSES, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=int(hp["num_res_units"]),
                norm="batch", dropout=float(hp.get("dropout", 0.0)))


def _multiple(hp: dict) -> int:
    return 2 ** (len(hp["channels"]) - 1)


def _load_item(item: dict) -> dict[str, np.ndarray]:
    x = np.asarray(load_image(item["input"]).dataobj, dtype=np.float32)
    out = {"input": x / percentile_scale(x)}
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


def _segment(net, x: np.ndarray, device, multiple: int, batch_size: int = 16) -> np.ndarray:
    logits = predict_volume(net, x, batch_size=batch_size, device=device, multiple=multiple)
    return np.argmax(logits, axis=0).astype(np.uint8)


def make_score(multiple: int):
    def score_fn(model, val_data: SliceDataset, device) -> float:
        """Mean Dice over tissues 1-3 and validation volumes (higher is better)."""
        from mrichain.metrics import dice

        scores = []
        for vol in val_data.volumes:
            seg = _segment(model, vol["input"], device, multiple)
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
    hp = {"channels": [int(c) for c in rest["channels"]], "num_res_units": int(rest["num_res_units"]),
          "dropout": float(rest["dropout"]), "in_channels": 1, "out_channels": N_CLASSES}
    multiple = _multiple(hp)
    flips = (0,) if rest["flips"] else ()
    train_ds = SliceDataset(manifest["train"], _load_item, mask_key="target", flip_axes=flips, multiple=multiple)
    val_ds = SliceDataset(manifest["val"], _load_item, mask_key="target", multiple=multiple)
    card = {
        "architecture": "MONAI UNet, 2-D axial slices, 4 classes (0 BG, 1 CSF, 2 GM, 3 WM)",
        "method": "unet",
        "stage": "segment",
        "contrast": str(rest["contrast"]),
        "hyper_parameters": hp,
        "loss": "DiceCELoss(softmax, one-hot target)",
        "augmentation": {"flip_axes": list(flips)},
        "normalisation": "input / 99th percentile of the input volume",
        "training_data_hash": hash_files(paths),
        "n_volumes": {"train": len(manifest["train"]), "val": len(manifest["val"])},
        "n_slices": {"train": len(train_ds), "val": len(val_ds)},
    }
    seed_everything(seed)
    model = build(hp)
    return fit(model, train_ds, val_ds, loss_fn=make_loss(), score_fn=make_score(multiple),
               settings=settings, out_path=out_path, card=card, score_name="dice_mean",
               on_epoch_end=on_epoch_end, progress=progress)


def load_model(model: str, device="cpu") -> tuple[torch.nn.Module, dict]:
    """The trained net (eval mode, on ``device``) and its card, from ``model`` (.pt) + its .json.
    The card's hyper-parameters are checked against the method's declared params
    (:func:`mrichain.train.params.check_hyper_parameters`) before the network is built."""
    from pathlib import Path

    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    defaults = {"channels": DEFAULTS["channels"], "num_res_units": DEFAULTS["num_res_units"],
                "dropout": DEFAULTS["dropout"], "in_channels": 1, "out_channels": N_CLASSES}
    card = Path(model).with_suffix(".json")
    return load_trained(model, lambda hp: build(check_hyper_parameters(
        card, hp, "segment", "unet", defaults, extra={"in_channels": {"const": 1}, "out_channels": {"const": N_CLASSES}},
        required=("channels", "num_res_units"))), device)


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
    x = np.asarray(image.dataobj, dtype=np.float32)
    seg = _segment(net, x / percentile_scale(x), dev, _multiple(card["hyper_parameters"]), batch_size)
    return image_like(seg, image.affine, np.uint8)
