"""Smooth multiplicative bias (B1 receive/transmit inhomogeneity) field."""
from __future__ import annotations

import numpy as np

from mrichain.simulate.warp import smooth_random_field


def bias_field(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    max_amplitude: float,
    smoothness_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A smooth random bias field, float32 [X, Y, Z], values in [1 - a, 1 + a] (a = ``max_amplitude``).

    A Gaussian random field of correlation length ``smoothness_mm`` (tens of mm: only the lowest
    spatial frequencies across a head survive), centred and scaled so its largest deviation from 1
    is exactly ``max_amplitude``.
    """
    voxel_mm = float(np.abs(np.linalg.det(np.asarray(affine)[:3, :3])) ** (1 / 3))
    f = smooth_random_field(shape, voxel_mm, smoothness_mm, rng, n=1)[0]
    f -= f.mean()
    peak = float(np.abs(f).max())
    if peak == 0 or max_amplitude <= 0:
        return np.ones(shape, np.float32)
    return (1.0 + max_amplitude * f / peak).astype(np.float32)
