"""Centred, orthonormal 2-D Fourier transforms over the last two axes (fastMRI's ``fftc``).

numpy's FFT does the work; only the shift convention is ours. With ``norm="ortho"`` white noise
of standard deviation sigma has the same standard deviation in k-space and image space.
"""
from __future__ import annotations

import numpy as np


def fft2c(image: np.ndarray) -> np.ndarray:
    """Image [..., H, W] (complex or real) -> centred k-space [..., H, W] complex."""
    x = np.fft.ifftshift(image, axes=(-2, -1))
    x = np.fft.fft2(x, axes=(-2, -1), norm="ortho")
    return np.fft.fftshift(x, axes=(-2, -1))


def ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centred k-space [..., H, W] -> complex image [..., H, W]; the inverse of :func:`fft2c`."""
    x = np.fft.ifftshift(kspace, axes=(-2, -1))
    x = np.fft.ifft2(x, axes=(-2, -1), norm="ortho")
    return np.fft.fftshift(x, axes=(-2, -1))


def rss(coil_images: np.ndarray, coil_axis: int = -3) -> np.ndarray:
    """Root-sum-of-squares coil combination: [..., C, H, W] complex -> [..., H, W] float."""
    return np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=coil_axis))
