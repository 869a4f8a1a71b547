"""The file-level jobs of real inputs (``workflow/rules/realdata.smk``; plan in :mod:`.plan`).

- :func:`prepare_file`: a lab's T1w -> the chain's input (:func:`.structural.prepare_t1w`), its
  brain mask, the geometry to go back (:class:`.structural.PrepInfo`) and the subject's info JSON
  (``age`` in years or null), so the brain-age job reads a real subject as it reads a simulated one;
- :func:`restore_file`: an output on the chain's grid -> the input's grid and voxel order;
- :func:`score_fastmri`: each reconstruction of one fastMRI file at one acceleration against the
  file's cropped ``reconstruction_rss`` (fastMRI's ``evaluate.py``: NMSE, PSNR, SSIM per volume);
- :func:`summarise`: every real input's scores in one place: ``metrics.json`` (``{stage: {method:
  {metric: value}}}``, or ``"no reference"`` where the input has no truth), a per-input TSV, the
  brain-age table and the derivatives' ``dataset_description.json``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mrichain.io import PLAUSIBLE_VOXEL_MM, InputImageError, atomic_write, load_image, load_json, save_image, save_json

NO_REFERENCE = "no reference"


def prepare_file(image, *, target_mm: float, out_image, out_mask, out_prep, out_info, mask=None,
                 age: float | None = None, threads: int = 1) -> dict:
    """Prepare one T1w file (any orientation and voxel size, skull on) for the chain.

    mask: a user ``desc-brain_mask`` (replaces skull stripping); age: from ``participants.tsv``.
    Writes the float32 brain image and uint8 mask (RAS, ``target_mm`` isotropic), the PrepInfo JSON
    and ``{"age": years | null, "source": image, "efc": the input's entropy focus criterion}`` (over
    its whole field of view as stored, background included, where motion ghosts land:
    :mod:`mrichain.motion.quality`). Returns the PrepInfo as a dict.
    A file that is not a 3-D finite NIfTI, or whose voxel sizes are outside
    :data:`mrichain.io.PLAUSIBLE_VOXEL_MM`, fails here, naming it (:func:`mrichain.io.load_image`).
    """
    from mrichain.motion.quality import entropy_focus
    from mrichain.realdata.structural import prepare_t1w

    img = load_image(image, voxel_mm_range=PLAUSIBLE_VOXEL_MM)
    efc = entropy_focus(np.asarray(img.dataobj))  # it reads the values in float64 itself
    user = load_image(mask, voxel_mm_range=PLAUSIBLE_VOXEL_MM) if mask else None
    prepared, brain, info = prepare_t1w(img, target_mm=target_mm, mask=user, threads=threads)
    if not np.any(np.asarray(brain.dataobj)):
        raise InputImageError(f"{image}: skull stripping found no brain (empty mask); give a desc-brain_mask "
                              "in a derivatives folder (input.derivatives)")
    save_image(np.asarray(prepared.dataobj), prepared.affine, out_image)
    save_image(np.asarray(brain.dataobj), brain.affine, out_mask, dtype=np.uint8)
    info_dict = info.to_dict()
    save_json(info_dict, out_prep)
    save_json({"age": None if age is None else float(age), "source": str(image), "efc": efc}, out_info)
    return info_dict


def restore_file(image, prep, output, *, labels: bool) -> Path:
    """``image`` (on the prepared grid) back on the input's grid: nearest neighbour for
    ``labels``, linear otherwise (:func:`.structural.restore`)."""
    from mrichain.realdata.structural import restore

    img = load_image(image)
    out = restore(img, load_json(prep), order=0 if labels else 1)
    dtype = np.uint8 if labels else np.float32
    return save_image(np.asarray(out.dataobj), out.affine, output, dtype=dtype)


def score_fastmri(kspace_file, recons: dict[str, str], out_tsv, *, key: str = "", acq: str = "") -> pd.DataFrame:
    """fastMRI's scores of each reconstruction (``{method: NIfTI path}``) of ``kspace_file``.

    TSV columns: key, acq, method, metric (nmse, psnr, ssim), value; a file without
    ``reconstruction_rss`` (fastMRI's test set) gets ``value`` NaN and ``note`` "no reference".
    """
    from mrichain.realdata.fastmri import evaluate_volume, read_target

    target = read_target(kspace_file)
    rows = []
    for method, path in recons.items():
        if target is None:
            rows += [dict(key=key, acq=acq, method=method, metric=m, value=np.nan, note=NO_REFERENCE)
                     for m in ("nmse", "psnr", "ssim")]
            continue
        scores = evaluate_volume(target, load_image(path))
        rows += [dict(key=key, acq=acq, method=method, metric=m, value=float(v), note="") for m, v in scores.items()]
    table = pd.DataFrame(rows, columns=["key", "acq", "method", "metric", "value", "note"])
    with atomic_write(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return table


def _brain_age(predictions: dict[str, dict[str, str]]) -> pd.DataFrame:
    """``{key: {method: predictions TSV}}`` -> one row per key: age, predicted age per method
    (``predicted_age_<method>``, plus the interval of a method that gives one)."""
    rows = []
    for key, by_method in predictions.items():
        row = {"key": key}
        for method, path in by_method.items():
            t = pd.read_csv(path, sep="\t")
            r = t[t["split"] == "real"].iloc[0]
            row["age"] = r["age"]
            row[f"predicted_age_{method}"] = r["predicted_age"]
            for bound in ("predicted_lower", "predicted_upper"):
                if bound in r and pd.notna(r[bound]):
                    row[f"{bound}_{method}"] = r[bound]
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(manifest: dict, out: dict, *, version: str) -> dict:
    """Collect every real input's results.

    manifest: ``{"kind", "source", "stages": {stage: [methods]}, "entities": {key: {...}},
    "fastmri_scores": [TSV...] (fastMRI), "predictions": {key: {method: TSV}} and "scans": {key:
    {"table": scans.tsv path, "filename": the image it describes, relative to the table}}
    (BIDS), "info": {key: the prepared input's info JSON, whose ``efc`` is its motion score}
    (BIDS)}``; out: ``metrics``, ``table``, ``description`` paths and, where brain age runs,
    ``brain_age`` (one flat TSV) and ``scans`` (the per-folder tables, BIDS ``scans.tsv``:
    :func:`mrichain.realdata.derivatives.write_scans_table`, described once in the root
    ``scans.json``; ``dseg.tsv`` at the root describes every ``_dseg``).
    Returns the metrics: ``{stage: {method: {metric: mean, "n": inputs} | "no reference"}}``,
    brain age as the MAE over the inputs whose age is known. Each input's motion score (``efc``)
    and flag against the run's other inputs (:func:`mrichain.motion.quality.flag_outliers`) are
    rows of the table (method ``efc``, metric ``motion_efc``, note ``flagged`` where flagged) and
    columns of ``scans.tsv``; no score against a truth (a real scan has none).
    """
    from mrichain.motion.quality import flag_outliers
    from mrichain.realdata.derivatives import (scans_columns, write_dataset_description, write_dseg_tsv,
                                               write_scans_json, write_scans_table)

    metrics: dict = {}
    frames = [pd.read_csv(path, sep="\t") for path in manifest.get("fastmri_scores", [])]
    table = pd.DataFrame(columns=["key", "acq", "method", "metric", "value", "note"])
    if frames:
        table = pd.concat(frames, ignore_index=True)
        for (acq, method), g in table.groupby(["acq", "method"], sort=False):
            # an infinite PSNR (a reconstruction equal to the target: zero-filling of a fully
            # sampled file is the RSS itself) is kept; metrics.json writes it as null
            vals = {m: float(v) for m, v in g.groupby("metric")["value"].mean().items() if not np.isnan(v)}
            metrics.setdefault("reconstruct", {})[f"{method}@{acq}"] = (
                {**vals, "n": int(g["key"].nunique())} if vals else NO_REFERENCE)
    for stage_name, methods in manifest["stages"].items():
        if stage_name not in ("reconstruct", "predict"):
            metrics[stage_name] = {m: NO_REFERENCE for m in methods}
    root = Path(out["description"]).parent
    infos = manifest.get("info", {})
    efc = {k: float("nan") if (v := load_json(p).get("efc")) is None else float(v) for k, p in infos.items()}
    flags = dict(zip(efc, flag_outliers(list(efc.values()))))
    if efc:
        motion = pd.DataFrame({"key": list(efc), "acq": "", "method": "efc", "metric": "motion_efc",
                               "value": list(efc.values()), "note": ["flagged" if flags[k] else "" for k in efc]})
        table = motion if table.empty else pd.concat([table, motion], ignore_index=True)
    if manifest.get("predictions"):
        ages = _brain_age(manifest["predictions"])
        known = ages[pd.notna(ages["age"])]
        for method in manifest["stages"]["predict"]:
            if known.empty:
                metrics.setdefault("predict", {})[method] = NO_REFERENCE
                continue
            err = (known[f"predicted_age_{method}"] - known["age"]).abs()
            metrics.setdefault("predict", {})[method] = {"mae_years": float(err.mean()), "n": int(len(known))}
            table = pd.concat([table, pd.DataFrame({"key": known["key"], "acq": "", "method": method,
                                                    "metric": "abs_error_years", "value": err, "note": ""})],
                              ignore_index=True)
        ents = manifest.get("entities", {})
        ages.insert(0, "participant_id", [f"sub-{ents.get(k, {}).get('subject', k)}" for k in ages["key"]])
        if any("session" in ents.get(k, {}) for k in ages["key"]):
            ages.insert(1, "session_id", [f"ses-{ents[k]['session']}" if "session" in ents.get(k, {}) else "n/a"
                                          for k in ages["key"]])
        with atomic_write(out["brain_age"]) as tmp:
            ages.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="n/a")
        # BIDS: one scans.tsv per subject (session) folder, its columns described in scans.json
        intervals = [m for m in manifest["stages"]["predict"] if f"predicted_lower_{m}" in ages]
        columns = scans_columns(manifest["stages"]["predict"], intervals, motion=bool(efc))
        write_scans_json(root, columns)
        rows: dict[str, list[dict]] = {}
        for _, r in ages.iterrows():
            scan = manifest["scans"][r["key"]]
            row = {"filename": scan["filename"], "age": None if pd.isna(r["age"]) else float(r["age"])}
            if efc:
                flag = flags.get(r["key"])
                row.update(motion_efc=efc.get(r["key"]), motion_flagged=None if flag is None else str(flag).lower())
            for m in manifest["stages"]["predict"]:
                row[f"brainage_{m}"] = float(r[f"predicted_age_{m}"])
                if m in intervals:
                    row[f"brainage_{m}_lower"] = float(r[f"predicted_lower_{m}"])
                    row[f"brainage_{m}_upper"] = float(r[f"predicted_upper_{m}"])
            rows.setdefault(scan["table"], []).append(row)
        for path, rs in rows.items():
            write_scans_table(path, rs, columns)
    if "segment" in manifest["stages"]:
        write_dseg_tsv(root)
    with atomic_write(out["table"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    save_json(metrics, out["metrics"])
    write_dataset_description(root, version=version, source_dir=manifest.get("source"))
    return metrics
