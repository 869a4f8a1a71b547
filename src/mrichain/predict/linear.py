"""Brain age from tissue volume fractions: a ridge-regularised linear model (scikit-learn).

Why Ridge and not plain least squares: the default features (CSF, GM, WM as fractions of ICV)
sum to 1, so with an intercept they are exactly collinear and ordinary least squares has no
unique solution. A small ridge penalty on standardised features picks the unique minimum-norm-like
solution, is stable across folds, and with alpha = 1e-3 (vs. n samples of unit-variance
features) shrinks predictions negligibly.

Features are ``{name}_ml / icv_ml`` for any volume :func:`mrichain.predict.volumes.tissue_volumes`
returns: ``csf``, ``gm``, ``wm`` and ``ventricle`` (the deep CSF). On segmentations the GM/WM split
is the noisiest part (it hinges on a subject's GM/WM contrast) while the CSF and ventricle fractions
carry the age signal (atrophy turns GM into CSF and widens the ventricles), so ``csf`` and
``ventricle`` make the better feature set for small training sets (``csf, gm, wm`` spends two of
its three coefficients on noise).

The model also records how it does in leave-one-out on its own training subjects next to the
training mean's leave-one-out error (``loo_mae_years``, ``mean_loo_mae_years``,
``beats_mean_loo``) and each feature's correlation with age, so a model that has learned nothing
says so in its JSON.
"""
from __future__ import annotations

import numpy as np

ALPHA = 1e-3


def volume_fractions(volumes: list[dict], features) -> np.ndarray:
    """[n_subjects, n_features] float64: ``{f}_ml / icv_ml`` per subject, for each of ``features``."""
    rows = []
    for v in volumes:
        icv = float(v["icv_ml"])
        if icv <= 0:
            raise ValueError(f"icv_ml must be positive, got {icv}")
        missing = [f for f in features if f"{f}_ml" not in v]
        if missing:
            raise KeyError(f"volumes lack {', '.join(f + '_ml' for f in missing)} (features {list(features)}); "
                           f"they have {sorted(v)}: compute them with mrichain.predict.volumes.tissue_volumes")
        rows.append([float(v[f"{f}_ml"]) / icv for f in features])
    return np.asarray(rows, dtype=np.float64).reshape(len(volumes), len(features))


def _model(alpha: float):
    """Ridge on standardised columns (scikit-learn pipeline; a constant column keeps scale 1)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=float(alpha)))


def _loo_mae(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float]:
    """Leave-one-out MAE (years) of the model and of the training mean; NaN below 3 subjects."""
    from sklearn.dummy import DummyRegressor
    from sklearn.model_selection import LeaveOneOut, cross_val_predict

    if len(y) < 3:
        return float("nan"), float("nan")
    loo = LeaveOneOut()
    pred = cross_val_predict(_model(alpha), x, y, cv=loo)
    pred_mean = cross_val_predict(DummyRegressor(strategy="mean"), x, y, cv=loo)
    return float(np.mean(np.abs(pred - y))), float(np.mean(np.abs(pred_mean - y)))


def fit(volumes: list[dict], ages: list[float], *, features=("csf", "gm", "wm"), alpha: float = ALPHA) -> dict:
    """Fit age (years) ~ volume fractions.

    volumes: one dict per subject with ``{f}_ml`` for each feature and ``icv_ml`` (as from
    :func:`mrichain.predict.volumes.tissue_volumes`); ages: years. Features are ``vol_f / icv``,
    standardised for the fit; the returned coefficients act on raw fractions.
    Returns a JSON-serialisable model: ``{'method': 'linear', 'estimator': 'sklearn.Ridge',
    'alpha', 'features', 'feature_definition', 'coef' (per feature, years per unit fraction),
    'intercept' (years), 'n_train', 'train_mae_years', 'loo_mae_years', 'mean_loo_mae_years',
    'beats_mean_loo', 'feature_age_correlation' (per feature)}``: the leave-one-out errors are over the
    training subjects (NaN, and ``beats_mean_loo`` False, below 3 of them).
    """
    features = list(features)
    X = volume_fractions(volumes, features)
    y = np.asarray(ages, dtype=np.float64)
    if len(y) != X.shape[0] or len(y) < 2:
        raise ValueError(f"need >= 2 subjects with one age each, got {X.shape[0]} volumes and {len(y)} ages")
    pipe = _model(alpha).fit(X, y)
    scaler, reg = pipe[0], pipe[-1]
    coef = reg.coef_ / scaler.scale_  # on raw fractions
    intercept = float(reg.intercept_ - np.dot(coef, scaler.mean_))
    loo, loo_mean = _loo_mae(X, y, alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = [float(np.corrcoef(X[:, j], y)[0, 1]) if np.std(X[:, j]) > 0 and np.std(y) > 0 else float("nan")
                for j in range(X.shape[1])]
    model = {
        "method": "linear",
        "estimator": "sklearn.linear_model.Ridge (standardised features)",
        "alpha": float(alpha),
        "features": features,
        "feature_definition": "volume_ml / icv_ml",
        "coef": [float(c) for c in coef],
        "intercept": intercept,
        "n_train": int(len(y)),
        "loo_mae_years": loo,
        "mean_loo_mae_years": loo_mean,
        "beats_mean_loo": bool(loo < loo_mean),
        "feature_age_correlation": dict(zip(features, corr)),
    }
    model["train_mae_years"] = float(np.mean(np.abs(predict(model, volumes) - y)))
    return model


def predict(model: dict, volumes: list[dict]) -> np.ndarray:
    """Predicted ages in years, float64 [n_subjects], for ``volumes`` (same dicts as :func:`fit`)."""
    X = volume_fractions(volumes, model["features"])
    return X @ np.asarray(model["coef"], dtype=np.float64) + float(model["intercept"])
