"""Per-subject visual reports: one HTML page per subject, to check each step before trusting its numbers.

Like fMRIPrep's ``sub-XX.html``: a page with one section per step of the chain, each showing its
reportlets (:mod:`mrichain.scoring.reportlets`), the subject's scores where a reference exists (the
simulated cohort's test subjects) or the words "no reference" (real scans), and the provenance of
every method shown (its model card or tuning card, else its configured parameters). Plain HTML5,
no JavaScript, no external URL: it opens from the file system on a closed network.

Figures are PNG files in a ``figures/`` folder beside the page (``<root>/sub-01.html``,
``<root>/sub-01/figures/*.png``), linked by relative paths, as fMRIPrep lays out its reports:
the page stays small and quick to open however many figures it holds, the figures can be looked
at (or cited) one by one, and the folder is what is shared (moved or copied together, the links
hold). Base64 data URIs would make the page self-contained but ~4/3 the figures' size, hold every
figure in the page's memory at once and hide the figures from a file listing.

What one page shows is given by a JSON manifest (the project's rule: nothing that grows with the
cohort goes on a command line); the rules write it (``workflow/rules/subject_report.smk``:
:func:`sim_manifest`, :func:`real_manifest`). Format::

    {
      "subject": "sub-001",            # the page's title
      "source": "simulated cohort, ...",   # one line under the title (optional)
      "sections": [                    # in page order
        {
          "title": "Denoising",        # the section's heading
          "stage": "denoise",          # the stage it shows (optional; shown beside the title)
          "figures": [                 # reportlets, drawn in order; "name" is the PNG's file name
                                       # (without .png; letters, digits, '_', '-', '.'; unique in
                                       # the page) and "caption" the text under it (optional)
            {"kind": "contours", "name": "...", "caption": "...",
             "image": "<NIfTI>", "labels": "<NIfTI label map>",
             "label_names": {"1": "brain"}},          # optional; default 1 CSF, 2 GM, 3 WM
            {"kind": "compare", "name": "...",
             "panels": [{"title": "input", "image": "<NIfTI>"}, ...]},   # window of the first
            {"kind": "edges", "name": "...", "image": "<warped NIfTI>",
             "template": "<template T1w NIfTI>",        # Canny edges; and/or
             "template_labels": "<template dseg NIfTI>"},  # label boundaries
            {"kind": "brain_age", "name": "...", "subject": "<the TSVs' subject>",
             "predictions": {"<method>": "<predictions TSV>"},
             "true_age": null}         # years; null: the TSVs' "age" column (NaN: unknown)
          ],
          "scores": {"tsv": "<results/metrics/acq-<acq>_stage-<stage>.tsv>", "subject": "sub-001"},
                                       # or null: "no reference" is shown instead, with
          "no_reference": "why",       # this reason (optional)
          "methods": [                 # provenance, one entry per method shown
            {"method": "dncnn", "kind": "learned", "model_card": "<models/denoise-dncnn.json>"},
            {"method": "antsnlm", "kind": "classical", "tuning_card": "<results/tuning/...json>",
             "params": {...}},         # the configured params (a tuning card's chosen over them)
          ]
        }
      ]
    }

Every path is relative to the working directory (or absolute); :func:`manifest_inputs` lists
them (a rule's inputs). A missing or corrupt file is a :class:`mrichain.UserError` naming it.
A brain-age figure is followed by a table of each method's prediction, interval, the true age and
the absolute error where the age is known (a real scan's reference is its ``participants.tsv``
age); a scores table has one row per method and one column per metric of the subject's rows
(the ``check_`` evidence rows of :mod:`mrichain.scoring.evaluate` left out).

The manifest builders and target lists (:func:`sim_targets`, :func:`real_targets`) run at
Snakefile parse time: this module imports the standard library only; numpy, pandas, matplotlib
and nibabel are imported inside the functions that draw and read.
"""
from __future__ import annotations

import csv
import html
import json
import math
import os
import re
import struct
import urllib.parse
from pathlib import Path

from mrichain import UserError

FIGURE_KINDS = ("contours", "compare", "edges", "brain_age")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FIGURE_FILES = ("image", "labels", "template", "template_labels")
"""Keys of a figure entry that name a file (besides ``panels[].image`` and ``predictions``)."""
BRAIN_LABELS = {"1": "brain"}


class ReportError(UserError, ValueError):
    """A subject report's manifest, or a file it lists, is missing or unusable."""


# --- where the pages go (parse time) -------------------------------------------------------------
def real_page(real, label: str = "{rsub}") -> str:
    """A BIDS subject's page in the derivatives folder: ``<root>/sub-<label>.html``."""
    return f"{real.root}/sub-{label}.html"


def real_figures(real, label: str = "{rsub}") -> str:
    return f"{real.root}/sub-{label}/figures"


def real_manifest_path(label: str = "{rsub}") -> str:
    from mrichain.realdata.plan import WORK

    return f"{WORK}/manifests/subject_report_sub-{label}.json"


def real_bidsignore(real) -> str:
    """The derivatives folder's ``.bidsignore``: the pages and figures are not BIDS files."""
    return f"{real.root}/.bidsignore"


BIDSIGNORE = ("sub-*.html", "sub-*/figures/", "report.html", "group/", "work/")
"""What :func:`real_bidsignore` lists: the pages and their figures (fMRIPrep's report layout,
outside the BIDS names), and the BIDS App's run report, group tables and default work folder
(:mod:`mrichain.bids_app`)."""


def real_subjects(real) -> dict[str, list[str]]:
    """BIDS subject label -> its input keys (sessions, runs), in input order."""
    out: dict[str, list[str]] = {}
    for key, inp in real.inputs.items():
        out.setdefault(str(inp.entities["subject"]), []).append(key)
    return out


def sim_targets(plan) -> list[str]:
    """The simulated cohort's pages: one per test subject."""
    from mrichain.plan import layout

    return [layout.subject_page(s) for s in plan.test_subjects]


def real_targets(real) -> list[str]:
    """The real BIDS subjects' pages (+ the derivatives' ``.bidsignore``); none for other inputs."""
    if real.kind != "bids" or not real.active:
        return []
    return [real_page(real, label) for label in real_subjects(real)] + [real_bidsignore(real)]


def real_label_wildcard(real) -> str:
    """Regular expression of the ``rsub`` wildcard: exactly this run's BIDS subject labels."""
    return "|".join(re.escape(label) for label in real_subjects(real)) or "(?!)"


# --- manifests (parse time) ------------------------------------------------------------------------
def _methods(plan, stage_name: str, methods) -> list[dict]:
    """Provenance entries of ``methods`` of ``stage_name``: each learned method's model card, a
    tuned method's tuning card, and every non-learned method's configured params."""
    from mrichain.plan.config import method_params
    from mrichain.plan.stages import stage

    out = []
    for m in methods:
        entry = {"method": m, "kind": stage(stage_name).method(m).kind}
        fitted = plan.fitted(stage_name, m)
        if "model" in fitted:
            entry["model_card"] = plan.model(stage_name, m, ".json")
        else:
            entry["params"] = method_params(plan.config, stage_name, m)
        if "tuning" in fitted:
            entry["tuning_card"] = fitted["tuning"]
        out.append(entry)
    return out


def _segment_figures(prefix: str, image: str, labels: dict[str, str], what: str) -> list[dict]:
    return [{"kind": "contours", "name": f"{prefix}_desc-{m}_dseg", "image": image, "labels": path,
             "caption": f"{m}: CSF, GM and WM boundaries on {what}"} for m, path in labels.items()]


def sim_manifest(plan, sub: str) -> dict:
    """The page of a test subject of the simulated cohort, at the primary acquisition (the first of
    ``plan.acqs``): reconstruction (each method beside the noise-free truth), denoising (its input,
    each method, the truth), segmentation (the truth and each method's contours on the denoised
    image), registration (each method's warped image under the template's edges), brain age; the
    subject's scores from ``results/metrics/``."""
    from mrichain.plan import layout

    acq = next(iter(plan.acqs))
    c = plan.contrast
    truth = layout.noisefree(c, sub, acq)
    prefix = f"{sub}_acq-{acq}"

    def outputs(stage_name):
        return {m: plan.outputs(stage_name, sub, acq, m) for m in plan.methods_run(stage_name, sub, acq)}

    def scores(stage_name):
        return {"tsv": layout.scores(stage_name, acq), "subject": sub}

    recon, den, seg, reg = (outputs(s) for s in ("reconstruct", "denoise", "segment", "register"))
    denoised = plan.resolve("feed.denoise", sub, acq)
    feed = plan.feed("denoise")
    sections = [
        {"title": "Reconstruction", "stage": "reconstruct", "scores": scores("reconstruct"),
         "figures": [{"kind": "compare", "name": f"{prefix}_desc-reconstruct_{c}",
                      "caption": "each reconstruction beside the noise-free, fully sampled truth (window of the truth)",
                      "panels": [{"title": "noise-free truth", "image": truth}]
                      + [{"title": m, "image": o["image"]} for m, o in recon.items()]}],
         "methods": _methods(plan, "reconstruct", recon)},
        {"title": "Denoising", "stage": "denoise", "scores": scores("denoise"),
         "figures": [{"kind": "compare", "name": f"{prefix}_desc-denoise_{c}",
                      "caption": f"the input ({plan.feed('reconstruct')} reconstruction), each denoiser and the "
                                 "noise-free truth (window of the input)",
                      "panels": [{"title": "input", "image": plan.resolve("feed.reconstruct", sub, acq)}]
                      + [{"title": m, "image": o["image"]} for m, o in den.items()]
                      + [{"title": "noise-free truth", "image": truth}]}],
         "methods": _methods(plan, "denoise", den)},
        {"title": "Segmentation", "stage": "segment", "scores": scores("segment"),
         "figures": _segment_figures(prefix, denoised, {"truth": layout.groundtruth("dseg", sub)},
                                     f"the denoised image ({feed})")
         + _segment_figures(prefix, denoised, {m: o["labels"] for m, o in seg.items()}, f"the denoised image ({feed})"),
         "methods": _methods(plan, "segment", seg)},
        {"title": "Registration", "stage": "register", "scores": scores("register"),
         "figures": [{"kind": "edges", "name": f"{prefix}_space-template_desc-{m}_{c}", "image": o["image"],
                      "template": layout.template("T1w"),
                      "caption": f"{m}: the subject's denoised image warped to the template, under the "
                                 "template T1w's edges (red)"} for m, o in reg.items()],
         "methods": _methods(plan, "register", reg)},
    ]
    predict = plan.methods("predict")
    sections.append(
        {"title": "Brain age", "stage": "predict", "scores": scores("predict"),
         "figures": [{"kind": "brain_age", "name": f"{prefix}_desc-brainage", "subject": sub, "true_age": None,
                      "caption": "each method's predicted age (its interval where it gives one) and the true age",
                      "predictions": {m: plan.outputs("predict", None, acq, m)["predictions"] for m in predict}}],
         "methods": _methods(plan, "predict", predict)})
    return {"subject": sub, "source": f"simulated cohort, {plan.splits[sub]} split, acquisition {acq} "
                                      "(the primary acquisition); scored against the simulation's ground truth",
            "sections": sections}


def real_manifest(real, label: str) -> dict:
    """The page of one BIDS subject (every session and run of it): per image, the prepared image
    with its brain mask, denoising (the prepared image and each method), segmentation (each
    method's contours on the denoising feed's output), brain age; "no reference" for the image
    stages (brain age has one where ``participants.tsv`` gives the age)."""
    plan = real.plan
    why = "a real scan has no ground truth for this step"
    sections = []
    for key in real_subjects(real)[label]:
        prep = real.prepared(key)
        den = {m: real.stage_output("denoise", key, m) for m in real.methods("denoise")}
        seg = {m: real.stage_output("segment", key, m) for m in real.methods("segment")}
        feed = plan.feed("denoise")
        denoised = real.feed_output("denoise", key)
        sections += [
            {"title": f"{key}: brain mask", "stage": "prepare", "scores": None, "no_reference": why,
             "figures": [{"kind": "contours", "name": f"{key}_desc-brain_mask", "image": prep["image"],
                          "labels": prep["mask"], "label_names": BRAIN_LABELS,
                          "caption": "the prepared image (RAS, bias corrected, resampled) and its brain mask"}],
             "methods": []},
            {"title": f"{key}: denoising", "stage": "denoise", "scores": None, "no_reference": why,
             "figures": [{"kind": "compare", "name": f"{key}_desc-denoise_T1w",
                          "caption": "the prepared image and each denoiser (window of the prepared image)",
                          "panels": [{"title": "prepared", "image": prep["image"]}]
                          + [{"title": m, "image": p} for m, p in den.items()]}],
             "methods": _methods(plan, "denoise", den)},
            {"title": f"{key}: segmentation", "stage": "segment", "scores": None, "no_reference": why,
             "figures": _segment_figures(key, denoised, seg, f"the denoised image ({feed})"),
             "methods": _methods(plan, "segment", seg)},
        ]
        if "predict" in real.stages:
            predict = real.methods("predict")
            age = real.inputs[key].age
            sections.append(
                {"title": f"{key}: brain age", "stage": "predict", "scores": None,
                 "no_reference": ("the scores are in the table above (participants.tsv age)" if age is not None
                                  else "participants.tsv gives no age for this subject"),
                 "figures": [{"kind": "brain_age", "name": f"{key}_desc-brainage", "subject": key, "true_age": age,
                              "caption": "each method's predicted age (its interval where it gives one), fitted "
                                         "on the simulated cohort's train split",
                              "predictions": {m: real.stage_output("predict", key, m) for m in predict}}],
                 "methods": _methods(plan, "predict", predict)})
    return {"subject": f"sub-{label}", "source": f"BIDS dataset {real.bids_dir}: no ground truth (real scans)",
            "sections": sections}


def manifest_inputs(manifest: dict) -> list[str]:
    """Every file a page's manifest names (in order, each once): images, labels, predictions,
    scores and cards."""
    out = []
    for sec in manifest.get("sections", []):
        for fig in sec.get("figures", []):
            out += [fig[k] for k in FIGURE_FILES if fig.get(k)]
            out += [p["image"] for p in fig.get("panels", [])]
            out += list(fig.get("predictions", {}).values())
        if sec.get("scores"):
            out.append(sec["scores"]["tsv"])
        for m in sec.get("methods", []):
            out += [m[k] for k in ("model_card", "tuning_card") if m.get(k)]
    return list(dict.fromkeys(out))


def write_report_manifest(manifest: dict, path, log_path=None) -> None:
    """Write a page's manifest as JSON (sorted keys: stable bytes) and say so in the job's log."""
    from mrichain.io import save_json

    save_json(manifest, path)
    if log_path is not None:
        Path(log_path).write_text(f"subject-report manifest {path}: {len(manifest_inputs(manifest))} files\n")


def write_bidsignore(path, log_path=None) -> None:
    """Write the derivatives folder's ``.bidsignore`` (:data:`BIDSIGNORE`)."""
    from mrichain.io import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in BIDSIGNORE))
    if log_path is not None:
        Path(log_path).write_text(f"{path}: {', '.join(BIDSIGNORE)}\n")


# --- checks ---------------------------------------------------------------------------------------
def load_manifest(path) -> dict:
    """A page's manifest from its JSON file, checked (:func:`check_manifest`)."""
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read the subject-report manifest ({exc})") from exc
    check_manifest(manifest, path)
    return manifest


def check_manifest(m, path="manifest") -> None:
    """Refuse (:class:`ReportError` naming ``path`` and the key) a manifest not of the module's format."""

    def need(cond, what):
        if not cond:
            raise ReportError(f"{path}: {what} (subject-report manifest format: mrichain.scoring.subject_report)")

    need(isinstance(m, dict) and isinstance(m.get("subject"), str), "needs a 'subject' string")
    need(isinstance(m.get("sections"), list), "needs a 'sections' list")
    names = set()
    for i, sec in enumerate(m["sections"]):
        where = f"sections[{i}]"
        need(isinstance(sec, dict) and isinstance(sec.get("title"), str), f"{where} needs a 'title' string")
        need(isinstance(sec.get("figures", []), list), f"{where}.figures must be a list")
        for j, fig in enumerate(sec.get("figures", [])):
            fw = f"{where}.figures[{j}]"
            need(isinstance(fig, dict) and fig.get("kind") in FIGURE_KINDS,
                 f"{fw}.kind must be one of {', '.join(FIGURE_KINDS)}")
            name = fig.get("name")
            need(isinstance(name, str) and NAME.match(name) is not None,
                 f"{fw}.name must be letters, digits, '_', '-', '.' (a file name)")
            need(name not in names, f"{fw}.name {name!r} is used twice")
            names.add(name)
            kind = fig["kind"]
            if kind == "contours":
                need(all(isinstance(fig.get(k), str) for k in ("image", "labels")), f"{fw} needs 'image' and 'labels'")
            elif kind == "compare":
                panels = fig.get("panels")
                need(isinstance(panels, list) and panels and all(
                    isinstance(p, dict) and isinstance(p.get("image"), str) for p in panels),
                    f"{fw}.panels must be a non-empty list of {{title, image}}")
            elif kind == "edges":
                need(isinstance(fig.get("image"), str) and (fig.get("template") or fig.get("template_labels")),
                     f"{fw} needs 'image' and 'template' and/or 'template_labels'")
            else:
                preds = fig.get("predictions")
                need(isinstance(fig.get("subject"), str) and isinstance(preds, dict) and all(
                    isinstance(v, str) for v in preds.values()), f"{fw} needs 'subject' and 'predictions' {{method: tsv}}")
        scores = sec.get("scores")
        need(scores is None or (isinstance(scores, dict) and isinstance(scores.get("tsv"), str)
                                and isinstance(scores.get("subject"), str)),
             f"{where}.scores must be null or {{tsv, subject}}")
        need(isinstance(sec.get("methods", []), list) and all(
            isinstance(x, dict) and isinstance(x.get("method"), str) for x in sec.get("methods", [])),
            f"{where}.methods must be a list of {{method, ...}}")


def _check_files(manifest: dict, path) -> None:
    for f in manifest_inputs(manifest):
        if not Path(f).is_file():
            raise ReportError(f"{f}: no such file (listed in {path})")


# --- reading ----------------------------------------------------------------------------------------
def _read_tsv(path) -> list[dict]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: cannot read the table ({exc})") from exc


def _float(value, path, column):
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise ReportError(f"{path}: column {column!r} holds {value!r}, not a number") from exc


def read_prediction(path, subject: str) -> dict:
    """One subject's row of a predictions TSV (:mod:`mrichain.predict.pipeline`): ``{"predicted",
    "lower", "upper", "age"}`` in years (None where the table has no such column or value; age NaN
    is None)."""
    rows = _read_tsv(path)
    if rows and not {"subject", "predicted_age"} <= set(rows[0]):
        raise ReportError(f"{path}: a predictions table needs columns 'subject' and 'predicted_age'")
    row = next((r for r in rows if r.get("subject") == subject), None)
    if row is None:
        raise ReportError(f"{path}: no row for subject {subject!r}")
    out = {k: _float(row.get(col), path, col) for k, col in (("predicted", "predicted_age"), ("lower", "predicted_lower"),
                                                             ("upper", "predicted_upper"), ("age", "age"))}
    if out["predicted"] is None or not math.isfinite(out["predicted"]):
        raise ReportError(f"{path}: subject {subject!r} has no predicted age")
    if out["age"] is not None and not math.isfinite(out["age"]):
        out["age"] = None
    return out


def read_scores(path, subject: str) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """A subject's rows of a scores TSV (``stage, acq, subject, split, method, metric, value``),
    without the ``check_`` rows: (methods, metrics, {(method, metric): value}), in file order."""
    from mrichain.scoring.metrics import CHECK_PREFIX

    rows = _read_tsv(path)
    if rows and not {"subject", "method", "metric", "value"} <= set(rows[0]):
        raise ReportError(f"{path}: a scores table needs columns subject, method, metric, value")
    values = {}
    for r in rows:
        if r["subject"] == subject and not r["metric"].startswith(CHECK_PREFIX):
            values[(r["method"], r["metric"])] = _float(r["value"], path, "value")
    methods = list(dict.fromkeys(m for m, _ in values))
    metrics = list(dict.fromkeys(k for _, k in values))
    return methods, metrics, values


def _card(path) -> dict:
    from mrichain.io import load_json_object

    return load_json_object(path, "card", ReportError)


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def model_card_fields(card: dict) -> list[tuple[str, str]]:
    """What a page shows of a model card (:func:`mrichain.train.engine.write_card`)."""
    val = card.get("validation_score") or {}
    score = None
    if val:
        score = f"{val.get('name')} {_num(val.get('value'))} at epoch {_num(val.get('epoch'))}"
        if val.get("start") is not None:
            score += f" (untrained start {_num(val.get('start'))})"
    prov = card.get("provenance") or {}
    fields = [("architecture", card.get("architecture")), ("validation score", score),
              ("beats its untrained start", card.get("beats_start")), ("epochs run", card.get("epochs_run")),
              ("optimiser steps", card.get("optimiser_steps")), ("samples seen", card.get("samples_seen")),
              ("seed", card.get("seed")), ("device", card.get("device")), ("wall seconds", card.get("wall_seconds")),
              ("training data hash", (card.get("training_data_hash") or "")[:16] or None),
              ("git commit", (prov.get("git_commit") or "")[:12] or None)]
    return [(k, _num(v)) for k, v in fields if v is not None]


def tuning_card_fields(card: dict) -> list[tuple[str, str]]:
    """What a page shows of a tuning card (:func:`mrichain.train.tune.tune`)."""
    subjects = card.get("subjects")
    where = None
    if card.get("split"):
        where = f"{card['split']} split" + (f", {len(subjects)} subjects" if isinstance(subjects, list) else "")
        where += f", acquisition {card['acq']}" if card.get("acq") else ""
    metric = card.get("metric")
    if metric and card.get("higher_is_better") is not None:
        metric += " (higher is better)" if card["higher_is_better"] else " (lower is better)"
    prov = card.get("provenance") or {}
    fields = [("tuned on", where), ("metric", metric),
              ("chosen", json.dumps(card["chosen"], sort_keys=True) if "chosen" in card else None),
              ("chosen score", card.get("chosen_score")),
              ("grid", json.dumps(card["grid"], sort_keys=True) if "grid" in card else None),
              ("seed", card.get("seed")), ("data hash", (card.get("data_hash") or "")[:16] or None),
              ("git commit", (prov.get("git_commit") or "")[:12] or None)]
    return [(k, _num(v)) for k, v in fields if v is not None]


def _png_size(path) -> tuple[int, int]:
    """Width, height (pixels) from a PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    return struct.unpack(">II", head[16:24])


# --- the page ---------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
padding:0 1.2em 3em;color:#1d1d1d;line-height:1.4}
h1{margin:.8em 0 .1em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h2 .stage{font-size:.6em;color:#777;font-weight:normal;margin-left:.6em}
h3{font-size:1em;margin:1.2em 0 .4em}
.source{color:#555;margin-top:0}
nav ul{padding-left:1.2em;columns:2}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f3f3f3}
td.method,th.method{text-align:left}
.noref{font-weight:bold;color:#8a5a00}.muted{color:#777}
dl.card{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;font-size:.85em;margin:.3em 0 .8em}
dl.card dt{color:#555}dl.card dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
footer{margin-top:3em;font-size:.8em;color:#777}
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _anchor(i: int, title: str) -> str:
    return f"s{i}-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _draw(fig: dict, out: Path) -> list[dict] | None:
    """Draw one figure entry to ``out``; a brain-age figure returns its rows (for its table)."""
    from mrichain.scoring import reportlets

    kind, title = fig["kind"], fig.get("title", "")
    if kind == "contours":
        names = {int(k): v for k, v in (fig.get("label_names") or {}).items()}
        reportlets.contours(fig["image"], fig["labels"], out, label_names=names, title=title)
    elif kind == "compare":
        reportlets.compare([(p.get("title", f"panel {i + 1}"), p["image"]) for i, p in enumerate(fig["panels"])],
                           out, title=title)
    elif kind == "edges":
        reportlets.edges(fig["image"], out, template=fig.get("template"),
                         template_labels=fig.get("template_labels"), title=title)
    else:
        rows = []
        for method, tsv in fig["predictions"].items():
            rows.append({"method": method, **read_prediction(tsv, fig["subject"])})
        age = fig.get("true_age")
        if age is None:
            age = next((r["age"] for r in rows if r["age"] is not None), None)
        for r in rows:
            r["true_age"] = age
        reportlets.brain_age(rows, out, true_age=age, title=title)
        return rows
    return None


def _age_table(rows: list[dict]) -> list[str]:
    head = ("<thead><tr><th class=\"method\">method</th><th>predicted (y)</th><th>interval (y)</th>"
            "<th>true age (y)</th><th>|error| (y)</th></tr></thead>")
    out = ["<table>", head, "<tbody>"]
    for r in rows:
        interval = f"{_num(r['lower'], 3)} – {_num(r['upper'], 3)}" if r["lower"] is not None and r["upper"] is not None \
            else "–"
        err = abs(r["predicted"] - r["true_age"]) if r["true_age"] is not None else None
        out.append(f"<tr><td class=\"method\">{_e(r['method'])}</td><td>{_num(r['predicted'], 3)}</td>"
                   f"<td>{interval}</td><td>{_num(r['true_age'], 3)}</td><td>{_num(err, 3)}</td></tr>")
    return out + ["</tbody>", "</table>"]


def _scores_table(scores: dict) -> list[str]:
    methods, metrics, values = read_scores(scores["tsv"], scores["subject"])
    src = f"<p class=\"muted\">from <code>{_e(scores['tsv'])}</code>, subject {_e(scores['subject'])}</p>"
    if not values:
        return [f"<p class=\"muted\">no scores of {_e(scores['subject'])} in <code>{_e(scores['tsv'])}</code></p>"]
    out = ["<table>", "<thead><tr><th class=\"method\">method</th>"
           + "".join(f"<th>{_e(k)}</th>" for k in metrics) + "</tr></thead>", "<tbody>"]
    for m in methods:
        out.append(f"<tr><td class=\"method\">{_e(m)}</td>"
                   + "".join(f"<td>{_num(values.get((m, k)))}</td>" for k in metrics) + "</tr>")
    return out + ["</tbody>", "</table>", src]


def _provenance(methods: list[dict]) -> list[str]:
    if not methods:
        return []
    out = ["<h3>Provenance</h3>"]
    for m in methods:
        kind = f" <span class=\"muted\">({_e(m['kind'])})</span>" if m.get("kind") else ""
        out.append(f"<h4>{_e(m['method'])}{kind}</h4>")
        fields: list[tuple[str, str]] = []
        if m.get("model_card"):
            fields += [("model card", m["model_card"])] + model_card_fields(_card(m["model_card"]))
        if m.get("tuning_card"):
            fields += [("tuning card", m["tuning_card"])] + tuning_card_fields(_card(m["tuning_card"]))
        if "params" in m:
            fields.append(("configured params", json.dumps(m["params"], sort_keys=True)))
        if not fields:
            fields.append(("fitted", "nothing (no card)"))
        out.append("<dl class=\"card\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in fields) + "</dl>")
    return out


def build_page(manifest: dict, out_html, out_figures, manifest_path="manifest") -> Path:
    """Draw every reportlet of ``manifest`` (module docstring) into ``out_figures`` and write the
    page ``out_html`` linking them by relative path. Checks the manifest and that every file it
    lists exists before drawing anything (:class:`ReportError` naming the first that does not)."""
    from mrichain import __version__
    from mrichain.io import atomic_write

    check_manifest(manifest, manifest_path)
    _check_files(manifest, manifest_path)
    out_html, out_figures = Path(out_html), Path(out_figures)
    out_figures.mkdir(parents=True, exist_ok=True)
    subject = manifest["subject"]
    sections = manifest["sections"]
    body = [f"<h1>{_e(subject)}</h1>"]
    if manifest.get("source"):
        body.append(f"<p class=\"source\">{_e(manifest['source'])}</p>")
    body.append("<nav><ul>" + "".join(f"<li><a href=\"#{_anchor(i, s['title'])}\">{_e(s['title'])}</a></li>"
                                      for i, s in enumerate(sections)) + "</ul></nav>")
    for i, sec in enumerate(sections):
        stage_note = f"<span class=\"stage\">{_e(sec['stage'])}</span>" if sec.get("stage") else ""
        body.append(f"<section id=\"{_anchor(i, sec['title'])}\">")
        body.append(f"<h2>{_e(sec['title'])}{stage_note}</h2>")
        for fig in sec.get("figures", []):
            png = out_figures / f"{fig['name']}.png"
            rows = _draw(fig, png)
            w, h = _png_size(png)
            src = urllib.parse.quote(Path(os.path.relpath(png, out_html.parent)).as_posix())
            alt = fig.get("caption") or fig["name"]
            body.append(f"<figure><img src=\"{_e(src)}\" width=\"{w}\" height=\"{h}\" alt=\"{_e(alt)}\">"
                        f"<figcaption>{_e(fig.get('caption', ''))}</figcaption></figure>")
            if rows is not None:
                body += _age_table(rows)
        body.append("<h3>Scores</h3>")
        if sec.get("scores"):
            body += _scores_table(sec["scores"])
        else:
            why = f": {_e(sec['no_reference'])}" if sec.get("no_reference") else ""
            body.append(f"<p><span class=\"noref\">no reference</span>{why}</p>")
        body += _provenance(sec.get("methods", []))
        body.append("</section>")
    body.append(f"<footer>mrichain {_e(__version__)}; page built from <code>{_e(manifest_path)}</code></footer>")
    page = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            f"<title>{_e(subject)}: mrichain subject report</title>", f"<style>{CSS}</style>", "</head>",
            "<body>", *body, "</body>", "</html>", ""]
    with atomic_write(out_html) as tmp:
        tmp.write_text("\n".join(page), encoding="utf-8")
    return out_html
