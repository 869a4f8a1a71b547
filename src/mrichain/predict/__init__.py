"""Brain-age prediction methods: ``METHODS[name]`` exposes ``fit`` and ``predict``.

``METHODS[name].fit(volumes: list[dict], ages: list[float], **params) -> model: dict`` (JSON-
serialisable) and ``METHODS[name].predict(model: dict, volumes: list[dict]) -> np.ndarray``
(float64 [n], years). ``volumes`` are dicts from :func:`tissue_volumes`
(``csf_ml, gm_ml, wm_ml, icv_ml``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mrichain.predict import linear
from mrichain.predict.volumes import tissue_volumes


@dataclass(frozen=True)
class Predictor:
    """A prediction method: a ``fit`` function returning a model dict and a ``predict`` function."""

    fit: Callable[..., dict]
    predict: Callable


METHODS: dict[str, Predictor] = {"linear": Predictor(fit=linear.fit, predict=linear.predict)}

# Image-based learned methods: ``IMAGE_METHODS[name](model, image_paths, *, mc_samples, interval,
# seed) -> pandas.DataFrame`` (predicted_age, predicted_lower, predicted_upper; one row per path),
# trained by ``TRAINERS[name](manifest, params, out_path, seed) -> mrichain.train.FitResult``.
from mrichain.methods import Registry  # noqa: E402

IMAGE_METHODS: Registry = Registry({"sfcn": "mrichain.predict.sfcn:predict_images"})
TRAINERS: Registry = Registry({"sfcn": "mrichain.predict.sfcn:train"})

__all__ = ["IMAGE_METHODS", "METHODS", "Predictor", "TRAINERS", "tissue_volumes"]
