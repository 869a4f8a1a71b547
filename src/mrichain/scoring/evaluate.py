"""Scoring of each stage against ground truth, from the files a rule lists in its manifest.

``score_stage(manifest)`` returns a long table with one row per (subject, method, metric):
columns ``stage, acq, subject, split, method, metric, value``. Definitions (docs/explanation/evidence.md):

- acquire: measured SNR and measured acceleration of each simulated k-space file;
- reconstruct: fastMRI NMSE, PSNR (dB), SSIM of [slices, H, W] against ``reconstruction_rss`` (the
  noisy fully sampled RSS: fastMRI's convention), and ``nmse_truth``, ``psnr_truth``,
  ``ssim_truth`` against the noise-free image inside the ground-truth brain mask (the primary
  scores: a method that removes noise is not penalised for it);
- denoise: PSNR (dB), SSIM against the noise-free image inside the ground-truth brain mask
  (axial slices; the mask keeps the noise floor of the coil-combined background, which no
  denoiser is asked to remove, from dominating the score); the undenoised input is scored too,
  as method ``input``, so the gain is visible;
- register: Dice per tissue of the warped ground-truth labels against the template labels,
  % voxels with Jacobian determinant <= 0 inside the template brain, seconds per pair; when the
  subject and template grids match (as in the simulation), the unregistered labels are scored
  too, as method ``identity``: with the ``affine`` method, the floors a registration has to beat;
- segment: Dice and 95th-percentile Hausdorff distance (mm) per tissue in native space;
- predict: absolute error of the predicted age (years); the aggregate over the test split is MAE
  (the ``mean`` method, the train split's mean age for everyone, is the floor).
  Methods with a predictive interval also get ``in_interval`` (0/1; its test mean is the
  interval coverage) and the interval width in years.

Every method also gets ``seconds``: the wall time of its job from Snakemake's benchmark file,
where one exists.

Rows whose metric starts with ``check_`` (:data:`mrichain.scoring.metrics.CHECK_PREFIX`) are not scores
but the evidence of the "did it learn" check (:func:`mrichain.scoring.aggregate.learned_checks` summarises
them over the test subjects and judges them; they stay out of ``metrics.json`` and the score
tables). Per subject, for every method but the floors:

- reconstruct, denoise: ``check_change_vs_<floor>`` = mean |output - floor output| / mean |floor
  output| inside the ground-truth brain, and ``check_change_of_error_vs_<floor>`` = mean |output -
  floor output| / mean |floor output - noise-free truth| there (the floor is zero-filled,
  respectively the undenoised input: what a network that starts at, or stays at, the identity
  returns); an identity output gives 0;
- register: ``check_label_change_vs_<floor>``, the fraction of voxels labelled tissue by either
  the method or the floor (``identity``: the unregistered labels; ``affine``) whose label differs
  between the two; a network that stays at the identity gives ~0;
- segment: ``check_classes``, how many tissue classes each cover at least
  :data:`CLASS_MIN_FRACTION` of the ground-truth brain (a constant, one-class output gives 0 or 1);
- predict: ``check_predicted_age`` and ``check_age`` (years) of every subject of every split, so
  the spread of the predictions can be set against the spread of the ages.

Every learned method whose model card the manifest lists (``cards: {method: path}``) also gets a
cohort-level row ``check_beats_start`` (1 or 0): the card's ``beats_start`` (whether any epoch's
val score beat the untrained network's); a card without the key gives no row (unknown, not false).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mrichain import LABELS

from mrichain.plan import layout

from mrichain.scoring import metrics
from mrichain.io import load_image, load_json, read_kspace, read_reconstruction_rss
from mrichain.scoring.metrics import CHECK_PREFIX
from mrichain.scoring.figures import save_montage, save_scatter
from mrichain.plan.stages import FLOOR, SCORERS, stage

TISSUES = (1, 2, 3)

CLASS_MIN_FRACTION = 0.01
"""A tissue class counts as present in a segmentation when it covers at least this fraction of the
ground-truth brain's voxels (1 %: the smallest tissue here, CSF, covers far more; stray voxels of
an otherwise constant output do not count)."""


def _vol(path) -> np.ndarray:
    return np.asarray(load_image(path).dataobj, dtype=np.float32)


def _labels(path) -> np.ndarray:
    return np.rint(np.asarray(load_image(path).dataobj)).astype(np.uint8)


def _axial_first(vol: np.ndarray) -> np.ndarray:
    """[X, Y, Z] -> [Z, X, Y]: slices first, as fastMRI scores volumes."""
    return np.moveaxis(vol, -1, 0)


def _seconds(benchmarks_dir, stage_name, sub, acq, method) -> float | None:
    """Wall seconds of a method's job, from Snakemake's benchmark file (None where there is none)."""
    if benchmarks_dir is None:
        return None
    name = layout.job_name(stage(stage_name), sub, acq, method)
    f = Path(layout.benchmark(stage_name, name, root=str(benchmarks_dir)))
    if not f.exists():
        return None
    return float(pd.read_csv(f, sep="\t")["s"].iloc[0])


def _tissue_rows(prefix: str, values: dict[int, float]) -> dict[str, float]:
    out = {f"{prefix}_{LABELS[k].lower()}": float(v) for k, v in values.items()}
    out[f"{prefix}_mean"] = float(np.mean(list(values.values())))
    return out


def _floors(stage_name: str) -> list[str]:
    """The declared floors of a stage (the scorer-computed ones are added by their scorers)."""
    return [m.name for m in stage(stage_name).methods if m.kind == FLOOR]


def _image_change(pred: np.ndarray, floor: np.ndarray, truth: np.ndarray, brain: np.ndarray,
                  name: str) -> dict[str, float]:
    """How far an image-to-image output moved from the floor's output, inside ``brain``
    (module docstring): relative to the floor's intensity and to the floor's own error against
    ``truth`` (NaN where that error is 0). All arrays of one shape."""
    inside = brain > 0
    change = float(np.mean(np.abs(pred[inside] - floor[inside])))
    scale = float(np.mean(np.abs(floor[inside])))
    error = float(np.mean(np.abs(floor[inside] - truth[inside])))
    return {f"{CHECK_PREFIX}change_vs_{name}": change / scale if scale > 0 else np.nan,
            f"{CHECK_PREFIX}change_of_error_vs_{name}": change / error if error > 0 else np.nan}


def label_change(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of the voxels labelled non-zero in ``a`` or ``b`` whose labels differ (NaN where
    neither labels any voxel)."""
    tissue = (a > 0) | (b > 0)
    n = int(tissue.sum())
    return float(np.count_nonzero(a[tissue] != b[tissue]) / n) if n else np.nan


def n_classes(seg: np.ndarray, brain: np.ndarray, labels=TISSUES, min_fraction: float = CLASS_MIN_FRACTION) -> int:
    """How many of ``labels`` each cover at least ``min_fraction`` of the ``brain`` voxel count."""
    size = max(int(np.count_nonzero(brain)), 1)
    return int(sum(np.count_nonzero(seg == k) / size >= min_fraction for k in labels))


def score_acquire(sub: str, e: dict, acq: str, figures: Path) -> dict[str, dict[str, float]]:
    from mrichain.simulate.acquire import measure_acquisition

    m = measure_acquisition(e["kspace"], e["noisefree"], e["mask"])
    if figures is not None:
        k = read_kspace(e["kspace"])
        mid = k.kspace.shape[0] // 2
        logk = np.log1p(np.abs(k.kspace[mid, 0]) / (np.abs(k.kspace[mid, 0]).max() + 1e-12) * 1e4)
        nf = _vol(e["noisefree"])
        rss = np.moveaxis(k.reconstruction_rss, 0, -1) if k.reconstruction_rss is not None else nf
        save_montage(
            [("noise-free", nf, "image"), ("fully sampled RSS", rss, "image"),
             ("k-space coil 0 (log)", np.repeat(logk[:, :, None], 3, axis=2), "image")],
            figures / f"{sub}.png", title=f"{sub} acquire {acq}",
        )
    return {"simulated": {"snr_measured": m["snr"], "acceleration_measured": m["acceleration"]}}


def score_reconstruct(sub, e, acq, figures):
    ref = read_reconstruction_rss(e["reference"])
    if ref is None:
        raise ValueError(f"{e['reference']}: no reconstruction_rss to score against")
    truth = _axial_first(_vol(e["truth"]))
    brain = _axial_first(_labels(e["mask"]))
    out, panels = {}, [("reference RSS", np.moveaxis(ref, 0, -1), "image")]
    floors = {m: _axial_first(_vol(e["methods"][m]["image"])) for m in _floors("reconstruct") if m in e["methods"]}
    for method, files in e["methods"].items():
        pred = floors[method] if method in floors else _axial_first(_vol(files["image"]))
        out[method] = {
            "nmse": metrics.nmse(ref, pred),
            "psnr": metrics.psnr(ref, pred),
            "ssim": metrics.ssim(ref, pred),
            "nmse_truth": metrics.nmse(truth, pred, mask=brain),
            "psnr_truth": metrics.psnr(truth, pred, mask=brain),
            "ssim_truth": metrics.ssim(truth, pred, mask=brain),
        }
        if method not in floors:
            for name, floor in floors.items():
                out[method].update(_image_change(pred, floor, truth, brain, name))
        panels += [(method, np.moveaxis(pred, 0, -1), "image"),
                   (f"|{method} - ref|", np.abs(np.moveaxis(pred - ref, 0, -1)), "error")]
    if figures is not None:
        save_montage(panels, figures / f"{sub}.png", title=f"{sub} reconstruct {acq}")
    return out


def score_motion(sub, e, acq, figures):
    """A moving head's correction: each method's image against the still head's noise-free image
    (``*_truth`` inside the brain mask, as the reconstruction stage), and its shot scores as a
    detector of the shots acquired away from the rest pose (``auc`` over the shots holding acquired
    lines, from the k-space file's true poses: ``sklearn.metrics.roc_auc_score``; NaN where every
    such shot or none moved, where the ranking is undefined)."""
    from sklearn.metrics import roc_auc_score

    from mrichain.simulate.motion import lines_per_shot

    kf = read_kspace(e["kspace"])
    if kf.motion_poses is None:
        raise ValueError(f"{e['kspace']}: no motion_poses: not a motion acquisition")
    played = lines_per_shot(kf.motion_shot, kf.mask, len(kf.motion_poses)) > 0  # shots with data
    moved = np.any(kf.motion_poses != kf.motion_poses[0], axis=1)[played]
    truth = _axial_first(_vol(e["truth"]))
    brain = _axial_first(_labels(e["mask"]))
    out, panels = {}, [("noise-free (still head)", np.moveaxis(truth, 0, -1), "image")]
    for method, files in e["methods"].items():
        pred = _axial_first(_vol(files["image"]))
        scores = pd.read_csv(files["shots"], sep="\t")["score"].to_numpy(dtype=float)
        if len(scores) != len(played):
            raise ValueError(f"{files['shots']}: {len(scores)} shots, the acquisition has {len(played)}")
        scores = scores[played]
        out[method] = {
            "nmse_truth": metrics.nmse(truth, pred, mask=brain),
            "psnr_truth": metrics.psnr(truth, pred, mask=brain),
            "ssim_truth": metrics.ssim(truth, pred, mask=brain),
            "auc": float(roc_auc_score(moved, scores)) if 0 < moved.sum() < len(moved) else np.nan,
        }
        panels += [(method, np.moveaxis(pred, 0, -1), "image"),
                   (f"|{method} - truth|", np.abs(np.moveaxis(pred - truth, 0, -1)), "error")]
    if figures is not None:
        save_montage(panels, figures / f"{sub}.png", title=f"{sub} motion {acq}")
    return out


def score_denoise(sub, e, acq, figures):
    ref = _vol(e["reference"])
    ref_s = _axial_first(ref)
    brain = _axial_first(_labels(e["mask"]))
    candidates = {"input": e["input"], **{m: files["image"] for m, files in e["methods"].items()}}
    out, panels = {}, [("noise-free", ref, "image")]
    floor = None
    for method, path in candidates.items():
        pred = _axial_first(_vol(path))
        out[method] = {"psnr": metrics.psnr(ref_s, pred, mask=brain), "ssim": metrics.ssim(ref_s, pred, mask=brain)}
        if method == "input":
            floor = pred
        else:
            out[method].update(_image_change(pred, floor, ref_s, brain, "input"))
        pred = np.moveaxis(pred, 0, -1)
        panels.append((method, pred, "image"))
    if figures is not None:
        save_montage(panels, figures / f"{sub}.png", title=f"{sub} denoise {acq}")
    return out


def score_register(sub, e, acq, figures):
    ref = _labels(e["reference"])
    brain = ref > 0
    out, floors = {}, {}
    if "unregistered" in e:
        # the subject's labels as they lie, without any registration: the floor every method must beat
        native = _labels(e["unregistered"])
        if native.shape == ref.shape:
            out["identity"] = _tissue_rows("dice", metrics.dice(ref, native, labels=TISSUES))
            floors["identity"] = native
    panels = [("template", _vol(e["fixed"]), "image"), ("template labels", ref, "labels")]
    warped_by = {method: _labels(files["labels"]) for method, files in e["methods"].items()}
    floors.update({m: warped_by[m] for m in _floors("register") if m in warped_by})
    for method, files in e["methods"].items():
        warped = warped_by[method]
        jac = _vol(files["jacobian"])
        row = _tissue_rows("dice", metrics.dice(ref, warped, labels=TISSUES))
        row["folding_percent"] = metrics.folding_percent(jac, brain)
        row["seconds_per_pair"] = float(load_json(files["timing"])["seconds_per_pair"])
        if method not in floors:
            row.update({f"{CHECK_PREFIX}label_change_vs_{name}": label_change(warped, labels)
                        for name, labels in floors.items() if labels.shape == warped.shape})
        out[method] = row
        panels += [(f"{method} warped", _vol(files["image"]), "image"), (f"{method} labels", warped, "labels")]
    if figures is not None:
        save_montage(panels, figures / f"{sub}.png", title=f"{sub} register {acq}")
    return out


def score_segment(sub, e, acq, figures):
    ref_img = load_image(e["reference"])
    ref = _labels(e["reference"])
    spacing = tuple(float(s) for s in ref_img.header.get_zooms()[:3])
    out, panels = {}, [("input", _vol(e["input"]), "image"), ("ground truth", ref, "labels")]
    floors = _floors("segment")
    for method, files in e["methods"].items():
        seg = _labels(files["labels"])
        row = _tissue_rows("dice", metrics.dice(ref, seg, labels=TISSUES))
        row.update(_tissue_rows("hd95_mm", metrics.hd95(ref, seg, labels=TISSUES, spacing=spacing)))
        if method not in floors:
            row[f"{CHECK_PREFIX}classes"] = n_classes(seg, ref > 0)
        out[method] = row
        panels.append((method, seg, "labels"))
    if figures is not None:
        save_montage(panels, figures / f"{sub}.png", title=f"{sub} segment {acq}")
    return out


def score_predict(manifest: dict, benchmarks_dir, figures: Path | None) -> list[dict]:
    """Cohort-level scorer: rows of (subject, split, method, metric, value) from each method's
    predictions table."""
    rows = []
    acq = manifest["acq"]
    kind_of = {m.name: m.kind for m in stage("predict").methods}
    for method, files in manifest["methods"].items():
        table = pd.read_csv(files["predictions"], sep="\t")
        has_interval = {"predicted_lower", "predicted_upper"} <= set(table.columns)
        for r in table.itertuples():
            rows.append(dict(subject=r.subject, split=r.split, method=method,
                             metric="abs_error_years", value=abs(r.predicted_age - r.age)))
            if kind_of[method] != FLOOR:
                rows += [dict(subject=r.subject, split=r.split, method=method, metric=f"{CHECK_PREFIX}{k}", value=v)
                         for k, v in (("predicted_age", r.predicted_age), ("age", r.age))]
            if has_interval:
                inside = float(r.predicted_lower <= r.age <= r.predicted_upper)
                rows.append(dict(subject=r.subject, split=r.split, method=method, metric="in_interval", value=inside))
                rows.append(dict(subject=r.subject, split=r.split, method=method, metric="interval_width_years",
                                 value=r.predicted_upper - r.predicted_lower))
        secs = _seconds(benchmarks_dir, "predict", None, acq, method)
        if secs is not None:
            rows.append(dict(subject="cohort", split="all", method=method, metric="seconds", value=secs))
        if figures is not None:
            test = table[table.split == "test"]
            save_scatter(table.age, table.predicted_age, figures / f"{method}.png", xlabel="true age (years)",
                         ylabel="predicted age (years)",
                         title=f"{method}: test MAE {np.mean(np.abs(test.predicted_age - test.age)):.1f} y")
    return rows


def start_rows(cards: dict) -> list[dict]:
    """Cohort-level ``check_beats_start`` rows (1.0 / 0.0) from the model cards ``{method: path}``;
    none for a card without ``beats_start`` or with a null one (unknown is not false)."""
    rows = []
    for method, path in cards.items():
        beats = load_json(path).get("beats_start")
        if beats is not None:
            rows.append(dict(subject="cohort", split="all", method=method, metric=f"{CHECK_PREFIX}beats_start",
                             value=float(bool(beats))))
    return rows


def score_stage(manifest: dict, benchmarks_dir=None, figures_dir=None) -> pd.DataFrame:
    """Score every subject and method of one stage; see the module docstring for metrics."""
    stage_name, acq, splits = manifest["stage"], manifest["acq"], manifest["splits"]
    figures = Path(figures_dir) if figures_dir is not None else None
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
    scorer = SCORERS[stage_name]
    if not stage(stage_name).per_subject:
        rows = scorer(manifest, benchmarks_dir, figures)
    else:
        rows = []
        for sub, entry in manifest["subjects"].items():
            for method, values in scorer(sub, entry, acq, figures).items():
                secs = _seconds(benchmarks_dir, stage_name, sub, acq, method)
                if secs is not None:
                    values = {**values, "seconds": secs}
                rows += [dict(subject=sub, split=splits[sub], method=method, metric=k, value=float(v))
                         for k, v in values.items()]
    rows += start_rows(manifest.get("cards", {}))
    table = pd.DataFrame(rows, columns=["subject", "split", "method", "metric", "value"])
    table.insert(0, "acq", acq)
    table.insert(0, "stage", stage_name)
    return table
