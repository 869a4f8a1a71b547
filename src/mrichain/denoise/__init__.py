"""Denoising methods: ``METHODS[name](image, **params) -> image``.

image: nib.Nifti1Image float [X, Y, Z]; returns float32 nib.Nifti1Image on the same grid/affine.
Learned methods (``TRAINERS``) also take ``model=<state dict .pt>`` (its card JSON beside it).
"""
from __future__ import annotations

from mrichain.plan.stages import Registry, method_registry, trainer_registry

METHODS: Registry = method_registry("denoise")  # declared in mrichain.plan.stages

#: Learned methods: ``TRAINERS[name](manifest, params, out_path, seed) -> mrichain.train.FitResult``;
#: the method then takes ``model=out_path``.
TRAINERS: Registry = trainer_registry("denoise")
