"""Contrast-weighted images synthesised from quantitative maps (the MRF branch's downstream link).

The image is the signal equation that acquisition uses (:func:`mrichain.simulate.signal.signal`:
spoiled gradient echo for T1w, spin echo for T2w) evaluated on the estimated T1, T2 and PD per
voxel, so an image from perfect maps equals the acquisition's noise-free image of a pure-tissue
voxel without bias field. (In partial-volume voxels ``acquire`` mixes tissue signals; a map holds
one value per voxel, so the two differ there, as they would for a real MRF-derived image.)
"""
from __future__ import annotations

import numpy as np

from mrichain.simulate.signal import signal


def synthesise(t1, t2, pd, contrast: str, seq_params: dict, mask=None) -> np.ndarray:
    """float32 image of the shape of the maps: ``signal(contrast, pd, t1, t2, seq_params)``,
    0 outside ``mask`` (and where T1 or T2 is not positive).

    t1, t2: ms; pd: relative; contrast: 'T1w' | 'T2w'; seq_params: ``acquire.sequence[contrast]``
    ({tr_ms, te_ms[, flip_deg]}).
    """
    t1 = np.asarray(t1, np.float64)
    t2 = np.asarray(t2, np.float64)
    valid = (t1 > 0) & (t2 > 0)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    img = np.where(valid, signal(contrast, np.asarray(pd, np.float64), np.where(valid, t1, 1.0),
                                 np.where(valid, t2, 1.0), seq_params), 0.0)
    return np.clip(img, 0, None).astype(np.float32)
