"""Segmentation methods: ``METHODS[name](image, **params) -> labels``.

image: nib.Nifti1Image float [X, Y, Z]; returns uint8 nib.Nifti1Image labels on the same grid
(0 BG, 1 CSF, 2 GM, 3 WM; see ``mrichain.LABELS``).
Learned methods (``TRAINERS``) also take ``model=<state dict .pt>`` (its card JSON beside it).
"""
from __future__ import annotations

from mrichain.segment.brainmask import brain_mask
from mrichain.plan.stages import Registry, method_registry, trainer_registry

METHODS: Registry = method_registry("segment")  # declared in mrichain.plan.stages

#: Learned methods: ``TRAINERS[name](manifest, params, out_path, seed) -> mrichain.train.FitResult``;
#: the method then takes ``model=out_path``.
TRAINERS: Registry = trainer_registry("segment")

__all__ = ["METHODS", "TRAINERS", "brain_mask"]
