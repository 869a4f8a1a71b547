"""Reportlets: the small PNG figures of a per-subject visual report (:mod:`mrichain.scoring.subject_report`).

Four kinds, each drawn from NIfTI files (matplotlib, Agg backend):

- :func:`contours`: a label map drawn as contour lines (not filled) over an image, three slices
  along each of the three orthogonal axes (rows sagittal, coronal, axial): the brain mask on the
  prepared image, the tissue segmentation (1 CSF, 2 GM, 3 WM) on the denoised image;
- :func:`compare`: several images of one grid side by side (columns) on their three mid-slices
  (rows), all with the window of the first (the before/after pair of a denoiser, a
  reconstruction beside its noise-free truth);
- :func:`edges`: registration: the template's edges (Canny edges of the template T1w, and/or the
  boundaries of its tissue labels) drawn over the subject image warped to it;
- :func:`brain_age`: each method's predicted age (years) with its interval where the
  predictions table has one, and the true age where it is known.

Every volume is reoriented to RAS (``nib.as_closest_canonical``) before drawing, so the views
agree across files whatever their voxel order; slices are shown with superior (sagittal,
coronal) or anterior (axial) up and the subject's right on the right of the coronal and axial
views, each pixel's aspect following the voxel sizes (mm). What a header claims is checked before
anything is read (:func:`mrichain.io.load_image`, plus :data:`MAX_AXIS` voxels along any axis):
a corrupt, absurd or missing file is an :class:`mrichain.io.InputImageError` naming it.

Each PNG is quantised to an adaptive 256-colour palette and redrawn smaller if it would exceed
:data:`MAX_PNG_BYTES`.
"""
from __future__ import annotations

import io as _io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from mrichain import LABELS
from mrichain.io import MAX_MATRIX, InputImageError, atomic_write, load_image

MAX_AXIS = MAX_MATRIX
"""Most voxels along any axis of a volume drawn here (1024: more is not an MRI volume)."""
MAX_PNG_BYTES = 200_000
"""A reportlet larger than this is redrawn at a lower resolution (down to half)."""
DPI = 80
VIEWS = ("sagittal", "coronal", "axial")
FRACTIONS = (0.3, 0.5, 0.7)
"""Where the slices of :func:`contours` sit along each axis, as fractions of the extent of the
label map's nonzero voxels."""
TISSUE_COLOURS = {1: "#31a9ff", 2: "#ff8c1a", 3: "#f5e50a"}
"""Contour colours of the tissue labels (CSF, GM, WM); other labels take matplotlib's cycle."""
EDGE_COLOUR = "#ff3030"


def load_volume(path, *, what: str = "image") -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 3-D NIfTI file as an array in RAS voxel order and its voxel sizes (mm).

    Returns (volume [X, Y, Z] float32, (dx, dy, dz) mm). Raises :class:`InputImageError` naming
    ``path`` when it is missing, unreadable, not 3-D, larger than :data:`MAX_AXIS` along an axis
    (checked from the header, before its voxels are read) or holds NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise InputImageError(f"{path}: no such {what} file")
    try:
        header_shape = tuple(int(n) for n in nib.load(str(path)).shape)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputImageError(f"{path}: cannot read NIfTI {what} ({type(exc).__name__}: {exc})") from exc
    shape = header_shape[:3] if len(header_shape) == 4 and header_shape[3] == 1 else header_shape
    if len(shape) != 3 or not all(1 <= n <= MAX_AXIS for n in shape):
        raise InputImageError(f"{path}: a reportlet draws 3-D volumes of 1-{MAX_AXIS} voxels per axis; "
                              f"the header claims shape {header_shape}")
    img = nib.as_closest_canonical(load_image(path))
    vox = tuple(float(v) for v in nib.affines.voxel_sizes(img.affine)[:3])
    if not all(math.isfinite(v) and v > 0 for v in vox):
        raise InputImageError(f"{path}: voxel sizes {vox} are not positive and finite")
    return np.asarray(img.dataobj, dtype=np.float32), vox


def _same_grid(shapes: list[tuple[tuple[int, ...], str]]) -> None:
    first, name = shapes[0]
    for shape, other in shapes[1:]:
        if shape != first:
            raise InputImageError(f"{other}: shape {shape} (RAS) differs from {name}'s {first}: "
                                  "a reportlet draws volumes of one grid")


def _slice(vol: np.ndarray, view: int, index: int) -> np.ndarray:
    """One slice of a RAS [X, Y, Z] volume, for display: rows top to bottom, columns left to right."""
    sl = (vol[index, :, :], vol[:, index, :], vol[:, :, index])[view]
    return np.rot90(sl)


def _aspect(vox: tuple[float, float, float], view: int) -> float:
    """Height / width of a displayed pixel (mm / mm) of a slice along ``view``."""
    dx, dy, dz = vox
    return (dz / dy, dz / dx, dy / dx)[view]


def _window(vol: np.ndarray) -> tuple[float, float]:
    """Grey window: the 0.5th to 99.5th percentile of the nonzero voxels (0-1 if there are none)."""
    values = vol[vol != 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _indices(extent_mask: np.ndarray, view: int, fractions=FRACTIONS) -> list[int]:
    """Slice indices along axis ``view`` at ``fractions`` of the extent of ``extent_mask``'s
    nonzero voxels (of the whole axis when it has none)."""
    n = extent_mask.shape[view]
    other = tuple(a for a in range(3) if a != view)
    present = np.flatnonzero(np.any(extent_mask, axis=other))
    lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, n - 1)
    return [round(lo + f * (hi - lo)) for f in fractions]


def _save(fig, path) -> Path:
    """Write ``fig`` as a palette PNG of at most :data:`MAX_PNG_BYTES` (redrawn at a lower
    resolution while larger, to half the DPI at most), atomically; closes ``fig``."""
    from PIL import Image

    path = Path(path)
    try:
        for dpi in (DPI, DPI * 0.8, DPI * 0.65, DPI * 0.5):
            buf = _io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
            buf.seek(0)
            with Image.open(buf) as im:
                pal = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            out = _io.BytesIO()
            pal.save(out, format="PNG", optimize=True)
            if out.tell() <= MAX_PNG_BYTES:
                break
    finally:
        plt.close(fig)
    with atomic_write(path) as tmp:
        tmp.write_bytes(out.getvalue())
    return path


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _finish(fig, title: str, out):
    """Title (if any), tight layout and save a reportlet figure; the PNG's path."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def _draw_contours(ax, labels_2d, values, linewidth: float) -> None:
    """The boundary of each label value of a 2-D label slice, in its colour (nothing where the
    value is absent or fills the slice)."""
    for i, v in enumerate(values):
        m = (labels_2d == v).astype(np.float32)
        if 0 < m.sum() < m.size:
            ax.contour(m, levels=[0.5], colors=[_label_colour(v, i)], linewidths=linewidth)


def _label_colour(value: int, i: int) -> str:
    return TISSUE_COLOURS.get(value) or f"C{i % 10}"


def contours(image, labels, out, *, label_names: dict[int, str] | None = None, title: str = "") -> Path:
    """The label map ``labels`` as contour lines over ``image``, saved as a PNG at ``out``.

    image, labels: NIfTI paths of one grid (3-D; labels: integer values, 0 background). Draws
    3 rows (sagittal, coronal, axial) x 3 slices at :data:`FRACTIONS` of the labels' extent; one
    contour colour per label value (:data:`TISSUE_COLOURS` for 1-3), named in a legend by
    ``label_names`` (default :data:`mrichain.LABELS`). A label map with no nonzero voxel draws
    the image alone (and says so in the title).
    """
    vol, vox = load_volume(image)
    lab, _ = load_volume(labels, what="label map")
    _same_grid([(vol.shape, str(image)), (lab.shape, str(labels))])
    lab = np.rint(lab).astype(np.int32)
    values = [int(v) for v in np.unique(lab) if v != 0]
    names = {**{k: v for k, v in LABELS.items() if k}, **(label_names or {})}
    lo, hi = _window(vol)
    fig, axes = plt.subplots(3, len(FRACTIONS), figsize=(2.3 * len(FRACTIONS), 7.0), squeeze=False)
    for view in range(3):
        for col, idx in enumerate(_indices(lab != 0 if values else vol != 0, view)):
            ax = axes[view, col]
            ax.imshow(_slice(vol, view, idx), cmap="gray", vmin=lo, vmax=hi, aspect=_aspect(vox, view),
                      interpolation="nearest")
            _draw_contours(ax, _slice(lab, view, idx), values, 0.9)
            _blank(ax)
            if col == 0:
                ax.set_ylabel(VIEWS[view], fontsize=8)
    handles = [matplotlib.lines.Line2D([], [], color=_label_colour(v, i), lw=2, label=names.get(v, str(v)))
               for i, v in enumerate(values)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title + ("" if values else " (empty label map)"), fontsize=9)
    fig.tight_layout(rect=(0, 0.04 if handles else 0, 1, 0.97))
    return _save(fig, out)


def compare(panels: list[tuple[str, str]], out, *, title: str = "") -> Path:
    """Images of one grid side by side, saved as a PNG at ``out``.

    panels: (column title, NIfTI path) in order; every panel uses the grey window of the first
    (:func:`_window`), so a change of contrast or noise between them is visible. Rows: the
    sagittal, coronal and axial mid-slices of the first panel's nonzero extent.
    """
    if not panels:
        raise ValueError("compare: no panel to draw")
    vols = [(name, *load_volume(path), str(path)) for name, path in panels]
    _same_grid([(v.shape, p) for _, v, _, p in vols])
    first, vox = vols[0][1], vols[0][2]
    lo, hi = _window(first)
    n = len(vols)
    fig, axes = plt.subplots(3, n, figsize=(2.1 * n, 6.6), squeeze=False)
    for view in range(3):
        idx = _indices(first != 0, view, (0.5,))[0]
        for col, (name, vol, _, _) in enumerate(vols):
            ax = axes[view, col]
            ax.imshow(_slice(vol, view, idx), cmap="gray", vmin=lo, vmax=hi, aspect=_aspect(vox, view),
                      interpolation="nearest")
            _blank(ax)
            if view == 0:
                ax.set_title(name, fontsize=8)
            if col == 0:
                ax.set_ylabel(VIEWS[view], fontsize=8)
    return _finish(fig, title, out)


EDGE_PIXELS = 160
"""A slice is upsampled (bilinear) until its longer side has about this many pixels (about its size
in the figure) before its Canny edges are found, so the edges are thin lines rather than whole voxels."""


EDGE_THRESHOLDS = (0.05, 0.15)
"""Canny's hysteresis thresholds on the gradient of the [0, 1]-scaled slice, per original pixel."""


def edge_map(slice2d: np.ndarray, sigma: float = 1.0) -> tuple[np.ndarray, int]:
    """Canny edges of one 2-D slice [H, W] (intensities scaled to [0, 1] by :func:`_window`).

    Returns (edges, bool [H * f, W * f], f): the slice is upsampled by the integer factor f
    (:data:`EDGE_PIXELS`) first; ``sigma`` is the Gaussian width in the slice's own pixels.
    """
    from scipy.ndimage import zoom
    from skimage.feature import canny

    lo, hi = _window(slice2d)
    scaled = np.clip((slice2d - lo) / (hi - lo), 0.0, 1.0)
    f = max(1, round(EDGE_PIXELS / max(slice2d.shape)))
    fine = zoom(scaled, f, order=1, grid_mode=True, mode="nearest") if f > 1 else scaled
    # upsampling divides the gradient per pixel by f: so are the hysteresis thresholds
    return canny(fine, sigma=sigma * f, low_threshold=EDGE_THRESHOLDS[0] / f, high_threshold=EDGE_THRESHOLDS[1] / f), f


def edges(image, out, *, template=None, template_labels=None, title: str = "", sigma: float = 1.0) -> Path:
    """Registration check: the template's edges over the subject ``image`` warped to it (PNG at ``out``).

    image: the warped subject image (NIfTI, on the template's grid); template: the template T1w,
    whose Canny edges (:func:`edge_map`, ``sigma`` in pixels) are drawn in red; template_labels:
    the template's tissue labels, whose boundaries are drawn as contour lines (at least one of
    the two). 3 rows (views) x 3 slices at :data:`FRACTIONS` of the template's extent.
    """
    if template is None and template_labels is None:
        raise ValueError("edges: give the template T1w, its labels, or both")
    vol, vox = load_volume(image)
    grids = [(vol.shape, str(image))]
    tpl = lab = None
    if template is not None:
        tpl, _ = load_volume(template, what="template")
        grids.append((tpl.shape, str(template)))
    if template_labels is not None:
        lab_f, _ = load_volume(template_labels, what="template label map")
        lab = np.rint(lab_f).astype(np.int32)
        grids.append((lab.shape, str(template_labels)))
    _same_grid(grids)
    extent = (tpl != 0) if tpl is not None else (lab != 0)
    values = [int(v) for v in np.unique(lab) if v != 0] if lab is not None else []
    lo, hi = _window(vol)
    fig, axes = plt.subplots(3, len(FRACTIONS), figsize=(2.3 * len(FRACTIONS), 7.0), squeeze=False)
    red = matplotlib.colors.ListedColormap([EDGE_COLOUR])
    for view in range(3):
        for col, idx in enumerate(_indices(extent, view)):
            ax = axes[view, col]
            ax.imshow(_slice(vol, view, idx), cmap="gray", vmin=lo, vmax=hi, aspect=_aspect(vox, view),
                      interpolation="nearest")
            if tpl is not None:
                sl = _slice(tpl, view, idx)
                e, _ = edge_map(sl, sigma)
                h, w = sl.shape
                ax.imshow(np.ma.masked_where(~e, e.astype(np.float32)), cmap=red, vmin=0, vmax=1,
                          aspect=_aspect(vox, view), interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            if lab is not None:
                _draw_contours(ax, _slice(lab, view, idx), values, 0.7)
            _blank(ax)
            if col == 0:
                ax.set_ylabel(VIEWS[view], fontsize=8)
    return _finish(fig, title, out)


def brain_age(rows: list[dict], out, *, true_age: float | None = None, title: str = "") -> Path:
    """Predicted brain age per method (PNG at ``out``).

    rows: one per method, ``{"method", "predicted" (years), "lower", "upper"}`` (the interval
    bounds None where the method gives none); true_age: years, drawn as a dashed line (None or NaN:
    unknown, left out).
    """
    n = max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(5.0, 0.9 + 0.35 * n))
    for i, r in enumerate(rows):
        if r.get("lower") is not None and r.get("upper") is not None:
            ax.plot([r["lower"], r["upper"]], [i, i], color="C0", lw=2, solid_capstyle="butt")
        ax.plot([r["predicted"]], [i], "o", color="C0", ms=5)
    known = true_age is not None and math.isfinite(float(true_age))
    if known:
        ax.axvline(float(true_age), color="k", ls="--", lw=1, label=f"true age {float(true_age):.1f} y")
        ax.legend(fontsize=7, loc="best", frameon=False)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["method"] for r in rows], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("age (years)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(title + ("" if known else " (true age unknown)"), fontsize=9)
    fig.tight_layout()
    return _save(fig, out)
