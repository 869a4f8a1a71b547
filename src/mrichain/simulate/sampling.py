"""Cartesian under-sampling masks (fastMRI's mask functions, as MONAI implements them)."""
from __future__ import annotations

import numpy as np

MASK_KINDS = ("random", "equispaced")
_MAX_DRAWS = 64


def _monai_mask(width: int, acceleration: float, center_fraction: float, kind: str, seed: int) -> np.ndarray:
    import torch
    from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask

    cls = {"random": RandomKspaceMask, "equispaced": EquispacedKspaceMask}[kind]
    t = cls(center_fractions=[float(center_fraction)], accelerations=[float(acceleration)],
            spatial_dims=1, is_complex=True)
    t.set_random_state(seed=int(seed) % (2**32))
    t(torch.zeros((1, 1, int(width)), dtype=torch.complex64))
    return np.asarray(t.mask, dtype=np.float32).reshape(-1)


def cartesian_mask(width: int, acceleration: float, center_fraction: float, kind: str, seed: int) -> np.ndarray:
    """Phase-encode line mask, float32 [W] (1 = acquired), from MONAI's ``RandomKspaceMask`` or
    ``EquispacedKspaceMask`` (fastMRI's RandomMaskFunc / EquispacedMaskFunc): round(W * center_fraction)
    central lines always, the rest random or equispaced.

    MONAI's random mask draws each line independently, so on the small widths simulated here its
    realised acceleration scatters widely (about +-15 % at W = 100, R = 4). For ``'random'`` we
    therefore draw MONAI masks with seeds ``seed, seed+1, ...`` and keep the first whose realised
    acceleration is within 5 % of nominal (else the closest of 64 draws): the pattern is still
    MONAI's, conditioned on its line count. ``'equispaced'`` is used as drawn.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
    if acceleration <= 1:
        return np.ones(int(width), np.float32)
    if kind == "equispaced":
        return _monai_mask(width, acceleration, center_fraction, kind, seed)
    best, best_err = None, np.inf
    for k in range(_MAX_DRAWS):
        m = _monai_mask(width, acceleration, center_fraction, kind, int(seed) + k)
        err = abs(measured_acceleration(m) / acceleration - 1)
        if err < best_err:
            best, best_err = m, err
        if err <= 0.05:
            break
    return best


def num_low_frequencies(width: int, center_fraction: float) -> int:
    """Number of fully sampled central lines, round(W * center_fraction) as in fastMRI/MONAI."""
    return int(round(int(width) * float(center_fraction)))


def measured_acceleration(mask: np.ndarray) -> float:
    """Realised acceleration W / (number of acquired lines)."""
    mask = np.asarray(mask).reshape(-1)
    return float(mask.size / max(float((mask > 0).sum()), 1.0))
