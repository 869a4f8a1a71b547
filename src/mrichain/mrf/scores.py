"""Scores of T1/T2 maps against the truth: mean absolute percentage error per tissue, and time.

``mape = 100 * mean_v |estimate_v - truth_v| / truth_v`` over the voxels of a mask (%). The
tissue masks are the voxels labelled CSF, GM, WM (``dseg``); ``purity`` keeps only voxels whose
tissue probability is at least that (1.0: pure voxels only; partial-volume voxels mix signals,
which no single-compartment method fits exactly: :mod:`mrichain.mrf.fingerprints`).
The overall ``t1_mape``/``t2_mape`` are over GM, WM and CSF together (all scored voxels).
"""
from __future__ import annotations

import numpy as np

from mrichain import LABELS

TISSUES = ("CSF", "GM", "WM")


def mape(estimate, truth, mask=None) -> float:
    """Mean absolute percentage error (%) of ``estimate`` vs ``truth`` (> 0) over ``mask``
    (boolean, same shape; None: everything). NaN for an empty mask."""
    e = np.asarray(estimate, np.float64)
    t = np.asarray(truth, np.float64)
    m = np.ones(t.shape, bool) if mask is None else np.asarray(mask, bool)
    m = m & (t > 0)
    if not m.any():
        return float("nan")
    return float(100.0 * np.mean(np.abs(e[m] - t[m]) / t[m]))


def tissue_masks(labels, probs=None, purity: float | None = None) -> dict[str, np.ndarray]:
    """``{tissue: bool mask}`` for CSF, GM, WM from ``labels`` (uint8, :data:`mrichain.LABELS`);
    with ``probs`` [..., 4] (BG, CSF, GM, WM on the last axis) and ``purity``, only voxels whose
    probability of their tissue is >= purity."""
    labels = np.asarray(labels)
    codes = {name: code for code, name in LABELS.items()}
    out = {}
    for name in TISSUES:
        m = labels == codes[name]
        if purity is not None and probs is not None:
            m &= np.asarray(probs)[..., codes[name]] >= purity
        out[name] = m
    return out


def map_scores(t1, t2, t1_true, t2_true, labels, *, probs=None, purity: float | None = None,
               seconds: float | None = None, n_slices: int | None = None) -> dict[str, float]:
    """The MRF metrics of one subject and method (keys as in ``metrics.json``).

    t1, t2, t1_true, t2_true: per-voxel arrays (ms) of the same shape; labels: uint8 of that shape.
    Returns ``t1_mape``, ``t2_mape`` (GM, WM, CSF together), ``t1_mape_<tissue>``,
    ``t2_mape_<tissue>``, and ``seconds_per_slice`` when ``seconds`` and ``n_slices`` are given.
    """
    masks = tissue_masks(labels, probs, purity)
    scored = masks["CSF"] | masks["GM"] | masks["WM"]
    out = {"t1_mape": mape(t1, t1_true, scored), "t2_mape": mape(t2, t2_true, scored)}
    for name, m in masks.items():
        out[f"t1_mape_{name}"] = mape(t1, t1_true, m)
        out[f"t2_mape_{name}"] = mape(t2, t2_true, m)
    if seconds is not None and n_slices:
        out["seconds_per_slice"] = float(seconds) / int(n_slices)
    return out
