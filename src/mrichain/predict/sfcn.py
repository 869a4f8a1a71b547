"""Learned brain age: a small SFCN-like 3-D CNN with Monte-Carlo dropout and a heteroscedastic head.

Network (after Peng et al. 2021, "Accurate brain age prediction with lightweight deep neural
networks", shrunk for a CPU and a cohort of 7-20 subjects): ``len(channels)`` blocks of
conv3x3x3-BatchNorm-ReLU-maxpool2 (the last block without pooling), a 1x1x1 conv-BN-ReLU, global
average pooling, dropout, and a linear layer giving two numbers: the mean ``mu`` and the log
variance ``log s^2`` of the standardised age (aleatoric / heteroscedastic part, Kendall & Gal
2017). Loss: Gaussian negative log-likelihood (``torch.nn.GaussianNLLLoss``); with
``heteroscedastic: false`` the head gives only ``mu`` and the loss is the MSE.

Input: the (denoised) T1w image resampled to ``voxel_mm`` (4 mm) isotropic in world space
(linear), centre-padded/cropped to ``input_shape``, divided by the 99th percentile of the
non-zero voxels and clipped to [0, 1.5]. Target: age standardised with the training mean/std
(stored in the card). Augmentation (torch RNG, re-seeded per epoch by the engine): random
left-right flip and random integer shifts of up to ``max_shift`` voxels per axis.

Uncertainty: ``mc_samples`` stochastic passes with dropout on (BatchNorm in eval mode). Each pass
t gives ``mu_t, s_t``; the predictive distribution is the mixture of N(mu_t, s_t^2) (epistemic
spread of ``mu_t`` + aleatoric ``s_t``), sampled (``draws`` per pass, seeded) and summarised by its
mean (``predicted_age``) and central ``interval`` quantiles (``predicted_lower``/``_upper``).
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

ARCHITECTURE = "sfcn-small-mcdropout"

DEFAULT_HYPER = {
    "channels": [8, 16, 32, 32],
    "dropout": 0.3,
    "voxel_mm": 4.0,
    "input_shape": [44, 52, 44],
    "heteroscedastic": True,
    "max_shift": 2,
    "flip": True,
}
DEFAULT_LOOP = {"epochs": 25, "lr": 3e-3, "batch_size": 4, "patience": 10, "max_batches_per_epoch": None,
                "weight_decay": 1e-3, "grad_clip": 1.0}


# --------------------------------------------------------------------------------------- model
class SFCN(torch.nn.Module):
    """Small SFCN. forward(x [B, 1, X, Y, Z]) -> [B, 2] (mu, log variance) or [B, 1] (mu)."""

    def __init__(self, channels=(8, 16, 32, 32), dropout: float = 0.3, heteroscedastic: bool = True):
        super().__init__()
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            layers += [torch.nn.Conv3d(c_in, int(c), 3, padding=1, bias=False), torch.nn.BatchNorm3d(int(c)),
                       torch.nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(torch.nn.MaxPool3d(2))
            c_in = int(c)
        layers += [torch.nn.Conv3d(c_in, c_in, 1, bias=False), torch.nn.BatchNorm3d(c_in), torch.nn.ReLU(inplace=True)]
        self.features = torch.nn.Sequential(*layers)
        self.dropout = torch.nn.Dropout(float(dropout))
        self.heteroscedastic = bool(heteroscedastic)
        self.head = torch.nn.Linear(c_in, 2 if self.heteroscedastic else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3, 4))
        return self.head(self.dropout(h))


def build_model(hyper: dict) -> SFCN:
    return SFCN(channels=hyper["channels"], dropout=hyper["dropout"], heteroscedastic=hyper["heteroscedastic"])


def split_output(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mu [B], log variance [B] clamped to [-7, 3], or None)."""
    if out.shape[1] == 1:
        return out[:, 0], None
    return out[:, 0], out[:, 1].clamp(-7.0, 3.0)


# ------------------------------------------------------------------------------------ data prep
def prepare_image(img: nib.Nifti1Image | str | Path, voxel_mm: float, shape) -> np.ndarray:
    """Image -> float32 [*shape]: resampled to ``voxel_mm`` isotropic, centre pad/crop, normalised."""
    from nibabel.processing import resample_to_output

    from mrichain.io import load_image

    if not isinstance(img, nib.Nifti1Image):
        img = load_image(img)
    data = np.asarray(img.dataobj, dtype=np.float32)
    zooms = np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(zooms, voxel_mm, atol=1e-3):
        img = resample_to_output(nib.Nifti1Image(data, img.affine), voxel_sizes=(voxel_mm,) * 3, order=1)
        data = np.asarray(img.dataobj, dtype=np.float32)
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.float32)
    src, dst = [], []
    for n, m in zip(data.shape, out.shape):
        if n >= m:
            a = (n - m) // 2
            src.append(slice(a, a + m))
            dst.append(slice(0, m))
        else:
            a = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(a, a + n))
    out[tuple(dst)] = data[tuple(src)]
    nz = out[out > 0]
    scale = float(np.percentile(nz, 99)) if nz.size else 1.0
    return np.clip(out / max(scale, 1e-6), 0.0, 1.5).astype(np.float32)


class AgeDataset(Dataset):
    """Preprocessed images [1, X, Y, Z] and standardised ages; optional flip/shift augmentation."""

    def __init__(self, items: list[dict], hyper: dict, age_mean: float, age_std: float, augment: bool):
        self.x = [torch.from_numpy(prepare_image(it["image"], hyper["voxel_mm"], hyper["input_shape"]))[None]
                  for it in items]
        self.age = torch.tensor([float(it["age"]) for it in items], dtype=torch.float32)
        self.y = (self.age - age_mean) / age_std
        self.augment, self.max_shift, self.flip = augment, int(hyper["max_shift"]), bool(hyper["flip"])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if self.augment:  # global torch RNG: re-seeded per epoch by mrichain.train.fit
            if self.flip and torch.rand(()) < 0.5:
                x = torch.flip(x, dims=(1,))  # left-right (RAS axis 0)
            if self.max_shift > 0:
                shifts = torch.randint(-self.max_shift, self.max_shift + 1, (3,)).tolist()
                x = torch.roll(x, shifts=shifts, dims=(1, 2, 3))
        return x, self.y[i]


# ------------------------------------------------------------------------------------- training
class AgeLoss:
    def __init__(self):
        self.nll = torch.nn.GaussianNLLLoss(full=False, eps=1e-6)

    def __call__(self, model, batch, device):
        x, y = (t.to(device) for t in batch)
        mu, logvar = split_output(model(x))
        if logvar is None:
            return F.mse_loss(mu, y)
        return self.nll(mu, y, logvar.exp())


def _neg_mae(age_mean: float, age_std: float):
    def score(model, data: AgeDataset, device) -> float:
        model.eval()
        x = torch.stack(data.x).to(device)
        mu, _ = split_output(model(x))
        pred = mu.cpu().double() * age_std + age_mean
        return -float((pred - data.age.double()).abs().mean())

    return score


def train(manifest: dict, params: dict, out_path: str, seed: int = 0, *, on_epoch_end=None, progress: bool = True):
    """Train on ``manifest = {"train": [{"image", "age"}], "val": [...]}``; write .pt, card, curve.

    params: loop keys (``epochs, lr, batch_size, patience, max_batches_per_epoch, weight_decay,
    grad_clip``) and model keys (``channels, dropout, voxel_mm, input_shape, heteroscedastic,
    max_shift, flip``); defaults in ``DEFAULT_LOOP``/``DEFAULT_HYPER``. Validation score: -MAE (years).
    """
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.params import hyper_parameters, split_params

    settings, rest = split_params(params, {**DEFAULT_LOOP, **DEFAULT_HYPER}, seed, "sfcn")
    hyper = hyper_parameters(rest, DEFAULT_HYPER)
    ages = np.array([float(it["age"]) for it in manifest["train"]])
    age_mean = float(ages.mean())
    age_std = float(ages.std()) if len(ages) > 1 and ages.std() > 0 else 1.0
    train_ds = AgeDataset(manifest["train"], hyper, age_mean, age_std, augment=True)
    val_ds = AgeDataset(manifest["val"], hyper, age_mean, age_std, augment=False)
    paths = [it["image"] for it in list(manifest["train"]) + list(manifest["val"])]
    card = {
        "architecture": ARCHITECTURE,
        "hyper_parameters": hyper,
        "target": {"name": "age_years", "mean": age_mean, "std": age_std},
        "training_data_hash": hash_files(paths),
        "training_ages": [float(it["age"]) for it in manifest["train"]],
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "description": "small SFCN (conv-BN-ReLU-maxpool blocks, GAP, dropout, linear -> mean, log variance); "
                       "Gaussian NLL; MC dropout + aleatoric variance at inference",
    }
    seed_everything(int(seed))
    model = build_model(hyper)
    return fit(model, train_ds, val_ds, loss_fn=AgeLoss(), score_fn=_neg_mae(age_mean, age_std), settings=settings,
               out_path=out_path, card=card, score_name="neg_mae_years", on_epoch_end=on_epoch_end,
               progress=progress)


# ------------------------------------------------------------------------------------ inference
def load_model(model: str | Path) -> tuple[SFCN, dict]:
    """Rebuild the network from the card JSON beside ``model`` and load its state dict.
    The card's hyper-parameters are checked against the method's declared params
    (:func:`mrichain.train.params.check_hyper_parameters`) before the network is built."""
    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    card = Path(model).with_suffix(".json")
    return load_trained(model, lambda hp: build_model(check_hyper_parameters(card, hp, "predict", "sfcn", DEFAULT_HYPER)),
                        "cpu", DEFAULT_HYPER)


def mc_predict(net: SFCN, x: torch.Tensor, mc_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``mc_samples`` passes with dropout on, BatchNorm frozen: (mu [T, B], sigma [T, B]) standardised."""
    net.eval()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    mus, sigmas = [], []
    try:
        with torch.no_grad():
            feats = net.features(x).mean(dim=(2, 3, 4))  # deterministic part, computed once
            for _ in range(max(1, int(mc_samples))):
                mu, logvar = split_output(net.head(net.dropout(feats)))
                mus.append(mu.numpy())
                sigmas.append(np.zeros_like(mu.numpy()) if logvar is None else (0.5 * logvar).exp().numpy())
    finally:
        torch.random.set_rng_state(gen_state)
        net.eval()
    return np.stack(mus), np.stack(sigmas)


def predict_images(model: str, image_paths: list[str], *, mc_samples: int = 30, interval: float = 0.9, seed: int = 0,
                   draws: int = 200):
    """Brain age of each image with a predictive interval (MC dropout + aleatoric variance).

    Returns a pandas DataFrame, one row per path (index = ``image``), columns ``predicted_age``
    (mean of the predictive mixture, years), ``predicted_lower`` / ``predicted_upper`` (its
    (1 - interval)/2 and (1 + interval)/2 quantiles), ``epistemic_sd`` and ``aleatoric_sd`` (years).
    """
    import pandas as pd

    net, card = load_model(model)
    hyper = {**DEFAULT_HYPER, **card.get("hyper_parameters", {})}
    mean, std = float(card["target"]["mean"]), float(card["target"]["std"])
    x = torch.stack([torch.from_numpy(prepare_image(p, hyper["voxel_mm"], hyper["input_shape"]))[None]
                     for p in image_paths])
    mu, sigma = mc_predict(net, x, mc_samples, seed)  # [T, B]
    rng = np.random.default_rng(int(seed))
    samples = mu[None] + sigma[None] * rng.standard_normal((int(draws),) + mu.shape)  # [D, T, B]
    samples = samples.reshape(-1, mu.shape[1]) * std + mean
    q = (1.0 - float(interval)) / 2.0
    lower, upper = np.quantile(samples, [q, 1.0 - q], axis=0)
    return pd.DataFrame({
        "image": [str(p) for p in image_paths],
        "predicted_age": samples.mean(axis=0),
        "predicted_lower": lower,
        "predicted_upper": upper,
        "epistemic_sd": mu.std(axis=0) * std,
        "aleatoric_sd": np.sqrt((sigma ** 2).mean(axis=0)) * std,
    }).set_index("image", drop=False)
