"""Brain age from tissue volume fractions: a ridge-regularised linear model (scikit-learn).

Why Ridge and not plain least squares: the default features (CSF, GM, WM as fractions of ICV)
sum to 1, so with an intercept they are exactly collinear and ordinary least squares has no
unique solution. A small ridge penalty on standardised features picks the unique minimum-norm-like
solution, is stable across folds, and with alpha = 1e-3 (vs. n samples of unit-variance
features) shrinks predictions negligibly.
"""
from __future__ import annotations

import numpy as np

ALPHA = 1e-3


def _features(volumes: list[dict], features) -> np.ndarray:
    rows = []
    for v in volumes:
        icv = float(v["icv_ml"])
        if icv <= 0:
            raise ValueError(f"icv_ml must be positive, got {icv}")
        rows.append([float(v[f"{f}_ml"]) / icv for f in features])
    return np.asarray(rows, dtype=np.float64).reshape(len(volumes), len(features))


def fit(volumes: list[dict], ages: list[float], *, features=("csf", "gm", "wm"), alpha: float = ALPHA) -> dict:
    """Fit age (years) ~ volume fractions.

    volumes: one dict per subject with ``{f}_ml`` for each feature and ``icv_ml`` (as from
    :func:`mrichain.predict.volumes.tissue_volumes`); ages: years. Features are ``vol_f / icv``,
    standardised for the fit; the returned coefficients act on raw fractions.
    Returns a JSON-serialisable model: ``{'method': 'linear', 'estimator': 'sklearn.Ridge',
    'alpha', 'features', 'feature_definition', 'coef' (per feature, years per unit fraction),
    'intercept' (years), 'n_train', 'train_mae_years'}``.
    """
    from sklearn.linear_model import Ridge

    features = list(features)
    X = _features(volumes, features)
    y = np.asarray(ages, dtype=np.float64)
    if len(y) != X.shape[0] or len(y) < 2:
        raise ValueError(f"need >= 2 subjects with one age each, got {X.shape[0]} volumes and {len(y)} ages")
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    reg = Ridge(alpha=float(alpha)).fit((X - mu) / sd, y)
    coef = reg.coef_ / sd
    intercept = float(reg.intercept_ - np.dot(coef, mu))
    model = {
        "method": "linear",
        "estimator": "sklearn.linear_model.Ridge (standardised features)",
        "alpha": float(alpha),
        "features": features,
        "feature_definition": "volume_ml / icv_ml",
        "coef": [float(c) for c in coef],
        "intercept": intercept,
        "n_train": int(len(y)),
    }
    model["train_mae_years"] = float(np.mean(np.abs(predict(model, volumes) - y)))
    return model


def predict(model: dict, volumes: list[dict]) -> np.ndarray:
    """Predicted ages in years, float64 [n_subjects], for ``volumes`` (same dicts as :func:`fit`)."""
    X = _features(volumes, model["features"])
    return X @ np.asarray(model["coef"], dtype=np.float64) + float(model["intercept"])
