"""The brain-age floor: every subject is predicted the mean age of the train split.

Its MAE is what a model learns nothing from the images would score; a brain-age model that does
not beat it clearly has learned nothing. Same ``fit``/``predict`` shape as the volume methods
(:mod:`mrichain.predict`); it reads no features.
"""
from __future__ import annotations

import numpy as np


def fit(volumes: list[dict], ages: list[float]) -> dict:
    """ages: years, one per train subject (``volumes`` are ignored). Returns ``{'method': 'mean',
    'mean_age', 'n_train'}``."""
    if len(ages) < 1:
        raise ValueError("need at least one train subject's age")
    return {"method": "mean", "mean_age": float(np.mean(ages)), "n_train": len(ages)}


def predict(model: dict, volumes: list[dict]) -> np.ndarray:
    """float64 [len(volumes)]: the train mean age for everyone (years)."""
    return np.full(len(volumes), float(model["mean_age"]))
