"""Tissue relaxation times and proton density at 3 T, and the per-subject parameter maps.

Literature values (3 T, in vivo, ms):

- GM T1 1331, WM T1 832, GM T2 110, WM T2 80: Wansapura JP, Holland SK, Dunn RS, Ball WS.
  "NMR relaxation times in the human brain at 3.0 Tesla." J Magn Reson Imaging 9:531-538 (1999).
- CSF T1 ~4000-4300 (Lu H et al., "Routine clinical brain MRI sequences for use at 3.0 Tesla",
  J Magn Reson Imaging 22:13-22, 2005), CSF T2 ~2000 (long, free water); compare Stanisz GJ et al.
  "T1, T2 relaxation and magnetization transfer in tissue at 3T", Magn Reson Med 54:507-512 (2005)
  (GM T1 1820 / T2 99, WM T1 1084 / T2 69, measured ex vivo-like; we keep Wansapura's in vivo values).
- Relative proton density CSF 1.0, GM 0.8, WM 0.7 (water content; e.g. Whittall KP et al., MRM 1997;
  the values used by BrainWeb, Collins et al., IEEE TMI 1998).

T2 stands in for T2* in the gradient-echo signal (see :mod:`mrichain.simulate.signal`).
"""
from __future__ import annotations

import numpy as np

TISSUES = ("BG", "CSF", "GM", "WM")
"""Order of tissue classes along the probability axis (matches :data:`mrichain.LABELS`)."""

TISSUE_PARAMS_3T: dict[str, dict[str, float]] = {
    "CSF": {"T1": 4000.0, "T2": 2000.0, "PD": 1.0},
    "GM": {"T1": 1330.0, "T2": 110.0, "PD": 0.8},
    "WM": {"T1": 830.0, "T2": 80.0, "PD": 0.7},
}
"""Nominal T1, T2 (ms) and relative PD per tissue at 3 T. Background has PD 0 (no signal)."""


def draw_tissue_params(rng: np.random.Generator, cv: float) -> dict[str, dict[str, float]]:
    """Per-subject tissue values: each nominal value times (1 + N(0, cv)), floored at 10 % of nominal."""
    out = {}
    for tissue in ("CSF", "GM", "WM"):
        out[tissue] = {}
        for key in ("T1", "T2", "PD"):
            nominal = TISSUE_PARAMS_3T[tissue][key]
            factor = max(1.0 + cv * float(rng.standard_normal()), 0.1)
            out[tissue][key] = round(nominal * factor, 6)
    return out


def parameter_maps(probs: np.ndarray, params: dict[str, dict[str, float]]) -> dict[str, np.ndarray]:
    """T1, T2 (ms) and PD maps, float32 [X, Y, Z], as probability-weighted sums over CSF, GM, WM.

    probs: [4, X, Y, Z] (BG, CSF, GM, WM). Background contributes 0, so maps fall to 0 outside the
    brain and are partial-volume weighted at its edge.
    """
    maps = {}
    for key in ("T1", "T2", "PD"):
        m = np.zeros(probs.shape[1:], np.float64)
        for k, tissue in enumerate(TISSUES[1:], start=1):
            m += probs[k] * params[tissue][key]
        maps[key] = m.astype(np.float32)
    return maps
