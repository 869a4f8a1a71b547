"""The anatomical template: MNI152 2009a (shipped in nilearn, offline) as tissue probabilities.

All arrays are on one isotropic grid in RAS+ millimetres, cropped to the brain bounding box plus
a margin. Tissue classes follow :data:`mrichain.LABELS`: 0 BG, 1 CSF, 2 GM, 3 WM.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from mrichain.io import load_image, save_image
from mrichain.plan.layout import TEMPLATE, TEMPLATE_NAME

FILES = {k: f"{TEMPLATE_NAME}_{v}" for k, v in TEMPLATE.items()}
"""Template file names in its directory, by key (:data:`mrichain.plan.layout.TEMPLATE`)."""
MARGIN_MM = 8.0
"""Background margin kept around the brain bounding box (larger than any simulated warp)."""


@dataclass
class Template:
    """The template on one grid.

    t1w: float32 [X, Y, Z], MNI T1 masked to the brain, scaled to [0, 1];
    probs: float32 [4, X, Y, Z], tissue probabilities BG, CSF, GM, WM, summing to 1 per voxel;
    labels: uint8 [X, Y, Z], argmax of ``probs`` (0 BG, 1 CSF, 2 GM, 3 WM);
    brain_mask: uint8 [X, Y, Z], 1 inside the brain (ventricles and sulcal CSF included);
    affine: float64 4x4, voxel index -> RAS mm.
    """

    t1w: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    brain_mask: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.labels.shape)

    @property
    def voxel_mm(self) -> float:
        return float(abs(self.affine[0, 0]))


def _load_resampled(resolution_mm: float):
    """nilearn's MNI152 T1/GM/WM resampled to ``resolution_mm`` isotropic: 3 float arrays + affine."""
    from nilearn import datasets, image

    src_res = 1 if resolution_mm < 2 else 2
    loaders = (datasets.load_mni152_template, datasets.load_mni152_gm_template, datasets.load_mni152_wm_template)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imgs = [f(resolution=src_res) for f in loaders]
        src_aff = imgs[0].affine
        if np.isclose(resolution_mm, src_res):
            return [np.asarray(im.get_fdata(), dtype=np.float64) for im in imgs], np.array(src_aff)
        # Field of view kept, voxels resized; anti-alias by the extra blur a bigger voxel implies.
        extent = np.array(imgs[0].shape) * src_res
        shape = tuple(int(np.ceil(e / resolution_mm)) for e in extent)
        aff = np.array(src_aff, dtype=np.float64)
        aff[:3, :3] = np.diag([resolution_mm] * 3)
        fwhm = float(np.sqrt(max(resolution_mm**2 - src_res**2, 0.0)))
        out = []
        for im in imgs:
            im = image.new_img_like(im, np.asarray(im.get_fdata(), dtype=np.float32), copy_header=True)
            if fwhm > 0:
                im = image.smooth_img(im, fwhm)
            r = image.resample_img(
                im, target_affine=aff, target_shape=shape, interpolation="continuous",
                force_resample=True, copy_header=True,
            )
            out.append(np.asarray(r.get_fdata(), dtype=np.float64))
        return out, aff


def build_template(resolution_mm: float) -> Template:
    """Build the template at ``resolution_mm`` (isotropic) from nilearn's MNI152 2009a maps.

    Brain mask: the (brain-extracted) MNI T1 support united with closed GM+WM, holes filled, so
    ventricles and sulcal CSF lie inside. CSF = clip(brain - GM - WM), BG = 1 - brain, where
    ``brain`` is the mask slightly smoothed (partial volume at the brain edge) or GM+WM if larger.
    """
    (t1, gm, wm), aff = _load_resampled(float(resolution_mm))
    t1 = np.clip(np.nan_to_num(t1), 0, None)
    gm = np.clip(np.nan_to_num(gm), 0, 1)
    wm = np.clip(np.nan_to_num(wm), 0, 1)
    tissue = gm + wm
    over = tissue > 1
    gm[over] /= tissue[over]
    wm[over] /= tissue[over]
    tissue = gm + wm

    close_it = max(1, int(round(4.0 / resolution_mm)))
    mask = ndi.binary_closing(tissue > 0.1, iterations=close_it, border_value=0)
    mask |= t1 > 0.1 * t1.max()
    mask = ndi.binary_fill_holes(mask)
    lab, n = ndi.label(mask)
    if n > 1:  # keep the brain, drop stray islands
        sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))

    brain = np.maximum(ndi.gaussian_filter(mask.astype(np.float64), 0.5), tissue)
    brain = np.clip(brain, 0, 1)
    brain[mask] = 1.0
    csf = np.clip(brain - tissue, 0, 1)
    bg = 1.0 - brain
    probs = np.stack([bg, csf, gm, wm])
    probs /= probs.sum(0, keepdims=True)

    # crop to brain bounding box + margin
    margin = int(np.ceil(MARGIN_MM / resolution_mm))
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    aff = aff.copy()
    aff[:3, 3] = aff[:3, :3] @ lo + aff[:3, 3]

    t1c = t1[sl] * mask[sl]
    t1c = t1c / max(float(t1c.max()), 1e-12)
    probs = probs[(slice(None),) + sl].astype(np.float32)
    return Template(
        t1w=t1c.astype(np.float32),
        probs=probs,
        labels=np.argmax(probs, axis=0).astype(np.uint8),
        brain_mask=mask[sl].astype(np.uint8),
        affine=aff,
    )


def write_template(t: Template, outdir: str | Path) -> dict[str, Path]:
    """Write the template files into ``outdir``; returns {'t1w'|'dseg'|'mask'|'probseg': path}.

    probseg is float32 [X, Y, Z, 4] (BG, CSF, GM, WM on the last axis, BIDS style).
    """
    outdir = Path(outdir)
    paths = {k: outdir / v for k, v in FILES.items()}
    save_image(t.t1w, t.affine, paths["T1w"])
    save_image(t.labels, t.affine, paths["dseg"], dtype=np.uint8)
    save_image(t.brain_mask, t.affine, paths["brain_mask"], dtype=np.uint8)
    save_image(np.moveaxis(t.probs, 0, -1), t.affine, paths["probseg"])
    return paths


def read_template(outdir: str | Path) -> Template:
    """Read a template written by :func:`write_template`."""
    outdir = Path(outdir)
    t1 = load_image(outdir / FILES["T1w"])
    probs = np.asarray(load_image(outdir / FILES["probseg"], ndim=4).dataobj, dtype=np.float32)
    return Template(
        t1w=np.asarray(t1.dataobj, dtype=np.float32),
        probs=np.ascontiguousarray(np.moveaxis(probs, -1, 0)),
        labels=np.asarray(load_image(outdir / FILES["dseg"]).dataobj, dtype=np.uint8),
        brain_mask=np.asarray(load_image(outdir / FILES["brain_mask"]).dataobj, dtype=np.uint8),
        affine=np.array(t1.affine, dtype=np.float64),
    )
