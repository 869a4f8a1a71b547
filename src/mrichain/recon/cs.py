"""Compressed sensing: L1-wavelet regularised SENSE, coil maps from the ACS lines (sigpy).

Per slice: sensitivities ``S`` [C, H, W] from the fully sampled centre of k-space, then

    x* = argmin_x 1/2 || M F S x - y ||^2 + lam || Psi x ||_1

(``M`` the sampling mask, ``F`` the centred orthonormal FFT, ``Psi`` a Daubechies-4 wavelet)
solved by sigpy's ``L1WaveletRecon`` (FISTA / proximal gradient). Output is ``|x*|``.

Sensitivities: a low-resolution estimate, the coil images of the Hann-windowed ACS lines divided
by their root-sum-of-squares, so ``sum_c |S_c|^2 = 1`` at every pixel. ESPIRiT (sigpy
``EspiritCalib``) needs a calibration region of at least ~12-24 lines with a 6x6 kernel; the
cohort acquires 4 (4 mm) to 8 (2 mm) ACS lines at 8 % centre fraction, too few for a stable null
space, while the windowed low-resolution estimate is stable with any ACS width. Because the maps
are normalised everywhere (background included), ``|x| = sqrt(sum_c |S_c x|^2)``, i.e. the SENSE
magnitude is on the scale of the RSS of the coil images, which is the fastMRI target.

k-space is divided per volume by the 99.5th percentile of the zero-filled RSS image, so ``lam``
is relative to an image of intensity ~1; the output is scaled back to the input's units.
"""
from __future__ import annotations

import numpy as np

from mrichain.fft import ifft2c, rss


def acs_lines(mask: np.ndarray | None, width: int, num_low_frequency: int | None = None) -> np.ndarray:
    """Boolean [W]: the contiguous run of acquired lines around the centre (the ACS block).

    A fully sampled input (``mask`` None or all ones) gets ``num_low_frequency`` central lines,
    default 8 % of ``width`` (at least 4), as a calibration region of the usual size.
    """
    centre = width // 2
    out = np.zeros(width, dtype=bool)
    if mask is None or np.all(np.asarray(mask) > 0):
        n = num_low_frequency or max(4, int(round(0.08 * width)))
        lo = centre - n // 2
        out[max(lo, 0): lo + n] = True
        return out
    m = np.asarray(mask).reshape(-1) > 0
    if not m[centre]:
        raise ValueError("the k-space centre line is not acquired: no ACS region to estimate coil maps")
    lo, hi = centre, centre
    while lo > 0 and m[lo - 1]:
        lo -= 1
    while hi < width - 1 and m[hi + 1]:
        hi += 1
    out[lo: hi + 1] = True
    return out


def acs_sensitivities(kspace: np.ndarray, acs: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Low-resolution coil sensitivities [..., C, H, W] complex64 with sum_c |S_c|^2 = 1.

    kspace: [..., C, H, W] centred k-space; acs: boolean [W], the calibration lines. The ACS block is
    tapered by a Hann window along W; along H a Hann window of the same relative width keeps the
    maps equally smooth in both directions.
    """
    H, W = kspace.shape[-2:]
    n = int(acs.sum())
    win_w = np.zeros(W)
    idx = np.flatnonzero(acs)
    win_w[idx] = np.hanning(n + 2)[1:-1]
    nh = int(np.clip(round(n * H / W), 3, H))
    win_h = np.zeros(H)
    lo = H // 2 - nh // 2
    win_h[lo: lo + nh] = np.hanning(nh + 2)[1:-1]
    low = ifft2c(kspace * (win_h[:, None] * win_w[None, :]))
    norm = rss(low, coil_axis=-3)
    floor = eps * max(float(norm.max()), np.finfo(np.float32).tiny)
    return (low / np.maximum(norm, floor)[..., None, :, :]).astype(np.complex64)


def cs(
    kspace: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    lam: float = 5e-3,
    iterations: int = 20,
    wave_name: str = "db4",
    num_low_frequency: int | None = None,
    **params,
) -> np.ndarray:
    """L1-wavelet SENSE reconstruction of every slice.

    kspace: complex64 [S, C, H, W] (phase encode along W, unacquired lines zero); mask: float32 [W]
    or None (fully sampled). lam: wavelet L1 weight relative to an image normalised to ~1 (the
    99.5th percentile of the zero-filled RSS); iterations: proximal-gradient iterations per slice.
    Returns float32 [S, H, W] magnitude in the input's units (the scale of ``reconstruction_rss``).
    Other ``params`` are accepted and ignored (one call shape for all recon methods).
    """
    import sigpy as sp
    from sigpy.mri.app import L1WaveletRecon

    kspace = np.asarray(kspace)
    if kspace.ndim != 4:
        raise ValueError(f"kspace must be [S, C, H, W], got shape {kspace.shape}")
    S, C, H, W = kspace.shape
    if mask is None:
        mask = np.ones(W, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32).reshape(-1)
    if mask.shape[0] != W:
        raise ValueError(f"mask length {mask.shape[0]} != kspace width {W}")
    kspace = kspace * mask[None, None, None, :]

    zf = rss(ifft2c(kspace), coil_axis=1)
    scale = float(np.percentile(zf, 99.5)) or 1.0
    y = (kspace / scale).astype(np.complex64)
    maps = acs_sensitivities(y, acs_lines(mask, W, num_low_frequency))
    weights = np.broadcast_to(mask[None, :], (H, W)).astype(np.float32)

    out = np.empty((S, H, W), dtype=np.float32)
    # sigpy estimates the step size by power iteration from a random start drawn from NumPy's
    # global generator; seeding it per slice (and restoring the caller's state) makes the step
    # size, and so the image, repeat exactly from run to run.
    state = np.random.get_state()
    try:
        for s in range(S):
            np.random.seed(s)
            app = L1WaveletRecon(y[s], maps[s], lam, weights=weights, wave_name=wave_name,
                                 max_iter=iterations, show_pbar=False, device=sp.cpu_device)
            out[s] = np.abs(app.run())
    finally:
        np.random.set_state(state)
    return out * np.float32(scale)
