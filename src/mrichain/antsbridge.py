"""The bridge between nibabel images (RAS+ affines) and antspyx (LPS), and a clean ANTs run.

Every ANTs-backed stage (denoise, register, segment) converts through here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import nibabel as nib
import numpy as np


def to_ants(image: nib.Nifti1Image, pixeltype: str = "float"):
    """nibabel image [X, Y, Z] -> ANTsImage with origin/spacing/direction from the RAS affine.

    Uses :func:`ants.from_nibabel_nifti` on a fresh header with mm units (the ANTs function checks
    units and zooms and would otherwise mutate the caller's header); RAS->LPS is handled there.
    """
    import ants

    dtype = {"float": np.float32, "unsigned char": np.uint8}[pixeltype]
    data = np.asarray(image.dataobj, dtype=dtype)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    fresh = nib.Nifti1Image(data, np.asarray(image.affine, dtype=np.float64))
    fresh.header.set_xyzt_units("mm", "sec")
    return ants.from_nibabel_nifti(fresh, pixeltype=pixeltype)


def from_ants(ants_image, affine: np.ndarray, dtype=np.float32) -> nib.Nifti1Image:
    """ANTsImage -> nibabel image with the given RAS ``affine`` (the grid the data lives on).

    The voxel array is ANTs' own (same index order as the nibabel array it came from); we keep the
    caller's exact affine instead of re-deriving it to avoid float drift through LPS.
    """
    from mrichain.io import nifti_image

    return nifti_image(np.asarray(ants_image.numpy()), affine, dtype=dtype)


@contextlib.contextmanager
def ants_env(threads: int = 1, seed: int | None = None):
    """Run ANTs with ``threads`` ITK threads, a fixed random seed and a private scratch directory.

    - ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` is set for the call. ITK reads it once per process,
      at the first ANTs/ITK call (image creation included), so it governs the first ANTs call of
      a process (each snakemake job is its own process); later changes in the same process have
      no effect. Bit-identical reruns of denoising and registration need 1 thread (measured).
    - ``seed`` sets ``ants.config._random_seed`` (passed as ``--random-seed`` to antsRegistration)
      and ``ANTS_RANDOM_SEED``.
    - antspyx writes temporary files via ``tempfile.mktemp``; they go to a private directory that
      is removed afterwards.
    """
    import ants

    saved_env = {k: os.environ.get(k) for k in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "ANTS_RANDOM_SEED")}
    saved_seed = ants.config._random_seed
    saved_tmp = tempfile.tempdir
    scratch = tempfile.mkdtemp(prefix="mrichain-ants-")
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    if seed is not None:
        os.environ["ANTS_RANDOM_SEED"] = str(int(seed))
        ants.config._random_seed = int(seed)
    tempfile.tempdir = scratch
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved_tmp
        ants.config._random_seed = saved_seed
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(scratch, ignore_errors=True)
