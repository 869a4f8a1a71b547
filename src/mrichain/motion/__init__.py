"""Motion: detecting and correcting rigid head motion in k-space (simulated by
:mod:`mrichain.simulate.motion`).

``METHODS[name](kspace, mask, shot, **params) -> (image, scores)``: kspace complex64 [S, C, H, W]
(unacquired lines zero), mask float32 [W] or None, shot int [W] (the shot of every line, from the
sequence); image float32 [S, H, W] (the corrected magnitude, on the scale of the zero-filled
root-sum-of-squares), scores float64 [n_shots] (each shot's detection score, higher = more likely
moved). Declared in :data:`mrichain.plan.stages.MOTION_STAGE`.
"""
from __future__ import annotations

from mrichain.plan.stages import MOTION, Registry, method_registry

METHODS: Registry = method_registry(MOTION)

__all__ = ["METHODS"]
