"""Scores for every stage, using the field's definitions.

Reconstruction/denoising scores follow fastMRI's ``evaluate.py`` (NMSE, PSNR with
``data_range = gt.max()``, SSIM per slice along axis 0 with ``data_range`` = volume max, averaged
over slices). Segmentation overlap uses MONAI (Dice, 95th-percentile Hausdorff distance in mm).
Volumes are [S, H, W] (reconstruction, slices along axis 0) or [X, Y, Z] (images, label maps).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def nmse(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised mean squared error ||gt - pred||^2 / ||gt||^2 (unitless), as fastMRI; with
    ``mask`` (same shape, nonzero = inside) both norms are taken over the masked voxels only."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if mask is not None:
        inside = np.asarray(mask) > 0
        gt, pred = gt[inside], pred[inside]
    return float(np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2)


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (skimage), ``data_range = gt.max()`` unless ``maxval``.

    With ``mask`` (same shape, nonzero = inside) the mean squared error is taken over the masked
    voxels only; ``data_range`` stays the maximum of the whole ``gt``.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    maxval = float(gt.max()) if maxval is None else float(maxval)
    if mask is not None:
        inside = np.asarray(mask) > 0
        gt, pred = gt[inside], pred[inside]
    return float(peak_signal_noise_ratio(gt, pred, data_range=maxval))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None, mask: np.ndarray | None = None) -> float:
    """Mean structural similarity over slices along axis 0, as fastMRI's ``evaluate.ssim``.

    gt, pred: [S, H, W] (H, W >= 7). ``data_range`` is ``gt.max()`` of the whole volume unless
    ``maxval`` is given; skimage's default 7x7 uniform window. With ``mask`` ([S, H, W], nonzero
    = inside) the per-pixel SSIM map of each slice is averaged over the masked pixels of all
    slices instead (slices without masked pixels do not count).
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"ssim needs two [S, H, W] volumes of equal shape, got {gt.shape} and {pred.shape}")
    maxval = float(gt.max()) if maxval is None else float(maxval)
    if mask is not None:
        inside = np.asarray(mask) > 0
        values = [
            structural_similarity(gt[s], pred[s], data_range=maxval, full=True)[1][inside[s]]
            for s in range(gt.shape[0])
            if inside[s].any()
        ]
        return float(np.concatenate(values).mean())
    total = 0.0
    for s in range(gt.shape[0]):
        total += structural_similarity(gt[s], pred[s], data_range=maxval)
    return float(total / gt.shape[0])


def _onehot(a: np.ndarray, b: np.ndarray, label: int):
    import torch

    pa = torch.from_numpy(np.asarray(a) == label)[None, None]
    pb = torch.from_numpy(np.asarray(b) == label)[None, None]
    return pa, pb


def dice(a: np.ndarray, b: np.ndarray, labels=(1, 2, 3)) -> dict[int, float]:
    """Dice overlap per label between two integer label maps of equal shape ([X, Y, Z]).

    Returns ``{label: dice}`` in [0, 1] (MONAI ``compute_dice``); NaN where the label is absent
    from both maps.
    """
    from monai.metrics import compute_dice

    # ignore_empty=False: a label missing from one map scores 0, not NaN
    return _per_label(a, b, labels, lambda pa, pb: compute_dice(pa.float(), pb.float(), include_background=True,
                                                                 ignore_empty=False), nan_unless=np.logical_or)


def hd95(a: np.ndarray, b: np.ndarray, labels=(1, 2, 3), spacing=(1.0, 1.0, 1.0)) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance per label, in mm.

    MONAI ``compute_hausdorff_distance(percentile=95)``: Euclidean distances between the label
    surfaces, 95th percentile of each directed set, maximum of the two; ``spacing`` is the voxel
    size in mm (e.g. ``img.header.get_zooms()[:3]``). NaN where a label is absent from either map.
    """
    from monai.metrics import compute_hausdorff_distance

    def score(pa, pb):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return compute_hausdorff_distance(pa, pb, include_background=True, percentile=95,
                                              spacing=[float(s) for s in spacing])

    return _per_label(a, b, labels, score, nan_unless=np.logical_and)


def _per_label(a: np.ndarray, b: np.ndarray, labels, score, *, nan_unless) -> dict[int, float]:
    """``{label: score(one-hot a, one-hot b)}`` over two label maps of one shape; NaN for a label
    unless ``nan_unless(present in a, present in b)`` (or: either map holds it; and: both do)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    out = {}
    for lab in labels:
        pa, pb = _onehot(a, b, lab)
        out[int(lab)] = float(score(pa, pb).item()) if nan_unless(bool(pa.any()), bool(pb.any())) else float("nan")
    return out


def folding_percent(jacobian: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Percentage (0-100) of voxels with Jacobian determinant <= 0, inside ``mask`` if given."""
    jac = np.asarray(jacobian)
    if mask is not None:
        jac = jac[np.asarray(mask) > 0]
    if jac.size == 0:
        return float("nan")
    return float(100.0 * np.count_nonzero(jac <= 0) / jac.size)


def mae(y, yhat) -> float:
    """Mean absolute error, in the units of ``y`` (years for brain age)."""
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    return float(np.mean(np.abs(y - yhat)))


def interval_coverage(y, lo, hi) -> float:
    """Fraction (0-1) of ``y`` inside the closed predictive interval [lo, hi]."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi))))


CHECK_PREFIX = "check_"
"""Prefix of the per-subject rows that are evidence for the "did it learn" check
(:mod:`mrichain.scoring.evaluate`, :func:`mrichain.scoring.aggregate.learned_checks`), not scores: no direction,
kept out of ``metrics.json`` and the score tables."""

@dataclass(frozen=True)
class Metric:
    """One score of the tables: ``name`` (also the prefix of a family: ``dice`` covers
    ``dice_csf`` ... ``dice_mean``), its ``unit``, whether higher is better (None: neither, e.g.
    the measured SNR or interval coverage, whose target is the nominal level) and, where the
    per-subject name differs from the cohort table's, ``table_name`` (a subject's absolute error
    is the table's mean absolute error)."""

    name: str
    unit: str
    higher_is_better: bool | None
    table_name: str | None = None


METRICS: tuple[Metric, ...] = (
    Metric("psnr", "dB", True), Metric("ssim", "", True), Metric("nmse", "", False),
    Metric("dice", "", True), Metric("t1w_dice", "", True), Metric("hd95", "mm", False),
    Metric("folding_percent", "%", False), Metric("speedup", "x", True), Metric("seconds", "s", False),
    Metric("abs_error_years", "y", False, table_name="mae_years"), Metric("mae_years", "y", False),
    Metric("interval_width", "y", False), Metric("in_interval", "", None, table_name="interval_coverage"),
    Metric("interval_coverage", "", None), Metric("t1_mape", "%", False), Metric("t2_mape", "%", False),
    Metric("snr_measured", "", None), Metric("acceleration_measured", "", None),
    Metric("auc", "", True),  # area under the ROC curve of a detector (motion: moved shots)
)
"""Every score's facts, in one place: the tables' direction, units and renames derive from it."""

_BY_PREFIX = sorted(METRICS, key=lambda m: -len(m.name))


def metric(name: str) -> Metric | None:
    """The :class:`Metric` a score name belongs to (its own entry or its family's: the longest
    ``name`` that equals it or prefixes it before a ``_``); None for an unknown name."""
    return next((m for m in _BY_PREFIX if name == m.name or name.startswith(m.name + "_")), None)


def higher_is_better(name: str) -> bool | None:
    """True / False by the metric's definition (:data:`METRICS`); None where neither direction is
    better or the name is unknown."""
    m = metric(name)
    return None if m is None else m.higher_is_better


TABLE_NAMES: dict[str, str] = {m.name: m.table_name for m in METRICS if m.table_name}
"""Per-subject score name -> its name in the cohort tables (``abs_error_years`` -> ``mae_years``)."""
