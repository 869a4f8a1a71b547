"""Tuning of classical methods on the val split: the baselines get the care the learned methods get.

A learned method selects its epoch on the val split by a validation score; a classical method
here selects its key parameters on the same split by its stage's primary score against the truth
(``Stage.primary_metric``: reconstruction ``ssim_truth``, denoising ``psnr``, registration and
segmentation ``dice_mean``, brain age ``abs_error_years``). Rule ``tune``, one job per (stage,
method) with a grid in the config (``<stage>.tune.<method>: {parameter: [values]}``), runs the
method with every combination of the grid values (over its fixed ``params``) on every val subject
through the same code path as the method's own job (:func:`mrichain.jobs.run_job`), scores it with
the stage's scorer (:data:`mrichain.plan.stages.SCORERS`) and writes a card
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
import json
import math
import tempfile
import time
from pathlib import Path

import jsonschema
import numpy as np

from mrichain import UserError


class TuningCardError(UserError, ValueError):
    """A tuning card is unreadable, belongs to another job, or chose what its method cannot tune."""


def grid_points(grid: dict) -> list[dict]:
    """Every combination of a grid ``{parameter: [values]}``, the first parameter varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def tuned_params(params: dict, card_path, *, stage: str | None = None, method: str | None = None) -> dict:
    """A method's keyword arguments at inference: ``params`` with the card's chosen values over them.

    The card is checked first (:func:`read_card`); ``stage``/``method``: the job's, which the card's
    must be (None: whichever it names).
    """
    return {**params, **read_card(card_path, stage=stage, method=method)["chosen"]}


def read_card(card_path, *, stage: str | None = None, method: str | None = None) -> dict:
    """Read and check a tuning card (:func:`tune` writes it): JSON, of ``stage``/``method`` (when
    given) and of a declared classical method, whose ``chosen`` maps parameters the method declares
    tunable (``Method.tunable``) to values its schema allows. Raises :class:`TuningCardError`
    naming the card and the key."""
    from mrichain.plan.stages import method as declared

    try:
        with open(card_path) as fh:
            card = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TuningCardError(f"{card_path}: not a readable JSON tuning card ({exc})") from exc
    if not isinstance(card, dict):
        raise TuningCardError(f"{card_path}: a tuning card is a JSON object, got {type(card).__name__}")
    for key, want in (("stage", stage), ("method", method)):
        if want is not None and card.get(key) != want:
            raise TuningCardError(f"{card_path}: '{key}' is {card.get(key)!r}, but this job runs {key} {want!r}")
    try:
        m = declared(str(card.get("stage")), str(card.get("method")))
    except KeyError as exc:
        raise TuningCardError(f"{card_path}: {exc.args[0]}") from None
    if not m.tunable:
        raise TuningCardError(f"{card_path}: {m.name} has no tunable parameters")
    if "chosen" not in card:
        raise TuningCardError(f"{card_path}: no 'chosen' values (a card written by rule tune has them)")
    chosen = card["chosen"]
    if not isinstance(chosen, dict):
        raise TuningCardError(f"{card_path}: 'chosen' must map parameters to values, got {chosen!r}")
    allowed = ", ".join(sorted(m.tunable))
    for key, value in chosen.items():
        if key not in m.tunable:
            raise TuningCardError(f"{card_path}: chosen {key!r} is not a tunable parameter of {card['stage']}-"
                                  f"{m.name}; allowed keys: {allowed}")
        try:
            jsonschema.validate(value, m.tunable[key])
        except jsonschema.ValidationError as err:
            raise TuningCardError(f"{card_path}: chosen {key!r}: {err.message}") from None
    return card


def _outputs(stage, root: Path, sub: str) -> dict[str, str]:
    return {key: str(root / f"{sub}_{key}{out.ext}") for key, out in stage.outputs.items()}


def _score_point(s, manifest: dict, params: dict, root: Path, *, seed: int, threads: int) -> dict[str, float]:
    """Run the method with ``params`` on the manifest's val subjects; primary score per subject."""
    from mrichain.jobs import run_job
    from mrichain.plan.stages import SCORERS

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
    (:meth:`mrichain.plan.manifests.Plan.tune_manifest`); write and return the card (module docstring).

    The score of a combination is the mean of the primary metric over the val subjects (NaN
    subjects, e.g. a tissue absent from a map, are left out of the mean); a combination whose
    every subject fails to score is not chosen.
    """
    from mrichain.io import save_json
    from mrichain.plan.manifests import manifest_files
    from mrichain.scoring.metrics import higher_is_better
    from mrichain.provenance import hash_files, provenance
    from mrichain.plan.stages import stage

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
