"""Motion seen in a reconstructed image alone: what a real T1w (magnitude only, no k-space, no
reference) can be scored by.

A head that moves during a scan spreads the image's energy into ghosts along the phase-encode
direction and blurs edges; both raise the entropy of the intensity distribution over the whole
field of view. The *entropy focus criterion* (EFC, Atkinson et al., IEEE Trans Med Imaging 16:903,
1997; an image-quality index of MRIQC, Esteban et al., PLoS One 12:e0184661, 2017) measures it.
Its value depends on the matrix, the field of view, the contrast and the background, so no
threshold carries over from one scanner or protocol to another (or from the simulation to a
scanner): a scan is flagged against the other scans of its dataset, as MRIQC's group reports
compare a dataset's images with each other (:func:`flag_outliers`).

Written here: EFC is a few lines of NumPy (MRIQC, which has it, is an application with its own
pipeline, not a library to import); the robust z-score is Iglewicz and Hoaglin's.
"""
from __future__ import annotations

import numpy as np

MIN_IMAGES_TO_FLAG = 5
"""Fewer scans than this give no flag: a median and a median absolute deviation over 2-4 values
do not describe what a dataset's usual scan looks like."""

OUTLIER_Z = 3.5
"""The modified z-score above which a scan is flagged (Iglewicz and Hoaglin, 1993: the usual
cut-off for outliers by the median absolute deviation)."""


def entropy_focus(image: np.ndarray) -> float:
    """Entropy focus criterion of a magnitude image (any shape):
    ``-sum b/b_max ln(b/b_max)`` with ``b = |x| / sqrt(sum |x|^2)``, divided by its maximum for as
    many voxels, ``sqrt(N) ln sqrt(N)`` (MRIQC's normalisation), so in [0, 1]: 0 for all energy in
    one voxel, near 1 for a flat image; ghosting and blur raise it. NaN for an all-zero image."""
    x = np.abs(np.asarray(image, np.float64)).reshape(-1)
    energy = np.sqrt(np.sum(x * x))
    if energy == 0:
        return float("nan")
    b = x[x > 0] / energy
    n = np.sqrt(x.size)
    return float(-np.sum(b * np.log(b)) / (n * np.log(n))) if x.size > 1 else 0.0


def robust_z(values) -> np.ndarray:
    """Modified z-scores ``0.6745 (v - median) / MAD`` of ``values`` [N] (NaNs ignored in the
    median and MAD, NaN where the value is NaN); all NaN when the MAD is 0 (half the values equal)."""
    v = np.asarray(values, np.float64)
    med = np.nanmedian(v)
    mad = np.nanmedian(np.abs(v - med))
    if not np.isfinite(mad) or mad == 0:
        return np.full(v.shape, np.nan)
    return 0.6745 * (v - med) / mad


def flag_outliers(values) -> list[bool | None]:
    """Which of a dataset's scans score as likely corrupted by motion: EFC values [N] whose
    modified z-score exceeds :data:`OUTLIER_Z` (only the high side: motion raises EFC). None for
    every scan when fewer than :data:`MIN_IMAGES_TO_FLAG` values are finite or the spread is zero,
    and for a scan whose value is NaN."""
    v = np.asarray(values, np.float64)
    z = robust_z(v)
    if np.sum(np.isfinite(v)) < MIN_IMAGES_TO_FLAG or not np.any(np.isfinite(z)):
        return [None] * len(v)
    return [None if not np.isfinite(zi) else bool(zi > OUTLIER_Z) for zi in z]
