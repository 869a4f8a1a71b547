"""Registration methods: ``METHODS[name](moving, fixed, *, labels=None, **params) -> RegistrationResult``.

moving, fixed, labels: nib.Nifti1Image [X, Y, Z] (each on its own grid); the result lives on the
fixed grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib


@dataclass
class RegistrationResult:
    """Output of a registration method, all images on the fixed image's grid and affine.

    warped: float32, the moving image resampled into fixed space.
    warped_labels: uint8 label map (moving-space labels, nearest-label interpolation) or None.
    jacobian: float32, determinant of the Jacobian of the forward (moving->fixed) deformation,
        evaluated in fixed space; values <= 0 mark folding.
    seconds: wall time of the registration optimisation only (s).
    """

    warped: nib.Nifti1Image
    warped_labels: nib.Nifti1Image | None
    jacobian: nib.Nifti1Image
    seconds: float


from mrichain.plan.stages import Registry, method_registry, trainer_registry  # noqa: E402

METHODS: Registry = method_registry("register")  # declared in mrichain.plan.stages; learned ones take model=<.pt>

# Learned methods: ``TRAINERS[name](manifest, params, out_path, seed) -> mrichain.train.FitResult``.
TRAINERS: Registry = trainer_registry("register")
