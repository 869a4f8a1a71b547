"""Tissue volumes from a label map (the brain-age models' features)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

VENTRICLE_DEPTH_MM = 12.0
"""CSF deeper than this below the labelled brain's surface seeds the ventricles (sulci are shallower)."""
VENTRICLE_GROW_MM = 6.0
"""The seeds grow through connected CSF deeper than this (the ventricle walls, not the sulci)."""


def ventricle_mask(labels: np.ndarray, voxel_mm=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Ventricles, bool [X, Y, Z], from a label map alone (0 BG, 1 CSF, 2 GM, 3 WM).

    Seeds: CSF voxels more than :data:`VENTRICLE_DEPTH_MM` inside the labelled brain (labels > 0),
    in connected components of at least 5 % of the largest; grown through face-connected CSF deeper
    than :data:`VENTRICLE_GROW_MM`. Mirrors the simulator's definition
    (:func:`mrichain.simulate.atrophy.ventricle_mask`: deep CSF) on a hard label map.
    """
    lab = np.asarray(labels)
    brain = lab > 0
    csf = lab == 1
    if not csf.any():
        return np.zeros(lab.shape, bool)
    depth = ndi.distance_transform_edt(brain, sampling=voxel_mm)
    seeds = csf & (depth > VENTRICLE_DEPTH_MM)
    comp, n = ndi.label(seeds)
    if n == 0:
        return seeds
    sizes = ndi.sum(seeds, comp, index=np.arange(1, n + 1))
    seeds = np.isin(comp, np.flatnonzero(sizes >= 0.05 * sizes.max()) + 1)
    return ndi.binary_propagation(seeds, mask=csf & (depth > VENTRICLE_GROW_MM))


def tissue_volumes(labels: nib.Nifti1Image) -> dict[str, float]:
    """Volumes in millilitres of CSF (label 1), GM (2), WM (3), their sum (intracranial volume) and
    the ventricles (the deep part of the CSF, :func:`ventricle_mask`).

    labels: integer [X, Y, Z] map; the voxel volume is |det(affine[:3, :3])| mm^3.
    Returns ``{'csf_ml', 'gm_ml', 'wm_ml', 'icv_ml', 'ventricle_ml'}`` (floats; ventricle_ml <= csf_ml).
    """
    lab = np.asarray(labels.dataobj)
    affine = np.asarray(labels.affine, dtype=np.float64)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    out = {
        f"{name}_ml": float(np.count_nonzero(lab == value) * voxel_ml)
        for name, value in (("csf", 1), ("gm", 2), ("wm", 3))
    }
    out["icv_ml"] = out["csf_ml"] + out["gm_ml"] + out["wm_ml"]
    voxel_mm = tuple(float(z) for z in nib.affines.voxel_sizes(affine))
    out["ventricle_ml"] = float(np.count_nonzero(ventricle_mask(lab, voxel_mm)) * voxel_ml)
    return out
