"""Reconstruction methods: ``METHODS[name](kspace, mask, **params) -> image``.

kspace: complex64 [S, C, H, W]; mask: float32 [W] or None; returns float32 [S, H, W].
"""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from mrichain.io import nifti_image, read_kspace
from mrichain.plan.stages import Registry, method_registry, trainer_registry

METHODS: Registry = method_registry("reconstruct")  # declared in mrichain.plan.stages; learned ones take model=<.pt>

#: learned methods: ``TRAINERS[name](manifest, params, out_path, seed) -> mrichain.train.FitResult``
#: with manifest = {"train": [{"kspace": h5}, ...], "val": [{"kspace": h5}, ...]}.
TRAINERS: Registry = trainer_registry("reconstruct")


def volume_image(slices: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """[S, H, W] slices -> NIfTI volume [H, W, S] float32 with ``affine`` (RAS mm), units mm."""
    vol = np.ascontiguousarray(np.transpose(np.asarray(slices, dtype=np.float32), (1, 2, 0)))
    return nifti_image(vol, affine)


def reconstruct_file(h5_path: str | os.PathLike, method: str = "zerofilled", params: dict | None = None) -> nib.Nifti1Image:
    """Reconstruct a fastMRI-layout HDF5 file into a NIfTI volume.

    Reads with :func:`mrichain.io.read_kspace` (single-coil [S, H, W] files become C=1; a file
    without an ``affine`` attribute gets the identity, i.e. 1 mm voxels), runs ``METHODS[method]``
    and returns float32 [H, W, S] whose affine maps (H index, W index, slice index) to RAS mm.
    """
    if method not in METHODS:
        raise KeyError(f"unknown reconstruction method {method!r}; known: {sorted(METHODS)}")
    kf = read_kspace(h5_path)
    slices = METHODS[method](kf.kspace, kf.mask, **(params or {}))
    return volume_image(slices, kf.affine)
