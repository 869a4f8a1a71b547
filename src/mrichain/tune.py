"""Tuning of classical methods on the val split: the baselines get the care the learned methods get.

A learned method selects its epoch on the val split by a validation score; a classical method
here selects its key parameters on the same split by its stage's primary score against the truth
(``Stage.primary_metric``: reconstruction ``ssim_truth``, denoising ``psnr``, registration and
segmentation ``dice_mean``, brain age ``abs_error_years``). Rule ``tune``, one job per (stage,
method) with a grid in the config (``<stage>.tune.<method>: {parameter: [values]}``), runs the
method with every combination of the grid values (over its fixed ``params``) on every val subject
through the same code path as the method's own job (:func:`mrichain.jobs.run_job`), scores it with
the stage's scorer (:data:`mrichain.stages.SCORERS`) and writes a card
(``results/tuning/<stage>-<method>.json``): the grid, each combination's val score (mean and per
subject), the chosen values, a hash of the data and the provenance. Inference then runs with the
chosen values (:func:`tuned_params`).

Ties keep the first combination in grid order (the order the config lists values). A cohort-level
stage (brain age) fits on the train split and is scored on the val split.

Grid search, not a library optimiser: the grids are small, discrete (noise models, iteration
schedules) and every point is a full pipeline job; Optuna and friends add nothing at this size.
"""
from __future__ import annotations

import itertools
import math
import tempfile
import time
from pathlib import Path

import numpy as np


def grid_points(grid: dict) -> list[dict]:
    """Every combination of a grid ``{parameter: [values]}``, the first parameter varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def tuned_params(params: dict, card_path) -> dict:
    """A method's keyword arguments at inference: ``params`` with the card's chosen values over them."""
    from mrichain.io import load_json

    return {**params, **load_json(card_path)["chosen"]}


def _outputs(stage, root: Path, sub: str) -> dict[str, str]:
    return {key: str(root / f"{sub}_{key}{out.ext}") for key, out in stage.outputs.items()}


def _score_point(s, manifest: dict, params: dict, root: Path, *, seed: int, threads: int) -> dict[str, float]:
    """Run the method with ``params`` on the manifest's val subjects; primary score per subject."""
    from mrichain.jobs import run_job
    from mrichain.stages import SCORERS

    method, acq, scorer = manifest["method"], manifest["acq"], SCORERS[s.name]
    kw = {"threads": threads, "seed": seed, "contrast": manifest.get("contrast", "T1w")}
    if not s.per_subject:
        job = manifest["job"]
        outputs = _outputs(s, root, "cohort")
        run_job(s.name, method, {"manifest": job}, outputs, params, **kw)
        rows = scorer({"acq": acq, "methods": {method: outputs}}, None, None)
        return {r["subject"]: float(r["value"]) for r in rows
                if r["split"] == "val" and r["metric"] == s.primary_metric}
    scores = {}
    for sub, entry in manifest["subjects"].items():
        outputs = _outputs(s, root, sub)
        run_job(s.name, method, entry["inputs"], outputs, params, **kw)
        values = scorer(sub, {**entry["score"], "methods": {method: outputs}}, acq, None)[method]
        scores[sub] = float(values[s.primary_metric])
    return scores


def tune(manifest: dict, grid: dict, fixed: dict, out_card, *, seed: int = 0, threads: int = 1) -> dict:
    """Grid-search ``grid`` over ``fixed`` params on the val subjects of a tune manifest
    (:meth:`mrichain.manifests.Plan.tune_manifest`); write and return the card (module docstring).

    The score of a combination is the mean of the primary metric over the val subjects (NaN
    subjects, e.g. a tissue absent from a map, are left out of the mean); a combination whose
    every subject fails to score is not chosen.
    """
    from mrichain.io import save_json
    from mrichain.manifests import manifest_files
    from mrichain.metrics import higher_is_better
    from mrichain.provenance import hash_files, provenance
    from mrichain.stages import stage

    s = stage(manifest["stage"])
    if not grid or any(len(v) == 0 for v in grid.values()):
        raise ValueError(f"tuning {s.name}-{manifest['method']}: empty grid {grid!r}")
    points = grid_points(grid)
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="mrichain-tune-") as tmp:
        for i, point in enumerate(points):
            root = Path(tmp) / f"point{i}"
            root.mkdir()
            per_subject = _score_point(s, manifest, {**fixed, **point}, root, seed=seed, threads=threads)
            values = [v for v in per_subject.values() if not math.isnan(v)]
            results.append({"params": point, "score": float(np.mean(values)) if values else float("nan"),
                            "per_subject": per_subject})
    scores = np.array([r["score"] for r in results], dtype=np.float64)
    if np.all(np.isnan(scores)):
        raise ValueError(f"tuning {s.name}-{manifest['method']}: no grid point could be scored on the val split")
    higher = higher_is_better(s.primary_metric)
    sign = 1.0 if higher else -1.0
    best = int(np.nanargmax(sign * scores))
    card = {
        "stage": s.name,
        "method": manifest["method"],
        "acq": manifest["acq"],
        "split": "val",
        "subjects": sorted(results[0]["per_subject"]),
        "metric": s.primary_metric,
        "higher_is_better": higher,
        "fixed_params": fixed,
        "grid": grid,
        "results": results,
        "chosen": points[best],
        "chosen_score": results[best]["score"],
        "data_hash": hash_files(manifest_files(manifest)),
        "seed": seed,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "provenance": provenance(),
    }
    save_json(card, out_card)
    return card
