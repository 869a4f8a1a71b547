"""Brain-age prediction methods (declared in :mod:`mrichain.plan.stages`, stage ``predict``).

Volume methods (``METHODS``: they read segmentations, or nothing, as the ``mean`` floor) are modules with ``fit(volumes: list[dict],
ages: list[float], **params) -> model: dict`` (JSON-serialisable) and ``predict(model: dict,
volumes: list[dict]) -> np.ndarray`` (float64 [n], years); ``volumes`` are dicts from
:func:`tissue_volumes` (``csf_ml, gm_ml, wm_ml, icv_ml``).

Learned methods (``LEARNED_METHODS``: an image CNN reading images, an MLP reading segmentations)
are functions ``(model, paths, **infer) -> pandas.DataFrame`` (predicted_age[, predicted_lower,
predicted_upper]; one row per path), ``paths`` what the method declares it reads (``images`` or
``labels``), trained by ``TRAINERS[name](manifest, params, out_path, seed) -> mrichain.train.FitResult``.
"""
from __future__ import annotations

from mrichain.predict.volumes import tissue_volumes
from mrichain.plan.stages import Registry, method_registry, trainer_registry

METHODS: Registry = method_registry("predict", where=lambda m: not m.learned)
LEARNED_METHODS: Registry = method_registry("predict", where=lambda m: m.learned)
TRAINERS: Registry = trainer_registry("predict")

__all__ = ["LEARNED_METHODS", "METHODS", "TRAINERS", "tissue_volumes"]
