"""Three-tissue segmentation with ANTs Atropos (k-means initialisation, MRF prior), refined for
bias and partial volume.

Why the refinement (without it, brain age was no better than the mean). At 2 mm most CSF and GM voxels are
partial-volume mixtures, so a tissue's volume hinges on where the CSF/GM boundary falls on the
intensity axis: a shift of 1 % of the WM intensity moves the CSF fraction by about as much as 20
years of simulated atrophy. Atropos' Gaussian classes put that boundary where the mixture fit
lands, which varies from subject to subject with the tissue contrast (per-subject T1/T2/PD) and the
smooth multiplicative bias field, not at the point where a voxel is half CSF and half GM (which is
how the ground truth labels, the argmax of the tissue fractions, are defined). The refinement

1. estimates the bias field as a log-quadratic polynomial fitted to the locally brightest
   (T1w; darkest for T2w) voxels of Atropos' eroded WM class, trimming the residuals that point
   towards GM (partial volume only ever pulls WM towards GM), and divides it out;
2. estimates each tissue's pure intensity: CSF from the core of the ventricles (deep, eroded CSF),
   WM as the median of the eroded voxels beyond the GM/WM midpoint, and GM as the mean of two
   estimates with opposite biases: the mode of Atropos' GM class (too low: the class holds many
   CSF/GM mixtures) and the fixed point of "mode of the voxels between the CSF/GM and GM/WM
   midpoints" (too high when GM and WM are close: the WM peak pulls it). Against the pure-GM
   intensity of the simulated truth their mean errs by 1.1 % of WM (SD, 52 subjects) where either
   alone errs by 1.4-1.5 %;
3. labels each brain voxel by the midpoints between those pure intensities (CSF/GM, GM/WM), and
   returns to background the voxels at the mask edge (within 4 mm) that are darker than the
   midpoint between background and CSF (more than half background: the image-derived mask is a
   little wider than the brain).

On the 12 subjects of the default run (denoised R1) this raises mean tissue Dice from 0.78 to 0.88
(R4: 0.55 to 0.68; no subject worse) and the correlation of the CSF fraction with age from 0.50 to
0.90 (0.91 on 52 subjects; ground-truth labels: 0.96-0.97); the remaining gap is mostly the
residual bias (~1.8 % log-SD after correction, from 5.5 %). Cost:
about 0.5 s on top of Atropos' 3 s per 2 mm volume. ``partial_volume=False`` gives the plain
Atropos labels.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from mrichain.antsbridge import ants_env, to_ants
from mrichain.io import InputImageError, nifti_image
from mrichain.segment.brainmask import brain_mask

_ORDER = {"T1w": "ascending", "T2w": "descending"}

BIAS_DEGREE = 2
"""Degree of the log-polynomial bias model (a cubic fits selection noise rather than the field)."""
EDGE_MM = 4.0
MIN_MASK_VOXELS = 8
"""Fewest brain-mask voxels Atropos is run on (a 2x2x2 block splits into 3 classes; a mask of one
voxel, the largest component of a few scattered bright voxels, makes Atropos exit with status 1)."""
"""Depth below the mask surface within which voxels darker than the background/CSF midpoint are
returned to background."""


def _poly_basis(idx: tuple[np.ndarray, ...], degree: int) -> np.ndarray:
    """Monomials of the voxel coordinates (centred, scaled to ~[-1, 1]) up to ``degree``, no constant."""
    c = []
    for a in idx:
        a = a.astype(np.float64)
        c.append((a - a.mean()) / max(float(np.ptp(a)) / 2.0, 1.0))
    cols = [c[0] ** i * c[1] ** j * c[2] ** k
            for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)
            if i + j + k > 0]
    return np.stack(cols, axis=1)


def bias_field(data: np.ndarray, wm: np.ndarray, mask: np.ndarray, *, bright_wm: bool = True,
               degree: int = BIAS_DEGREE) -> np.ndarray:
    """Smooth multiplicative bias field float64 [X, Y, Z] (geometric mean 1 in ``mask``; 1 outside).

    Fits log(data) = c + polynomial(x, y, z) of ``degree`` to the voxels of the 1-voxel-eroded
    ``wm`` whose 3x3x3 mean is within 3 % of the brightest such mean in a 9-voxel window
    (``bright_wm``; T2w: the darkest), i.e. WM free of partial volume, with residuals trimmed
    asymmetrically (towards GM beyond 1 robust SD, away beyond 3). Returns ones when fewer than 50
    voxels qualify.

    Written here rather than antspyx's N4 (``ants.n4_bias_field_correction``) because N4 was
    measured worse on the simulated cohort: its field correlated 0.3-0.4 with the true one, the
    refined labels' mean Dice fell to 0.67, and it took ~25 s per 2 mm volume (this fit: < 0.5 s).
    """
    data = np.asarray(data, dtype=np.float64)
    mask = np.asarray(mask, bool)
    out = np.ones(data.shape)
    if not mask.any():
        return out
    mean3 = ndi.uniform_filter(data, 3)
    if bright_wm:
        sel = mean3 >= 0.97 * ndi.maximum_filter(mean3, size=9)
    else:
        sel = mean3 <= ndi.minimum_filter(mean3, size=9) / 0.97
    sel &= ndi.binary_erosion(wm) & mask & (data > 0)
    if sel.sum() < 50:
        return out
    idx = np.nonzero(mask)
    basis = _poly_basis(idx, degree)
    s = sel[idx]
    a = np.concatenate([np.ones((int(s.sum()), 1)), basis[s]], axis=1)
    y = np.log(data[idx][s])
    sign = 1.0 if bright_wm else -1.0
    keep = np.ones(y.shape, bool)
    coef = np.zeros(a.shape[1])
    for _ in range(6):
        coef = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        r = sign * (y - a @ coef)
        sd = 1.4826 * float(np.median(np.abs(r[keep] - np.median(r[keep]))))
        if sd <= 0:
            break
        new = (r > -sd) & (r < 3 * sd)
        if new.sum() < 50 or np.array_equal(new, keep):
            break
        keep = new
    logf = basis @ coef[1:]
    out[idx] = np.exp(logf - logf.mean())
    return out


def _mode(x: np.ndarray, bins: int = 100, smooth: float = 2.0) -> float:
    """Peak of the Gaussian-smoothed histogram of ``x`` (1st-99th percentile range)."""
    lo, hi = np.percentile(x, [1, 99])
    if not hi > lo:
        return float(np.median(x))
    h, e = np.histogram(x, bins=bins, range=(lo, hi))
    h = ndi.gaussian_filter1d(h.astype(np.float64), smooth)
    i = int(np.argmax(h))
    return float(0.5 * (e[i] + e[i + 1]))


def tissue_intensities(x: np.ndarray, labels: np.ndarray, mask: np.ndarray, voxel_mm=(1.0, 1.0, 1.0),
                       iterations: int = 20) -> tuple[float, float, float]:
    """Pure CSF, GM and WM intensities of a bias-corrected image, on an axis where CSF < GM < WM.

    x: float [X, Y, Z] (T2w: pass the negated image); labels: initial 1 CSF, 2 GM, 3 WM.
    CSF: median of the eroded CSF class deeper than 10 mm (ventricle core; lower quartile of the
    class if under 20 voxels). GM and WM start at the GM class mode and the eroded WM median and
    are iterated: GM = mode of the voxels between the CSF/GM and GM/WM midpoints, WM = median of
    the eroded voxels above the GM/WM midpoint. The GM returned is the mean of the start (biased
    low) and the fixed point (biased high at low GM/WM contrast); see the module docstring.
    """
    depth = ndi.distance_transform_edt(mask, sampling=voxel_mm)
    csf = labels == 1
    core = ndi.binary_erosion(csf) & (depth > 10.0)
    mu_c = float(np.median(x[core])) if core.sum() >= 20 else float(np.percentile(x[csf], 25))
    wm = ndi.binary_erosion(labels == 3)
    mu_w = float(np.median(x[wm])) if wm.sum() >= 20 else float(np.median(x[labels == 3]))
    mu_g = _mode(x[labels == 2]) if (labels == 2).sum() >= 20 else 0.5 * (mu_c + mu_w)
    start = mu_g
    for _ in range(iterations):
        gm = mask & (x > 0.5 * (mu_c + mu_g)) & (x < 0.5 * (mu_g + mu_w))
        if gm.sum() < 20:
            break
        g = _mode(x[gm])
        wm = ndi.binary_erosion(mask & (x >= 0.5 * (g + mu_w)))
        w = float(np.median(x[wm])) if wm.sum() >= 20 else mu_w
        done = abs(g - mu_g) + abs(w - mu_w) <= 1e-6 * abs(mu_w - mu_c)
        mu_g, mu_w = g, w
        if done:
            break
    return mu_c, 0.5 * (start + mu_g), mu_w


def refine_labels(data: np.ndarray, labels: np.ndarray, mask: np.ndarray, *, contrast: str = "T1w",
                  voxel_mm=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Bias-corrected, partial-volume-midpoint labels (uint8 [X, Y, Z], 0 BG 1 CSF 2 GM 3 WM).

    data: the image [X, Y, Z]; labels: an initial segmentation (Atropos'); mask: the brain mask.
    See the module docstring. Voxels outside ``mask`` stay background.
    """
    if contrast not in _ORDER:
        raise ValueError(f"contrast must be one of {sorted(_ORDER)}, got {contrast!r}")
    data = np.asarray(data, dtype=np.float64)
    mask = np.asarray(mask, bool) & (np.asarray(labels) > 0)
    labels = np.where(mask, np.asarray(labels), 0)
    if mask.sum() < 100 or any((labels == k).sum() < 20 for k in (1, 2, 3)):
        return labels.astype(np.uint8)
    bright = _ORDER[contrast] == "ascending"
    dc = data / bias_field(data, labels == 3, mask, bright_wm=bright)
    x = dc if bright else -dc
    mu_c, mu_g, mu_w = tissue_intensities(x, labels, mask, voxel_mm)
    out = np.zeros(data.shape, np.uint8)
    out[mask] = 2
    out[mask & (x < 0.5 * (mu_c + mu_g))] = 1
    out[mask & (x > 0.5 * (mu_g + mu_w))] = 3
    if (~mask).any():
        mu_b = float(np.median(dc[~mask]))
        depth = ndi.distance_transform_edt(mask, sampling=voxel_mm)
        edge = mask & (depth <= EDGE_MM)
        if bright:
            edge &= dc < 0.5 * (mu_b + mu_c)
        else:  # T2w: CSF brightest; background dark
            edge &= dc < 0.5 * (mu_b - mu_w)
        out[edge] = 0
    return out


def atropos(
    image: nib.Nifti1Image,
    *,
    contrast: str = "T1w",
    mrf_weight: float = 0.1,
    iterations: int = 5,
    partial_volume: bool = True,
    threads: int = 1,
) -> nib.Nifti1Image:
    """Segment a skull-free brain image into background, CSF, GM and WM.

    image: float [X, Y, Z]. The brain mask comes from :func:`brain_mask`; Atropos runs 3 classes
    with ``Kmeans[3]`` initialisation, an MRF prior of weight ``mrf_weight`` (1-voxel
    neighbourhood) and ``iterations`` EM iterations, with Atropos' constant internal seed
    (``--use-random-seed 0``), so the same input gives the same labels. Classes are mapped by mean
    intensity: T1w ascending (CSF < GM < WM), T2w descending. With ``partial_volume`` (default) the
    Atropos labels seed :func:`refine_labels` (bias correction, partial-volume midpoints, mask edge;
    see the module docstring); without it they are returned as Atropos gives them.
    Returns uint8 [X, Y, Z] labels 0 BG, 1 CSF, 2 GM, 3 WM on the grid/affine of ``image``.
    An image whose brain mask has fewer than :data:`MIN_MASK_VOXELS` voxels (all zero, constant,
    a few scattered voxels) raises :class:`mrichain.io.InputImageError` (Atropos itself would exit
    with status 1).
    """
    import ants

    if contrast not in _ORDER:
        raise ValueError(f"contrast must be one of {sorted(_ORDER)}, got {contrast!r}")
    mask = brain_mask(image)
    data = np.asarray(image.dataobj, dtype=np.float32)
    mask_arr = np.asarray(mask.dataobj) > 0
    n_mask = int(np.count_nonzero(mask_arr))
    if n_mask < MIN_MASK_VOXELS:
        what = "is empty (an all-zero or constant image)" if n_mask == 0 else f"has only {n_mask} voxel(s)"
        raise InputImageError(f"{image.get_filename() or 'the image'}: its brain mask {what}; Atropos needs at "
                              f"least {MIN_MASK_VOXELS} brain voxels to split into 3 tissue classes")
    # Atropos' Gaussian classes fail on a (near-)singular variance (< 1e-6), which happens for
    # raw fastMRI-scale intensities (~1e-4) or noise-free input: scale the brain's 99th percentile
    # to 100 and add a fixed-seed jitter of SD 0.01 (SNR 1e4; far below any scanner noise).
    brain = data[mask_arr]
    scale = float(np.percentile(brain, 99)) if brain.size else 0.0
    scaled = data * (100.0 / scale) if scale > 0 else data.copy()
    scaled = scaled + np.random.default_rng(0).normal(0.0, 0.01, size=data.shape).astype(np.float32)
    work = nib.Nifti1Image(scaled.astype(np.float32), image.affine)
    with ants_env(threads):
        img_a = to_ants(work)
        mask_a = to_ants(mask)
        res = ants.atropos(
            a=img_a, x=mask_a, i="Kmeans[3]", m=f"[{float(mrf_weight)},1x1x1]",
            c=f"[{int(iterations)},0]", r=0, v=0,
        )
        seg = np.rint(res["segmentation"].numpy()).astype(np.int64)
    seg[~mask_arr] = 0
    classes = [k for k in (1, 2, 3) if np.any(seg == k)]
    means = [float(data[seg == k].mean()) for k in classes]
    order = np.argsort(means)
    if _ORDER[contrast] == "descending":
        order = order[::-1]
    out = np.zeros(seg.shape, np.uint8)
    for tissue, idx in enumerate(order, start=1):
        out[seg == classes[idx]] = tissue
    if partial_volume:
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
        out = refine_labels(data, out, mask_arr, contrast=contrast, voxel_mm=zooms)
    return nifti_image(out, image.affine, dtype=np.uint8)
