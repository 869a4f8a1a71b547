"""Age-dependent atrophy applied to tissue probabilities [4, X, Y, Z] (BG, CSF, GM, WM).

Two effects, both linear in (age - age_min) / (age_max - age_min):

- ventricular enlargement: a smooth outward expansion of the ventricles (displacement along the
  outward normal of a Gaussian-smoothed ventricle mask, ``amplitude_mm`` at the ventricle wall,
  decaying over ~``sigma_mm``), applied as a pull-back so CSF flows into the surrounding tissue;
- cortical grey-matter loss: a fraction of the GM that touches exterior CSF/background (the
  cortical ribbon's outer border, not the ventricles) becomes CSF.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from mrichain.simulate.warp import compose_voxel


def ventricle_mask(probs: np.ndarray, affine: np.ndarray, depth_mm: float = 12.0) -> np.ndarray:
    """Ventricles, bool [X, Y, Z]: CSF-dominant voxels deeper than ``depth_mm`` inside the brain.

    Connected components of deep CSF smaller than 5 % of the largest are dropped.
    """
    vox = float(np.abs(np.linalg.det(np.asarray(affine)[:3, :3])) ** (1 / 3))
    brain = probs[0] < 0.5
    depth = ndi.distance_transform_edt(brain) * vox
    csf = (probs[1] > 0.5) & (depth > depth_mm)
    lab, n = ndi.label(csf)
    if n == 0:
        return csf
    sizes = ndi.sum(csf, lab, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= 0.05 * sizes.max()) + 1
    return np.isin(lab, keep)


def expand_ventricles(
    probs: np.ndarray, affine: np.ndarray, amplitude_mm: float, ventricles: np.ndarray, sigma_mm: float = 6.0
) -> np.ndarray:
    """Push the ventricle walls outward by ``amplitude_mm`` with a smooth displacement field.

    e(x) = -A * grad(s) / max|grad(s)|, s = ventricle mask smoothed with ``sigma_mm``; the new
    probabilities are p(x - e(x)). With A < sigma the map is invertible.
    """
    if amplitude_mm <= 0 or not ventricles.any():
        return probs
    vox = float(np.abs(np.linalg.det(np.asarray(affine)[:3, :3])) ** (1 / 3))
    s = ndi.gaussian_filter(ventricles.astype(np.float64), sigma_mm / vox)
    g = np.stack(np.gradient(s))
    gmax = float(np.sqrt((g**2).sum(0)).max())
    e = -(amplitude_mm / vox) * g / gmax  # voxels, outward
    out = compose_voxel(np.asarray(probs, np.float64), -e, order=1)
    out = np.clip(out, 0, None)
    return out / out.sum(0, keepdims=True)


def cortical_gm_loss(probs: np.ndarray, fraction: float, ventricles: np.ndarray) -> np.ndarray:
    """Turn ``fraction`` of the GM at the exterior CSF/background border into CSF."""
    if fraction <= 0:
        return probs
    out = np.array(probs, dtype=np.float64)
    vent_near = ndi.binary_dilation(ventricles, iterations=2)
    exterior = out[0] + out[1] * (~vent_near)
    border = np.clip(2.0 * ndi.gaussian_filter(exterior, 1.0), 0.0, 1.0)
    delta = fraction * out[2] * border
    out[2] -= delta
    out[1] += delta
    return out


def atrophy_fraction(age: float, age_range) -> float:
    """(age - age_min) / (age_max - age_min), clipped to [0, 1]."""
    a0, a1 = float(age_range[0]), float(age_range[1])
    return float(np.clip((age - a0) / (a1 - a0), 0.0, 1.0))


def apply_atrophy(probs: np.ndarray, affine: np.ndarray, age: float, cohort_cfg: dict) -> tuple[np.ndarray, dict]:
    """Apply both atrophy effects for ``age``; returns (probs float32 [4, X, Y, Z], info dict)."""
    f = atrophy_fraction(age, cohort_cfg["age_range"])
    acfg = cohort_cfg["atrophy"]
    amp = f * float(acfg["ventricle_expansion_mm_at_max_age"])
    loss = f * float(acfg["cortical_gm_loss_at_max_age"])
    vent = ventricle_mask(probs, affine)
    out = expand_ventricles(probs, affine, amp, vent)
    out = cortical_gm_loss(out, loss, vent)
    info = {"ventricle_expansion_mm": amp, "cortical_gm_loss_fraction": loss}
    return out.astype(np.float32), info
