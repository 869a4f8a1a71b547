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

Measured on the toy scan of ``tests/test_motion.py`` (two 64 x 64 slices, 8 coils, 8 interleaved
shots, fully sampled): a shot moved by 2 degrees and 1.5 mm scores 1.57 x the median, its two
neighbours 1.21-1.24 (a moved shot also spoils the prediction of the lines beside its own);
shots moved by 1 degree or 0.5 mm score at most 1.09. Removing the worst shot and scoring again
(greedy rejection) raises the neighbours further (a two-shot gap is harder to predict). Undersampled
input compares worse still where the shots hold unequal parts of k-space: with an equispaced R4
mask and the shots assigned over all 64 lines rather than over the acquired ones (the simulator
assigns them over the acquired lines), the two shots that hold every outer line score 8-11 x the
median with no motion at all. So the scores rank shots within one fully sampled,
interleaved scan; a threshold on them is for strong movements only.

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


def shot_residuals(kspace: np.ndarray, maps: np.ndarray, shot: np.ndarray, mask: np.ndarray | None = None,
                   iterations: int = 30) -> np.ndarray:
    """float64 [n_shots]: per shot, the residual energy per acquired value of its acquired lines
    predicted by SENSE from every other shot's acquired lines.

    kspace: complex [S, C, H, W]; maps: as :func:`sense_full`; shot: int [W], the shot of every
    line (:func:`mrichain.simulate.motion.shot_of_line`: known from the sequence, not from the
    motion); mask: [W], the acquired lines (None: all). A shot with no acquired line scores NaN.
    """
    kspace = np.asarray(kspace, np.complex64)
    shot = np.asarray(shot).reshape(-1)
    acquired = np.ones(shot.shape, bool) if mask is None else np.asarray(mask).reshape(-1) > 0
    out = np.full(int(shot.max()) + 1, np.nan)
    for s in range(len(out)):
        lines = (shot == s) & acquired
        if not lines.any():
            continue
        pred = sense_full(kspace, maps, acquired & ~lines, iterations)
        out[s] = np.sum(np.abs(kspace[..., lines] - pred[..., lines]) ** 2) / (lines.sum() * np.prod(kspace.shape[:3]))
    return out


def scored_slices(kspace: np.ndarray, n_slices: int) -> np.ndarray:
    """int [<= n_slices]: the slices the detector reads, evenly spaced over the middle of the slices
    that hold signal (the half of all slices with the most k-space energy), in order.

    A shot's pose holds for every slice (each line is acquired for the whole volume at once), so a
    few slices through the head see every shot's movement; the empty slices above the head would
    score only noise."""
    energy = np.sum(np.abs(np.asarray(kspace)) ** 2, axis=tuple(range(1, np.ndim(kspace))))
    bright = np.sort(np.argsort(energy)[len(energy) // 2:])
    if len(bright) <= n_slices:
        return bright
    return bright[np.round(np.linspace(0, len(bright) - 1, n_slices)).astype(int)]


def shot_scores(kspace: np.ndarray, mask: np.ndarray | None, shot: np.ndarray, *, maps: np.ndarray | None = None,
                n_slices: int = 8, iterations: int = 30) -> np.ndarray:
    """float64 [n_shots]: each shot's leave-one-shot-out residual (:func:`shot_residuals`) on
    :func:`scored_slices`, relative to the median over the shots: about 1 for a shot consistent
    with the others, above for a moved one (the median stands for the still shots, which are
    the majority: :func:`mrichain.plan.config.check_motion_level`).

    kspace: complex [S, C, H, W] (unacquired lines zero); mask: [W] or None (fully sampled);
    shot: int [W]; maps: ESPIRiT sensitivities [S, C, H, W] (default: estimated from all acquired
    lines, :func:`mrichain.recon.cs.coil_maps`; a moved minority perturbs such smooth maps
    little). Scale-free: the k-space is not normalised first.
    """
    from mrichain.recon.cs import coil_maps

    kspace = np.asarray(kspace)
    idx = scored_slices(kspace, n_slices)
    sub = kspace[idx]
    m = None if mask is None else np.asarray(mask, np.float32).reshape(-1)
    sub_maps = coil_maps(sub, m) if maps is None else np.asarray(maps)[idx]
    r = shot_residuals(sub, sub_maps, shot, m, iterations)
    med = float(np.nanmedian(r))
    return r / med if med > 0 else np.ones_like(r)
