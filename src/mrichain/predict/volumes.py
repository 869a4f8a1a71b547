"""Tissue volumes from a label map."""
from __future__ import annotations

import nibabel as nib
import numpy as np


def tissue_volumes(labels: nib.Nifti1Image) -> dict[str, float]:
    """Volumes in millilitres of CSF (label 1), GM (2), WM (3) and their sum (intracranial volume).

    labels: integer [X, Y, Z] map; the voxel volume is |det(affine[:3, :3])| mm^3.
    Returns ``{'csf_ml', 'gm_ml', 'wm_ml', 'icv_ml'}`` (floats).
    """
    lab = np.asarray(labels.dataobj)
    voxel_ml = abs(float(np.linalg.det(np.asarray(labels.affine)[:3, :3]))) / 1000.0
    out = {
        f"{name}_ml": float(np.count_nonzero(lab == value) * voxel_ml)
        for name, value in (("csf", 1), ("gm", 2), ("wm", 3))
    }
    out["icv_ml"] = out["csf_ml"] + out["gm_ml"] + out["wm_ml"]
    return out
