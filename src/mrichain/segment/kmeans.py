"""Three-class intensity k-means inside the brain mask: the segmentation floor.

No spatial prior, no bias correction, no iterations of EM: what any tissue classifier must beat.
scikit-learn's ``KMeans`` on the brain voxels' intensities (fixed ``random_state``: the same
input gives the same labels).
"""
from __future__ import annotations

import nibabel as nib
import numpy as np

from mrichain.io import nifti_image
from mrichain.segment.brainmask import brain_mask

_ORDER = {"T1w": "ascending", "T2w": "descending"}


def kmeans(image: nib.Nifti1Image, *, contrast: str = "T1w", threads: int = 1) -> nib.Nifti1Image:
    """Label the brain voxels of ``image`` (float [X, Y, Z]) by 3-cluster k-means on intensity.

    The brain mask is :func:`mrichain.segment.brain_mask` (the one Atropos uses, so the two differ
    only in the classifier). Clusters are mapped to tissues by their centre: T1w ascending (CSF <
    GM < WM), T2w descending. ``threads`` is accepted for the common call shape.
    Returns uint8 [X, Y, Z] labels 0 BG, 1 CSF, 2 GM, 3 WM on the grid/affine of ``image``.
    """
    from sklearn.cluster import KMeans

    if contrast not in _ORDER:
        raise ValueError(f"contrast must be one of {sorted(_ORDER)}, got {contrast!r}")
    data = np.asarray(image.dataobj, dtype=np.float32)
    inside = np.asarray(brain_mask(image).dataobj) > 0
    out = np.zeros(data.shape, np.uint8)
    values = data[inside].reshape(-1, 1)
    if values.shape[0] >= 3:
        km = KMeans(n_clusters=3, n_init=3, random_state=0).fit(values)
        order = np.argsort(km.cluster_centers_.ravel())
        if _ORDER[contrast] == "descending":
            order = order[::-1]
        tissue_of_cluster = np.empty(3, np.uint8)
        tissue_of_cluster[order] = [1, 2, 3]
        out[inside] = tissue_of_cluster[km.labels_]
    return nifti_image(out, image.affine, dtype=np.uint8)
