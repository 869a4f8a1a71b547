"""Compressed sensing: L1-wavelet regularised SENSE (sigpy) with ESPIRiT coil maps.

Per slice: sensitivities ``S`` [C, H, W] (:func:`coil_maps`), then

    x* = argmin_x 1/2 || M F S x - y ||^2 + lam || Psi x ||_1

(``M`` the sampling mask, ``F`` the centred orthonormal FFT, ``Psi`` a Daubechies-4 wavelet)
solved by sigpy's ``L1WaveletRecon`` (FISTA / proximal gradient). Output is ``|x*|``.

Why the maps need more than the ACS lines. The simulated head fills a ~200 mm field of view, so a
map must be resolved to about +-8 cycles across it (16 k-space lines) for SENSE to be consistent
with the data: on a noiseless R4 slice, SENSE with the true maps low-pass filtered to 8 lines
diverges (in-brain NMSE 0.005 -> 0.26 from 20 to 300 iterations), with 16 lines it converges. The
cohort's 2 mm matrix is 99 lines wide, so its 8 % centre fraction is 8 lines (fastMRI's 8 % of 320
is 26): a map estimated from the ACS block alone, by any method, is too smooth, and the model
error it leaves is amplified as the iterations proceed. ESPIRiT on a fully known 16-line
calibration region does converge (0.0003-0.0004 after 300 iterations, true maps 0.0002). So
(:func:`coil_maps`) the unacquired lines of that region are first estimated, from a short SENSE
reconstruction (20 iterations, before the error grows) with ESPIRiT maps of the ACS block, then
completed by structured low-rank matrix completion with the acquired lines held fixed
(:func:`sake_fill`, SAKE: Shin et al., MRM 72:959, 2014), and ESPIRiT is calibrated on the
result: the outer acquired lines inside the region carry the missing map detail. When the
acquired centre already spans the region (fully sampled input, or a wide ACS), ESPIRiT runs on
the data directly. ESPIRiT here (:func:`espirit_maps`) follows sigpy's ``EspiritCalib`` but takes
a rectangular calibration region: sigpy's is square, and the readout (H) is fully sampled, so
32 rows x the lines give several times the patches of a square of the lines.

The maps are not cropped to the ESPIRiT eigenvalue support (``crop`` 0): sum_c |S_c|^2 = 1 at
every pixel, so ``|x| = sqrt(sum_c |S_c x|^2)`` is on the scale of the RSS of the coil images (the
fastMRI target) everywhere, background included, as the rest of the pipeline expects. Cropping at
0.9 (sigpy's default is 0.95) fits a little better inside the head (noiseless in-brain NMSE after
200 iterations 1.3x the true maps' instead of 2x) but zeroes the background.

k-space is divided per volume by the 99.5th percentile of the zero-filled RSS image, so ``lam``
is relative to an image of intensity ~1; the output is scaled back to the input's units.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from mrichain.fft import fft2c, ifft2c, rss


@contextmanager
def _one_blas_thread():
    """Run BLAS/LAPACK single-threaded inside the block (threadpoolctl).

    The calibration's linear algebra is on small matrices ([288, 288] Gram matrices): threaded
    OpenBLAS only adds synchronisation, and on a busy 2-core machine it is catastrophic (one
    ``eigh`` measured 0.3-3 s with 2 threads against 18 ms with 1). The rule runs with
    ``threads: 1`` anyway; this holds when numpy was imported before the environment was set.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


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
    coils are smooth. Each iteration truncates it to the singular values above ``thresh`` x the
    largest (ESPIRiT's own signal-subspace threshold), averages the patches back into k-space and
    restores the acquired lines. Written here because sigpy has no matrix completion. The first
    iteration takes the full spectrum (eigen-decomposition of the [C k^2, C k^2] Gram matrix) and
    keeps a basis 16 wider than the rank; each later one refines that basis by one subspace
    iteration with Rayleigh-Ritz: the same maps as a full decomposition every iteration (equal to
    5 digits of NMSE in our checks) at half the cost.
    """
    C, h, w = calib.shape
    k = min(kernel_width, h, w)
    bh, bw = h - k + 1, w - k + 1
    count = np.zeros((h, w))
    for i in range(k):
        for j in range(k):
            count[i:i + bh, j:j + bw] += 1
    x = np.array(calib, dtype=np.complex128)
    fixed = x[:, :, known].copy()
    basis = None
    for _ in range(iterations):
        a = _patches(x, k, k)
        if basis is None:  # first iteration: the full spectrum sets the subspace size
            ev, v = np.linalg.eigh(a.conj().T @ a)
            sv = np.sqrt(np.maximum(ev[::-1], 0.0))
            v = v[:, ::-1]
            basis = v[:, : min(int((sv > thresh * sv[0]).sum()) + 16, v.shape[1])]
        else:  # one subspace iteration from the last basis, then Rayleigh-Ritz (exact within it)
            basis, _ = np.linalg.qr(a.conj().T @ (a @ basis))
            _, sv, wh = np.linalg.svd(a @ basis, full_matrices=False)
            basis = basis @ wh.conj().T
        v = basis[:, sv[: basis.shape[1]] > thresh * sv[0]]
        low = ((a @ v) @ v.conj().T).reshape(bh, bw, C, k, k)
        x = np.zeros_like(x)
        for i in range(k):
            for j in range(k):
                x[:, i:i + bh, j:j + bw] += low[:, :, :, i, j].transpose(2, 0, 1)
        x /= count
        x[:, :, known] = fixed
    return x


def espirit_maps(calib: np.ndarray, shape: tuple[int, int], kernel: tuple[int, int] = (6, 6),
                 thresh: float = 0.02, crop: float = 0.0) -> np.ndarray:
    """ESPIRiT sensitivities complex64 [C, H, W] from a rectangular calibration block.

    calib: complex [C, h, w], the fully known centre of k-space (h rows of the readout H, w lines of
    W); shape: (H, W) of the image; kernel: (rows, lines) of the k-space kernel. As sigpy's
    ``EspiritCalib`` (Uecker et al., MRM 71:990, 2014): the calibration matrix of all kernel patches
    [patches, C * kh * kw] is decomposed, its right singular vectors above ``thresh`` x the largest
    singular value are the kernels, and at every pixel the leading eigenvector of their
    image-space Gram matrix [C, C] is the map (phase relative to coil 0), set to zero where the
    eigenvalue is below ``crop``. Differs from sigpy in the region (any h x w, see the module
    docstring) and in taking the eigenvectors with ``numpy.linalg.eigh`` instead of 100 power
    iterations. sum_c |S_c|^2 = 1 wherever a map is not cropped.
    """
    C, h, w = calib.shape
    H, W = shape
    kh, kw = min(kernel[0], h, (H + 1) // 2), min(kernel[1], w, (W + 1) // 2)
    mat = _patches(np.asarray(calib, np.complex128), kh, kw)
    _, sv, vh = np.linalg.svd(mat, full_matrices=False)
    kernels = vh[sv > thresh * sv.max()]  # [K, C * kh * kw]
    # Gram matrix of the kernels' images at every pixel, sum_k img_kc(r) conj(img_kc'(r)), as the
    # inverse FFT of the kernels' cross-correlations: C^2 FFTs instead of K * C (same numbers).
    outer = (kernels.T @ kernels.conj()).reshape(C, kh, kw, C, kh, kw)
    corr = np.zeros((C, C, 2 * kh - 1, 2 * kw - 1), np.complex128)
    for i in range(kh):
        for j in range(kw):
            for i2 in range(kh):
                for j2 in range(kw):
                    corr[:, :, i - i2 + kh - 1, j - j2 + kw - 1] += outer[:, i, j, :, i2, j2]
    padded = np.zeros((C, C, H, W), np.complex128)
    padded[:, :, H // 2 - kh + 1: H // 2 + kh, W // 2 - kw + 1: W // 2 + kw] = corr
    gram = (ifft2c(padded) * (np.sqrt(H * W) / (kh * kw))).transpose(2, 3, 0, 1)  # [H, W, C, C]
    eigval, eigvec = np.linalg.eigh(gram)
    maps = eigvec[..., -1]  # [H, W, C]
    maps = maps * np.conj(maps[..., :1] / np.maximum(np.abs(maps[..., :1]), np.finfo(np.float64).tiny))
    if crop > 0:
        maps = maps * (eigval[..., -1] > crop)[..., None]
    return maps.transpose(2, 0, 1).astype(np.complex64)


def _patches(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Block-Hankel calibration matrix [patches, C * kh * kw] of a k-space block [C, h, w]."""
    from numpy.lib.stride_tricks import sliding_window_view

    C, h, w = x.shape
    return sliding_window_view(x, (kh, kw), axis=(1, 2)).transpose(1, 2, 0, 3, 4).reshape(-1, C * kh * kw)


_MAPS_CACHE: OrderedDict = OrderedDict()
_MAPS_CACHE_SIZE = 4  # volumes (~42 MB each for 82 x 8 x 81 x 99): the val split of a tuning job


def coil_maps(
    kspace: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    num_low_frequency: int | None = None,
    calib_width: int = 16,
    kernel_width: int = 6,
    thresh: float = 0.02,
    crop: float = 0.0,
    fill_iterations: int = 20,
    sake_iterations: int = 30,
) -> np.ndarray:
    """ESPIRiT coil sensitivities complex64 [S, C, H, W] from undersampled k-space.

    kspace: [S, C, H, W] centred k-space (phase encode along W, unacquired lines zero); mask: [W]
    or None (fully sampled). Per slice (module docstring): the calibration region is the central
    ``max(calib_width, ACS)`` lines (16 lines: +-8 cycles across the field of view, enough for
    SENSE to converge) x twice as many rows. Where it holds unacquired lines, they start from a
    ``fill_iterations`` L1-wavelet SENSE (lam 1e-3 on the image normalised to ~1) with ESPIRiT
    maps of the ACS block (kernel ``kernel_width`` rows x 3 lines; :func:`acs_sensitivities` if the
    block is narrower than 3 lines) and are completed by :func:`sake_fill` (``sake_iterations``).
    :func:`espirit_maps` (``kernel_width`` square kernel, ``thresh``, ``crop``) is calibrated on
    the region. Maps have sum_c |S_c|^2 = 1 where the eigenvalue exceeds ``crop`` (default 0:
    everywhere), 0 elsewhere.
    Deterministic (sigpy's random step-size start is seeded per slice). About 0.7 s per 81 x 99
    slice on one core, six times a 20-iteration L1-wavelet SENSE, so the last few volumes' maps are
    kept in memory (keyed by the k-space bytes and these arguments): a tuning grid over ``lam``
    and ``iterations`` on the same volumes estimates them once. The returned array is read-only.
    """
    kspace = np.asarray(kspace)
    S, C, H, W = kspace.shape
    mask = np.ones(W, np.float32) if mask is None else np.asarray(mask, np.float32).reshape(-1)
    args = (num_low_frequency, calib_width, kernel_width, thresh, crop, fill_iterations, sake_iterations)
    digest = hashlib.blake2b(np.ascontiguousarray(kspace).view(np.uint8).reshape(-1), digest_size=20)
    digest.update(mask.tobytes())
    key = (kspace.shape, str(kspace.dtype), digest.hexdigest(), args)
    if key in _MAPS_CACHE:
        _MAPS_CACHE.move_to_end(key)
        return _MAPS_CACHE[key]

    acs = acs_lines(mask, W, num_low_frequency)
    zf = rss(ifft2c(kspace * mask), coil_axis=1)
    y = (kspace * mask / (float(np.percentile(zf, 99.5)) or 1.0)).astype(np.complex64)
    cw = int(min(max(calib_width, int(acs.sum())), W))
    rows = slice(max(H // 2 - cw, 0), min(H // 2 + cw, H))
    if acs.sum() >= calib_width:  # an ACS block as wide as the region is the region: nothing to fill
        idx = np.flatnonzero(acs)
        cols = slice(int(idx[0]), int(idx[-1]) + 1)
    else:
        cols = slice(W // 2 - cw // 2, W // 2 - cw // 2 + cw)
    known = mask[cols] > 0
    kernel = (kernel_width, kernel_width)
    maps = np.empty((S, C, H, W), np.complex64)
    with _one_blas_thread():
        for s in range(S):
            block = y[s][:, rows, cols]
            if not known.all():
                if acs.sum() >= 3:
                    start = espirit_maps(y[s][:, :, acs], (H, W), (kernel_width, 3), thresh, crop)
                else:
                    start = acs_sensitivities(y[s], acs)
                with _seeded(s):
                    x = _l1_sense(y[s], start, mask, 1e-3, fill_iterations)
                guess = np.where(mask > 0, y[s], fft2c(start * x[None]))[:, rows, cols]
                block = sake_fill(guess, known, kernel_width, thresh, sake_iterations)
            maps[s] = espirit_maps(block, (H, W), kernel, thresh, crop)
    maps.setflags(write=False)
    _MAPS_CACHE[key] = maps
    while len(_MAPS_CACHE) > _MAPS_CACHE_SIZE:
        _MAPS_CACHE.popitem(last=False)
    return maps


def _l1_sense(y: np.ndarray, maps: np.ndarray, mask: np.ndarray, lam: float, iterations: int,
              wave_name: str = "db4") -> np.ndarray:
    """sigpy's L1-wavelet SENSE of one slice: y [C, H, W], maps [C, H, W], mask [W] -> complex [H, W]."""
    import sigpy as sp
    from sigpy.mri.app import L1WaveletRecon

    weights = np.broadcast_to(mask[None, :], y.shape[1:]).astype(np.float32)
    return L1WaveletRecon(y, np.asarray(maps, np.complex64), lam, weights=weights, wave_name=wave_name,
                          max_iter=iterations, show_pbar=False, device=sp.cpu_device).run()


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
    maps: np.ndarray | None = None,
    scale: float | None = None,
    **params,
) -> np.ndarray:
    """L1-wavelet SENSE reconstruction of every slice.

    kspace: complex64 [S, C, H, W] (phase encode along W, unacquired lines zero); mask: float32 [W]
    or None (fully sampled). lam: wavelet L1 weight relative to an image normalised to ~1 (the
    99.5th percentile of the zero-filled RSS); iterations: proximal-gradient iterations per slice.
    calib_width, sake_iterations: the coil-map calibration (:func:`coil_maps`); maps: complex
    [S, C, H, W] sensitivities to use instead (e.g. the simulator's true maps: the ceiling).
    scale: the intensity normalisation (default: the 99.5th percentile of the zero-filled RSS of
    the slices given); a caller that reconstructs a volume in slice batches passes the whole
    volume's, so that ``lam`` means the same for every batch.
    Returns float32 [S, H, W] magnitude in the input's units (the scale of ``reconstruction_rss``).
    Other ``params`` are accepted and ignored (one call shape for all recon methods).
    """
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

    if scale is None:
        scale = float(np.percentile(rss(ifft2c(kspace), coil_axis=1), 99.5)) or 1.0
    scale = float(scale)
    y = (kspace / scale).astype(np.complex64)
    if maps is None:
        maps = coil_maps(y, mask, num_low_frequency=num_low_frequency, calib_width=calib_width,
                         sake_iterations=sake_iterations)
    elif np.shape(maps) != kspace.shape:
        raise ValueError(f"maps shape {np.shape(maps)} != kspace shape {kspace.shape}")

    out = np.empty((S, H, W), dtype=np.float32)
    with _one_blas_thread():
        for s in range(S):
            with _seeded(s):
                out[s] = np.abs(_l1_sense(y[s], maps[s], mask, lam, iterations, wave_name))
    return out * np.float32(scale)
