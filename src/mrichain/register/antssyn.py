"""ANTs symmetric normalisation (SyN; Avants et al. 2008) via ``ants.registration``."""
from __future__ import annotations

import time

import nibabel as nib
import numpy as np

from mrichain.antsbridge import ants_env, from_ants, to_ants


def antssyn(
    moving: nib.Nifti1Image,
    fixed: nib.Nifti1Image,
    *,
    labels: nib.Nifti1Image | None = None,
    type_of_transform: str = "SyN",
    reg_iterations=(40, 20, 0),
    grad_step: float = 0.2,
    seed: int = 0,
    threads: int = 1,
):
    """Register ``moving`` to ``fixed`` with ANTs and carry ``labels`` along.

    moving, fixed: float [X, Y, Z] nibabel images (any grids, RAS mm affines). labels: integer
    label map on the moving grid, or None. ``type_of_transform``: any ``ants.registration`` type
    ('SyN' = affine + deformable, 'Affine', 'SyNOnly', ...); ``reg_iterations``: SyN iterations
    per level, coarse to fine; ``grad_step``: SyN's gradient step (ANTs' default 0.2). ``seed`` (>= 0) fixes ANTs' metric sampling (``--random-seed
    seed+1``, since ANTs reads 0 as unseeded). Bit-identical reruns need ``threads=1``: ITK's
    multi-threaded metric sums in a thread-dependent order (measured: max |diff| ~0.04 with 2).
    Returns :class:`mrichain.register.RegistrationResult` on the fixed grid; ANTs' transform files
    are written to a private scratch directory and removed.
    """
    import ants

    from mrichain.register import RegistrationResult

    # antsRegistration treats --random-seed 0 as 'unseeded' (time-based), so pass seed + 1.
    with ants_env(threads, seed=int(seed) + 1) as scratch:
        fixed_a = to_ants(fixed)  # inside ants_env: ITK fixes its thread count at first use
        moving_a = to_ants(moving)
        t0 = time.perf_counter()
        reg = ants.registration(
            fixed=fixed_a, moving=moving_a, type_of_transform=type_of_transform,
            reg_iterations=tuple(int(i) for i in reg_iterations), grad_step=float(grad_step),
            outprefix=f"{scratch}/reg_", verbose=False,
        )
        seconds = time.perf_counter() - t0
        fwd = reg["fwdtransforms"]
        warped = from_ants(reg["warpedmovout"], fixed.affine)
        warped_labels = None
        if labels is not None:
            lab = ants.apply_transforms(
                fixed=fixed_a, moving=to_ants(labels), transformlist=fwd, interpolator="genericLabel",
            )
            arr = np.rint(lab.numpy()).clip(0, 255)
            warped_labels = from_ants(lab.new_image_like(arr.astype(np.float32)), fixed.affine, dtype=np.uint8)
        fields = [t for t in fwd if t.endswith((".nii", ".nii.gz"))]
        if fields:
            jac = ants.create_jacobian_determinant_image(fixed_a, fields[0], do_log=False, geom=False)
            jacobian = from_ants(jac, fixed.affine)
        else:  # linear only: constant determinant of the affine matrix
            det = 1.0
            for t in fwd:
                det *= float(np.linalg.det(np.asarray(ants.read_transform(t).parameters[:9]).reshape(3, 3)))
            jacobian = from_ants(fixed_a.new_image_like(np.full(fixed_a.shape, det, np.float32)), fixed.affine)
    return RegistrationResult(warped=warped, warped_labels=warped_labels, jacobian=jacobian, seconds=seconds)


def affine(moving: nib.Nifti1Image, fixed: nib.Nifti1Image, *, labels: nib.Nifti1Image | None = None,
           seed: int = 0, threads: int = 1):
    """Affine-only registration (ANTs ``Affine``: rigid then 12-parameter affine, mutual
    information): the floor a deformable method has to beat. Same inputs and result as
    :func:`antssyn`; the Jacobian determinant is the affine's constant."""
    return antssyn(moving, fixed, labels=labels, type_of_transform="Affine", seed=seed, threads=threads)
