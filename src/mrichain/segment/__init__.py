"""Segmentation methods: ``METHODS[name](image, **params) -> labels``.

image: nib.Nifti1Image float [X, Y, Z]; returns uint8 nib.Nifti1Image labels on the same grid
(0 BG, 1 CSF, 2 GM, 3 WM; see ``mrichain.LABELS``).
"""
from __future__ import annotations

from typing import Callable

import nibabel as nib

from mrichain.segment import atropos as _atropos
from mrichain.segment.brainmask import brain_mask

METHODS: dict[str, Callable[..., nib.Nifti1Image]] = {"atropos": _atropos.atropos}

__all__ = ["METHODS", "brain_mask"]
