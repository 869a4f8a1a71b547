"""Motion detection from k-space alone: each shot's inconsistency with the coil model.

A receive array measures every phase-encode line C times, through C sensitivities fixed to the
scanner. A still head gives coil images ``u_c = S_c x`` of one image ``x``. Lines acquired at
other poses do not: selecting lines does not commute with the coil weighting, so the stitched
coil images leave the range of the SENSE model: lines acquired at another pose disagree with the
coil redundancy of the others (Bydder, Larkman and Hajnal, MRM 47:677, 2002, regenerate such
lines from the others; here they are scored).

What it can and cannot see: the coils' spectra are narrow (smooth maps, a few cycles across the
field of view), so a line is predicted from lines within a few lines of it, and the fit spreads a
moved line's inconsistency over its neighbours. Fitting all lines at once therefore scores lines
poorly: the residual left on a line is mostly its noise (outer lines) or its neighbours' motion.
:func:`shot_residuals` predicts each shot's lines from the *other* shots instead (SENSE on the
rest, Bydder's regeneration) and compares the residual energy per value. In an interleaved ordering
each shot samples all of k-space alike, so the shots compare directly and a moved shot stands out.
A sequential block is predicted from distant lines, worse near the centre whatever the motion, so
its shots do not compare: that ordering needs another detector (an image-quality index, or a
learned one).

Written here: sigpy solves the SENSE least squares; no library scores shots by it.
"""
from __future__ import annotations

import numpy as np

from mrichain.fft import fft2c


def sense_full(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray, iterations: int = 30) -> np.ndarray:
    """``F S x`` on every line, ``x`` the least-squares SENSE image of the lines ``mask`` keeps.

    kspace: complex [S, C, H, W] (phase encode along W); maps: complex [S, C, H, W] with
    sum_c |S_c|^2 = 1 (ESPIRiT, :func:`mrichain.recon.cs.coil_maps`); mask: [W], 1 where a line
    is used. ``iterations`` of sigpy's conjugate-gradient ``SenseRecon`` without regularisation.
    """
    import sigpy as sp
    from sigpy.mri.app import SenseRecon

    m = (np.asarray(mask).reshape(-1) > 0).astype(np.float32)
    weights = np.broadcast_to(m[None, :], kspace.shape[2:])
    out = np.empty(kspace.shape, np.complex64)
    for s in range(kspace.shape[0]):
        x = SenseRecon(np.asarray(kspace[s], np.complex64) * m, np.asarray(maps[s], np.complex64), lamda=0.0,
                       weights=weights, max_iter=iterations, show_pbar=False, device=sp.cpu_device).run()
        out[s] = fft2c(maps[s] * x[None])
    return out


def shot_residuals(kspace: np.ndarray, maps: np.ndarray, shot: np.ndarray, iterations: int = 30) -> np.ndarray:
    """float64 [n_shots]: per shot, the residual energy per acquired value of its lines predicted by
    SENSE from every other shot's lines (fully sampled input; ``shot`` [W] as
    :func:`mrichain.simulate.motion.shot_of_line`, known from the sequence, not from the motion)."""
    kspace = np.asarray(kspace, np.complex64)
    shot = np.asarray(shot).reshape(-1)
    out = np.zeros(int(shot.max()) + 1)
    for s in range(len(out)):
        lines = shot == s
        pred = sense_full(kspace, maps, ~lines, iterations)
        out[s] = np.sum(np.abs(kspace[..., lines] - pred[..., lines]) ** 2) / (lines.sum() * np.prod(kspace.shape[:3]))
    return out
