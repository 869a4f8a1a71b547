"""Cartesian under-sampling masks: fastMRI's mask functions, as MONAI implements them.

:func:`fastmri_mask` re-states MONAI's ``RandomKspaceMask`` / ``EquispacedKspaceMask`` mask
construction (``monai.apps.reconstruction.transforms.array``, itself fastMRI's
``RandomMaskFunc`` / ``EquispacedMaskFunc``) in numpy, draw for draw from the same
``numpy.random.RandomState``: importing MONAI and torch cost 3.4 s per acquisition job here, more
than the acquisition itself (measured: R4 acquire jobs 5.5 s vs R1 1.9 s in the default run).
``tests/test_sampling.py`` checks the masks are identical to MONAI's for many seeds, widths,
accelerations and centre fractions, so a MONAI change that breaks the equivalence fails a test.
"""
from __future__ import annotations

import numpy as np

MASK_KINDS = ("random", "equispaced")
_MAX_DRAWS = 64


def fastmri_mask(width: int, acceleration: float, center_fraction: float, kind: str, seed: int) -> np.ndarray:
    """One mask of MONAI's ``RandomKspaceMask``/``EquispacedKspaceMask`` after
    ``set_random_state(seed=seed % 2**32)``, float32 [W]: round(W * center_fraction) central lines;
    ``random``: each other line with probability (W / R - centre) / (W - centre); ``equispaced``:
    lines every W (centre - W) / (R centre - W) from a random offset (fastMRI's adjusted spacing)."""
    rng = np.random.RandomState(int(seed) % (2**32))
    rng.randint(0, 1)  # MONAI's randomize_choose_acceleration: one (fraction, acceleration) pair here
    n_low = int(round(width * center_fraction))
    pad = (width - n_low + 1) // 2
    if kind == "random":
        prob = (width / acceleration - n_low) / (width - n_low)
        mask = rng.uniform(size=width) < prob
    else:
        mask = np.zeros(width, dtype=bool)
        adjusted = (acceleration * (n_low - width)) / (n_low * acceleration - width)
        offset = rng.randint(0, round(adjusted))
        mask[np.around(np.arange(offset, width - 1, adjusted)).astype(np.uint)] = True
    mask[pad:pad + n_low] = True
    return mask.astype(np.float32)


def cartesian_mask(width: int, acceleration: float, center_fraction: float, kind: str, seed: int) -> np.ndarray:
    """Phase-encode line mask, float32 [W] (1 = acquired), as MONAI's ``RandomKspaceMask`` or
    ``EquispacedKspaceMask`` (fastMRI's RandomMaskFunc / EquispacedMaskFunc) draw it
    (:func:`fastmri_mask`): round(W * center_fraction) central lines always, the rest random or
    equispaced.

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
        return fastmri_mask(width, acceleration, center_fraction, kind, seed)
    best, best_err = None, np.inf
    for k in range(_MAX_DRAWS):
        m = fastmri_mask(width, acceleration, center_fraction, kind, int(seed) + k)
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
