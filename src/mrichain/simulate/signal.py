"""MR signal equations and the noise-free image of a simulated subject.

- T1w: spoiled gradient echo (FLASH/SPGR) steady state,
  S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*), E1 = exp(-TR/T1).
  The simulation has no separate T2*: the tissue T2 stands in for T2* (so gradient-echo signal
  decays a little less than in vivo; at TE = 4 ms the difference is a few percent).
- T2w: spin echo, S = PD (1 - exp(-TR/T1)) exp(-TE/T2) (TE << TR; no refocusing imperfections).

Times in ms, flip angle in degrees. Signals are in units of the fully relaxed magnetisation of PD 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mrichain.simulate.tissue import TISSUES

CONTRASTS = ("T1w", "T2w")
ACQUISITION = {"T1w": "AXT1", "T2w": "AXT2"}
"""fastMRI-style ``acquisition`` attribute per contrast."""


def spoiled_gradient_echo(pd, t1, t2s, tr_ms: float, te_ms: float, flip_deg: float):
    """Spoiled gradient-echo steady-state signal (arrays or scalars; T1/T2* in ms)."""
    a = np.deg2rad(flip_deg)
    t1 = np.maximum(np.asarray(t1, dtype=np.float64), 1e-6)
    t2s = np.maximum(np.asarray(t2s, dtype=np.float64), 1e-6)
    e1 = np.exp(-tr_ms / t1)
    return np.asarray(pd) * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-te_ms / t2s)


def spin_echo(pd, t1, t2, tr_ms: float, te_ms: float):
    """Spin-echo signal (arrays or scalars; T1/T2 in ms)."""
    t1 = np.maximum(np.asarray(t1, dtype=np.float64), 1e-6)
    t2 = np.maximum(np.asarray(t2, dtype=np.float64), 1e-6)
    return np.asarray(pd) * (1 - np.exp(-tr_ms / t1)) * np.exp(-te_ms / t2)


def signal(contrast: str, pd, t1, t2, seq_params: dict):
    """Signal of ``contrast`` ('T1w' spoiled GRE | 'T2w' spin echo) with ``seq_params``
    ({tr_ms, te_ms[, flip_deg]})."""
    if contrast == "T1w":
        return spoiled_gradient_echo(pd, t1, t2, seq_params["tr_ms"], seq_params["te_ms"], seq_params["flip_deg"])
    if contrast == "T2w":
        return spin_echo(pd, t1, t2, seq_params["tr_ms"], seq_params["te_ms"])
    raise ValueError(f"unknown contrast {contrast!r}; expected one of {CONTRASTS}")


def tissue_signals(tissue_params: dict, contrast: str, seq_params: dict) -> np.ndarray:
    """Signal per tissue class, float64 [4] (BG, CSF, GM, WM); background is 0."""
    out = np.zeros(len(TISSUES))
    for k, name in enumerate(TISSUES[1:], start=1):
        p = tissue_params[name]
        out[k] = float(signal(contrast, p["PD"], p["T1"], p["T2"], seq_params))
    return out


def noise_free_image(gt, contrast: str, seq_params: dict) -> np.ndarray:
    """Noise-free magnitude image, float32 [X, Y, Z]: sum_k p_k S(T1_k, T2_k, PD_k), times the bias field.

    ``gt``: a :class:`~mrichain.simulate.cohort.Subject` or a ground-truth folder
    (results/groundtruth/sub-XXX) written by :func:`~mrichain.simulate.cohort.write_subject`.
    Partial-volume voxels mix the tissue *signals* (not the parameters), as in a real voxel.
    """
    from mrichain.simulate.cohort import Subject, read_subject

    subj = gt if isinstance(gt, Subject) else read_subject(Path(gt))
    s = tissue_signals(subj.tissue_params, contrast, seq_params)
    img = np.tensordot(s, subj.probs.astype(np.float64), axes=(0, 0)) * subj.bias
    return np.clip(img, 0, None).astype(np.float32)
