"""Compressed sensing: L1-wavelet regularised SENSE with ESPIRiT coil maps (sigpy).

Per slice: sensitivities ``S`` [C, H, W] (:func:`coil_maps`), then

    x* = argmin_x 1/2 || M F S x - y ||^2 + lam || Psi x ||_1

(``M`` the sampling mask, ``F`` the centred orthonormal FFT, ``Psi`` a Daubechies-4 wavelet)
solved by sigpy's ``L1WaveletRecon`` (FISTA / proximal gradient). Output is ``|x*|``.

Why the maps need more than the ACS lines. The simulated head fills a ~200 mm field of view, so a
map must be resolved to about +-8 cycles across it (16 k-space lines) for SENSE to be consistent
with the data: on a noiseless R4 slice, SENSE with the true maps low-pass filtered to 8 lines
diverges (in-brain NMSE 0.005 -> 0.26 from 20 to 300 iterations), with 16 lines it converges. The
cohort's 2 mm matrix is 99 lines wide, so its 8 % centre fraction is 8 lines (fastMRI's 8 % of 320
is 26): a map estimated from the ACS block alone, by any method, is too smooth, and the
model error it leaves is amplified as the iterations proceed. ESPIRiT (sigpy ``EspiritCalib``) on a
16-line calibration region does converge (0.0003 after 300 iterations, true maps 0.0002). So the
region is first completed: its unacquired lines come from a short SENSE reconstruction with the
low-resolution ACS maps (:func:`acs_sensitivities`, 20 iterations, before their error grows), then
are refined by structured low-rank matrix completion with the acquired lines held fixed
(:func:`sake_fill`, SAKE: Shin et al., MRM 72:959, 2014), and ESPIRiT is calibrated on the result.
The outer acquired lines inside the region are what carry the missing map detail. When the
acquired centre already spans the region (fully sampled input, or a wide ACS), ESPIRiT runs on the
data directly.

ESPIRiT maps have sum_c |S_c|^2 = 1 where the calibration's leading eigenvalue exceeds ``crop``
and are zero outside, so ``|x| = sqrt(sum_c |S_c x|^2)`` is on the scale of the RSS of the coil
images (the fastMRI target) inside the head and zero outside the eigenvalue support.

k-space is divided per volume by the 99.5th percentile of the zero-filled RSS image, so ``lam``
is relative to an image of intensity ~1; the output is scaled back to the input's units.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from mrichain.fft import fft2c, ifft2c, rss


@contextmanager
def _seeded(seed: int):
    """Seed NumPy's global generator and restore the caller's state afterwards.

    sigpy's step-size power iteration starts from a random vector drawn from NumPy's global
    generator; seeding it per slice makes the step size, and so the image, repeat exactly.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


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
    maps equally smooth in both directions. Only as resolved as the ACS block: at 8 lines too
    smooth for SENSE to converge (see the module docstring); :func:`coil_maps` uses it as a start.
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


def sake_fill(calib: np.ndarray, known: np.ndarray, kernel_width: int = 6, thresh: float = 0.02,
              iterations: int = 30) -> np.ndarray:
    """Complete the unacquired lines of a calibration block by structured low-rank completion.

    calib: complex [C, h, w] centred k-space block (any values on the unacquired lines: they are the
    start); known: boolean [w], the acquired lines, kept fixed. Returns complex128 [C, h, w].

    SAKE (Shin et al., MRM 72:959, 2014), as ESPIRiT sees the data: the block-Hankel matrix of all
    ``kernel_width`` x ``kernel_width`` multi-coil patches [patches, C * k^2] has low rank when the
    coils are smooth. Each iteration truncates its SVD to the singular values above ``thresh`` x
    the largest (ESPIRiT's own signal-subspace threshold), averages the patches back into k-space
    and restores the acquired lines. Written here because sigpy has no matrix completion; the
    eigen-decomposition of the [C k^2, C k^2] Gram matrix is the SVD's right half.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    C, h, w = calib.shape
    k = min(kernel_width, h, w)
    bh, bw = h - k + 1, w - k + 1
    count = np.zeros((h, w))
    for i in range(k):
        for j in range(k):
            count[i:i + bh, j:j + bw] += 1
    x = np.array(calib, dtype=np.complex128)
    fixed = x[:, :, known].copy()
    for _ in range(iterations):
        a = sliding_window_view(x, (k, k), axis=(1, 2)).transpose(1, 2, 0, 3, 4).reshape(bh * bw, C * k * k)
        ev, v = np.linalg.eigh(a.conj().T @ a)
        sv = np.sqrt(np.maximum(ev, 0.0))
        v = v[:, sv > thresh * sv.max()]
        low = ((a @ v) @ v.conj().T).reshape(bh, bw, C, k, k)
        x = np.zeros_like(x)
        for i in range(k):
            for j in range(k):
                x[:, i:i + bh, j:j + bw] += low[:, :, :, i, j].transpose(2, 0, 1)
        x /= count
        x[:, :, known] = fixed
    return x


def coil_maps(
    kspace: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    num_low_frequency: int | None = None,
    calib_width: int = 16,
    kernel_width: int = 6,
    thresh: float = 0.02,
    crop: float = 0.9,
    fill_iterations: int = 20,
    sake_iterations: int = 30,
) -> np.ndarray:
    """ESPIRiT coil sensitivities complex64 [S, C, H, W] from undersampled k-space.

    kspace: [S, C, H, W] centred k-space (phase encode along W, unacquired lines zero); mask: [W]
    or None (fully sampled). The calibration region is the central ``max(calib_width, ACS)``
    lines x as many rows (16 lines: +-8 cycles across the field of view, enough for SENSE to
    converge; see the module docstring). Where it holds unacquired lines they are filled from a
    ``fill_iterations`` L1-wavelet SENSE with :func:`acs_sensitivities` (lam 1e-3 on the image
    normalised to ~1), then completed by :func:`sake_fill` (``sake_iterations``). ESPIRiT
    (sigpy ``EspiritCalib``: ``kernel_width``, ``thresh``, ``crop``) is calibrated on the result.
    Maps have sum_c |S_c|^2 = 1 inside the eigenvalue support (> ``crop``), 0 outside.
    Deterministic (sigpy's random step-size start is seeded per slice).
    """
    import sigpy as sp
    from sigpy.mri.app import EspiritCalib, L1WaveletRecon

    kspace = np.asarray(kspace)
    S, C, H, W = kspace.shape
    mask = np.ones(W, np.float32) if mask is None else np.asarray(mask, np.float32).reshape(-1)
    acs = acs_lines(mask, W, num_low_frequency)
    zf = rss(ifft2c(kspace * mask), coil_axis=1)
    y = (kspace * mask / (float(np.percentile(zf, 99.5)) or 1.0)).astype(np.complex64)

    cw = int(min(max(calib_width, int(acs.sum())), H, W))
    rows = slice(H // 2 - cw // 2, H // 2 - cw // 2 + cw)
    cols = slice(W // 2 - cw // 2, W // 2 - cw // 2 + cw)
    known = mask[cols] > 0
    # SAKE sees twice the rows (fully sampled along H): more patches for the same lines
    rows2 = slice(max(H // 2 - cw, 0), min(H // 2 - cw + 2 * cw, H))
    inner = slice(rows.start - rows2.start, rows.start - rows2.start + cw)
    weights = np.broadcast_to(mask[None, :], (H, W)).astype(np.float32)

    maps = np.empty((S, C, H, W), np.complex64)
    for s in range(S):
        calib = np.zeros((C, H, W), np.complex64)
        if known.all():
            calib[:, rows, cols] = y[s][:, rows, cols]
        else:
            start = acs_sensitivities(y[s], acs)
            with _seeded(s):
                x = L1WaveletRecon(y[s], start, 1e-3, weights=weights, max_iter=fill_iterations,
                                   show_pbar=False, device=sp.cpu_device).run()
            filled = np.where(mask > 0, y[s], fft2c(start * x[None]))[:, rows2, cols]
            calib[:, rows, cols] = sake_fill(filled, known, kernel_width, thresh, sake_iterations)[:, inner]
        maps[s] = EspiritCalib(calib, calib_width=cw, thresh=thresh, kernel_width=kernel_width, crop=crop,
                               device=sp.cpu_device, show_pbar=False).run()
    return maps


def cs(
    kspace: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    lam: float = 5e-3,
    iterations: int = 20,
    wave_name: str = "db4",
    num_low_frequency: int | None = None,
    calib_width: int = 16,
    sake_iterations: int = 30,
    **params,
) -> np.ndarray:
    """L1-wavelet SENSE reconstruction of every slice.

    kspace: complex64 [S, C, H, W] (phase encode along W, unacquired lines zero); mask: float32 [W]
    or None (fully sampled). lam: wavelet L1 weight relative to an image normalised to ~1 (the
    99.5th percentile of the zero-filled RSS); iterations: proximal-gradient iterations per slice.
    calib_width, sake_iterations: the coil-map calibration (:func:`coil_maps`).
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
    maps = coil_maps(y, mask, num_low_frequency=num_low_frequency, calib_width=calib_width,
                     sake_iterations=sake_iterations)
    weights = np.broadcast_to(mask[None, :], (H, W)).astype(np.float32)

    out = np.empty((S, H, W), dtype=np.float32)
    for s in range(S):
        with _seeded(s):
            app = L1WaveletRecon(y[s], maps[s], lam, weights=weights, wave_name=wave_name,
                                 max_iter=iterations, show_pbar=False, device=sp.cpu_device)
            out[s] = np.abs(app.run())
    return out * np.float32(scale)
