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


from mrichain.methods import Registry  # noqa: E402

METHODS: Registry = Registry({
    "antssyn": "mrichain.register.antssyn:antssyn",
    "voxelmorph": "mrichain.register.voxelmorph:voxelmorph",  # needs model=<path to .pt> (card .json beside it)
})

# Learned methods: ``TRAINERS[name](manifest, params, out_path, seed) -> mrichain.train.FitResult``.
TRAINERS: Registry = Registry({"voxelmorph": "mrichain.register.voxelmorph:train"})
