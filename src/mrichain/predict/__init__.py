"""Brain-age prediction methods (declared in :mod:`mrichain.stages`, stage ``predict``).

Volume methods (``METHODS``: they read segmentations, or nothing, as the ``mean`` floor) are modules with ``fit(volumes: list[dict],
ages: list[float], **params) -> model: dict`` (JSON-serialisable) and ``predict(model: dict,
volumes: list[dict]) -> np.ndarray`` (float64 [n], years); ``volumes`` are dicts from
:func:`tissue_volumes` (``csf_ml, gm_ml, wm_ml, icv_ml``).

Image methods (``IMAGE_METHODS``: they read images; learned) are functions ``(model, image_paths,
*, mc_samples, interval, seed) -> pandas.DataFrame`` (predicted_age, predicted_lower,
predicted_upper; one row per path), trained by ``TRAINERS[name](manifest, params, out_path, seed)
-> mrichain.train.FitResult``.
"""
from __future__ import annotations

from mrichain.predict.volumes import tissue_volumes
from mrichain.stages import Registry, method_registry, trainer_registry

METHODS: Registry = method_registry("predict", where=lambda m: "images" not in (m.reads or {}))
IMAGE_METHODS: Registry = method_registry("predict", where=lambda m: "images" in (m.reads or {}))
TRAINERS: Registry = trainer_registry("predict")

__all__ = ["IMAGE_METHODS", "METHODS", "TRAINERS", "tissue_volumes"]
