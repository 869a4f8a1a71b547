"""Zero-filled reconstruction: masked k-space -> centred inverse FFT -> root-sum-of-squares."""
from __future__ import annotations

import numpy as np

from mrichain.fft import ifft2c, rss


def zerofilled(kspace: np.ndarray, mask: np.ndarray | None = None, **params) -> np.ndarray:
    """Reconstruct magnitude images by zero filling.

    kspace: complex64 [S, C, H, W], centred (fastMRI layout, phase encode along W).
    mask: float32 [W], 1 where a phase-encode line was acquired; None means use ``kspace`` as is
    (a fastMRI test file already holds zeros in the unacquired lines, so masking again is harmless).
    Returns float32 [S, H, W], the RSS over coils of the inverse FFT, in k-space signal units
    (orthonormal FFT). Accepts and ignores other ``params`` so every recon method has one call shape.
    """
    kspace = np.asarray(kspace)
    if kspace.ndim != 4:
        raise ValueError(f"kspace must be [S, C, H, W], got shape {kspace.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float32).reshape(-1)
        if mask.shape[0] != kspace.shape[-1]:
            raise ValueError(f"mask length {mask.shape[0]} != kspace width {kspace.shape[-1]}")
        kspace = kspace * mask[None, None, None, :]
    return rss(ifft2c(kspace), coil_axis=1).astype(np.float32)
