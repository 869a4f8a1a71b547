"""Receive-coil sensitivity maps for a head array."""
from __future__ import annotations

import numpy as np


def sensitivity_maps(shape: tuple[int, int, int], n_coils: int, affine: np.ndarray) -> np.ndarray:
    """Smooth complex coil sensitivities, complex64 [C, X, Y, Z], with sum_c |S_c|^2 = 1 everywhere.

    ``n_coils`` loop coils sit evenly on a ring in the axial plane through the centre of the field
    of view (radius 0.6 x the larger in-plane extent, i.e. just outside the head); even coils
    alternate +-15 % of the z extent above and below the centre for some z variation. Magnitude
    follows the on-axis field of a loop, (1 + (d/r0)^2)^(-3/2) with d the distance to the coil and
    r0 a third of the ring radius; phase is the coil's azimuth plus a gentle linear ramp across the
    head (smooth, distinct per coil). Deterministic: no random draws.
    """
    aff = np.asarray(affine, dtype=np.float64)
    ijk = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    xyz = ijk @ aff[:3, :3].T + aff[:3, 3]  # [X, Y, Z, 3] mm
    lo, hi = xyz.reshape(-1, 3).min(0), xyz.reshape(-1, 3).max(0)
    centre = (lo + hi) / 2
    ext = hi - lo
    radius = 0.6 * max(ext[0], ext[1])
    r0 = radius / 3.0
    rel = xyz - centre
    maps = np.empty((n_coils, *shape), dtype=np.complex128)
    for c in range(n_coils):
        th = 2 * np.pi * c / n_coils
        pos = np.array([radius * np.cos(th), radius * np.sin(th), (0.15 if c % 2 else -0.15) * ext[2] * (n_coils > 1)])
        d = np.sqrt(((rel - pos) ** 2).sum(-1))
        mag = (1 + (d / r0) ** 2) ** -1.5
        phase = th + 0.5 * np.pi * (rel @ np.array([np.sin(th), -np.cos(th), 0.3])) / radius
        maps[c] = mag * np.exp(1j * phase)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    return maps.astype(np.complex64)
