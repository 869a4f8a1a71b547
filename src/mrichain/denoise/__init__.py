"""Denoising methods: ``METHODS[name](image, **params) -> image``.

image: nib.Nifti1Image float [X, Y, Z]; returns float32 nib.Nifti1Image on the same grid/affine.
"""
from __future__ import annotations

from typing import Callable

import nibabel as nib

from mrichain.denoise import antsnlm as _antsnlm

METHODS: dict[str, Callable[..., nib.Nifti1Image]] = {"antsnlm": _antsnlm.antsnlm}
