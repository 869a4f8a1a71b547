"""Learned brain age from tissue volume fractions: a small ensemble of MLPs trained by the engine.

The well-posed learned rival of the linear model. An image CNN (:mod:`mrichain.predict.sfcn`)
must discover from a few dozen images that the age signal is the CSF's share of the brain (atrophy
widens the ventricles and turns cortical GM into CSF); with that few training subjects it cannot.
This model reads the same features as the linear model, the volume fractions of ICV of the
segmentation chosen by ``segment.feed`` (:func:`mrichain.predict.volumes.tissue_volumes`:
``csf``, ``gm``, ``wm``, ``ventricle``), and may learn a non-linear map from them.

Network: per member, ``Linear(n_features, hidden) - tanh - Linear(hidden, 1)``; the prediction is
``age_mean + age_sd * mean over members``, with the features standardised by the training
subjects' mean and SD (stored in the weights as buffers, so inference needs only the .pt and card).
The output layers start at zero, so the untrained network predicts the training mean for everyone:
epoch 0 is the ``mean`` floor, and the card's ``beats_start`` says whether training beat it on val.

Training (small-data regression as scikit-learn's MLPRegressor does it: full-batch steps, weight
decay as the L2 penalty): mean squared error on standardised ages, AdamW with weight decay
``weight_decay`` on every weight, a cosine schedule, every training subject in one batch, the epoch
selected by the val MAE (years; the val split includes the age subjects of split ``val``,
:func:`mrichain.simulate.cohort.age_splits`). ``ensemble`` members from independent
initialisations are averaged: with tens of subjects one MLP's fit depends on its initialisation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

ARCHITECTURE = "tissue-fraction-mlp-ensemble"

DEFAULT_HYPER = {"hidden": 16, "features": ["csf", "gm", "wm", "ventricle"], "ensemble": 8}
DEFAULT_LOOP = {"epochs": 400, "lr": 1e-2, "batch_size": 4096, "patience": 400, "max_batches_per_epoch": None,
                "weight_decay": 1e-2, "grad_clip": None, "schedule": "cosine"}


class TissueMLP(torch.nn.Module):
    """Age (years) [B] from raw volume fractions [B, F]: standardise, ``ensemble`` MLPs, average, rescale."""

    def __init__(self, n_features: int, hidden: int = 16, ensemble: int = 8):
        super().__init__()
        self.first = torch.nn.Parameter(torch.empty(ensemble, n_features, hidden))
        self.first_bias = torch.nn.Parameter(torch.zeros(ensemble, 1, hidden))
        self.second = torch.nn.Parameter(torch.zeros(ensemble, hidden, 1))  # zero: the untrained net is the mean
        self.second_bias = torch.nn.Parameter(torch.zeros(ensemble, 1, 1))
        for k in range(ensemble):  # per member: Glorot, as for tanh
            torch.nn.init.xavier_uniform_(self.first.data[k])
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_std", torch.ones(n_features))
        self.register_buffer("age_mean", torch.zeros(()))
        self.register_buffer("age_std", torch.ones(()))

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised age predictions [B] (the ensemble's mean, before rescaling)."""
        z = ((x - self.x_mean) / self.x_std).unsqueeze(0)  # [1, B, F]
        h = torch.tanh(z @ self.first + self.first_bias)  # [E, B, H]
        return (h @ self.second + self.second_bias).mean(dim=0)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.age_mean + self.age_std * self.standardised(x)


def fractions(volumes: list[dict], features) -> np.ndarray:
    """[n_subjects, n_features] float32: ``{f}_ml / icv_ml`` per subject (dicts of
    :func:`mrichain.predict.volumes.tissue_volumes`)."""
    from mrichain.predict.linear import volume_fractions

    return volume_fractions(volumes, features).astype(np.float32)


def _label_volumes(paths) -> list[dict]:
    from mrichain.io import load_image
    from mrichain.predict.volumes import tissue_volumes

    return [tissue_volumes(load_image(p)) for p in paths]


def build_model(hyper: dict) -> TissueMLP:
    return TissueMLP(len(hyper["features"]), int(hyper["hidden"]), int(hyper["ensemble"]))


def _loss(model, batch, device):
    x, age = (t.to(device) for t in batch)
    target = (age - model.age_mean) / model.age_std
    return torch.mean((model.standardised(x) - target) ** 2)


def _neg_mae(model, data: TensorDataset, device) -> float:
    x, age = (t.to(device) for t in data.tensors)
    model.eval()
    with torch.no_grad():
        return -float(torch.mean(torch.abs(model(x) - age)))


def train(manifest: dict, params: dict, out_path: str, seed: int = 0, *, on_epoch_end=None, progress: bool = True):
    """Train on ``manifest = {"train": [{"labels", "age"}], "val": [...]}`` (label maps 0 BG, 1 CSF,
    2 GM, 3 WM; ages in years); write .pt, card, curve. Validation score: minus the val MAE (years).

    params: loop keys (``TrainSettings`` fields; defaults ``DEFAULT_LOOP``) and ``hidden``,
    ``features``, ``ensemble`` (``DEFAULT_HYPER``).
    """
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.params import hyper_parameters, split_params

    settings, rest = split_params(params, {**DEFAULT_LOOP, **DEFAULT_HYPER}, seed, "mlp")
    hyper = hyper_parameters(rest, DEFAULT_HYPER)
    hyper["features"] = list(hyper["features"])
    if len(manifest["train"]) < 2 or not manifest["val"]:
        raise ValueError(f"mlp needs >= 2 train and >= 1 val subjects, got {len(manifest['train'])} "
                         f"and {len(manifest['val'])}")

    def dataset(items):
        x = fractions(_label_volumes([it["labels"] for it in items]), hyper["features"])
        return TensorDataset(torch.from_numpy(x), torch.tensor([float(it["age"]) for it in items]))

    train_ds, val_ds = dataset(manifest["train"]), dataset(manifest["val"])
    x, ages = train_ds.tensors
    seed_everything(int(seed))
    model = build_model(hyper)
    model.x_mean.copy_(x.mean(dim=0))
    model.x_std.copy_(x.std(dim=0).clamp_min(1e-6))
    model.age_mean.copy_(ages.mean())
    model.age_std.copy_(ages.std().clamp_min(1e-6))
    card = {
        "architecture": ARCHITECTURE,
        "hyper_parameters": hyper,
        "features": {"names": hyper["features"], "definition": "volume_ml / icv_ml"},
        "target": {"name": "age_years", "mean": float(ages.mean()), "std": float(ages.std())},
        "training_data_hash": hash_files([it["labels"] for it in [*manifest["train"], *manifest["val"]]]),
        "training_ages": [float(a) for a in ages],
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "selection": "val MAE (years); epoch 0 predicts the training mean",
        "description": "ensemble of one-hidden-layer tanh MLPs on standardised tissue volume fractions, "
                       "MSE on standardised age, full-batch AdamW",
    }
    return fit(model, train_ds, val_ds, loss_fn=_loss, score_fn=_neg_mae, settings=settings, out_path=out_path,
               card=card, score_name="neg_mae_years", on_epoch_end=on_epoch_end, progress=progress)


def load_model(model: str | Path) -> tuple[TissueMLP, dict]:
    """Rebuild the network from the card beside ``model`` (hyper-parameters checked against the
    declared params first) and load its weights."""
    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    card = Path(model).with_suffix(".json")
    return load_trained(model, lambda hp: build_model(check_hyper_parameters(card, hp, "predict", "mlp",
                                                                            DEFAULT_HYPER)),
                        "cpu", DEFAULT_HYPER)


def predict_labels(model: str, label_paths: list[str]):
    """Brain age (years) of each label map: a pandas DataFrame, one row per path (index ``labels``),
    columns ``labels``, ``predicted_age`` and the volumes it read (``{f}_ml``, ``icv_ml``)."""
    import pandas as pd

    net, card = load_model(model)
    features = list({**DEFAULT_HYPER, **card.get("hyper_parameters", {})}["features"])
    volumes = _label_volumes(label_paths)
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(fractions(volumes, features))).double().numpy()
    table = pd.DataFrame({"labels": [str(p) for p in label_paths], "predicted_age": pred})
    for key in sorted(volumes[0]) if volumes else []:
        table[key] = [v[key] for v in volumes]
    return table.set_index("labels", drop=False)
