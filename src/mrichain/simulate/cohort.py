"""The simulated cohort's per-subject ground truth (its ids, splits, ages and random streams are
:mod:`mrichain.plan.cohort`'s, re-exported here).

Every random draw comes from :func:`mrichain.plan.cohort.make_rng`, so a subject's anatomy, tissue
values, bias field and noise do not depend on how many subjects the cohort has nor on the order in
which they are simulated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrichain.io import load_image, load_json, save_image, save_json
from mrichain.plan.layout import GROUNDTRUTH
from mrichain.simulate.atrophy import apply_atrophy
from mrichain.simulate.bias import bias_field
from mrichain.simulate.template import Template
from mrichain.simulate.tissue import draw_tissue_params, parameter_maps
from mrichain.simulate.warp import apply_displacement, random_displacement

from mrichain.plan.cohort import (  # noqa: F401 - the cohort's ids, splits, ages and random streams, re-exported
    PURPOSE, age_splits, age_train_ids, assign_splits, make_rng, subject_age, subject_ids, subject_index,
)


@dataclass
class Subject:
    """One simulated subject on the template grid.

    probs float32 [4, X, Y, Z] (BG, CSF, GM, WM); labels uint8 [X, Y, Z]; brain_mask uint8;
    t1map, t2map float32 ms; pdmap float32 (relative); bias float32 (multiplicative, ~1);
    warp float32 [X, Y, Z, 3] mm (subject = template(x + warp(x))); affine 4x4 RAS mm;
    tissue_params {tissue: {T1, T2, PD}}; info: everything written to the JSON sidecar.
    """

    sub_id: str
    age: float
    split: str
    probs: np.ndarray
    labels: np.ndarray
    brain_mask: np.ndarray
    t1map: np.ndarray
    t2map: np.ndarray
    pdmap: np.ndarray
    bias: np.ndarray
    warp: np.ndarray
    affine: np.ndarray
    tissue_params: dict
    info: dict = field(default_factory=dict)


def simulate_subject(
    template: Template, sub_id: str, cfg: dict, *, age: float | None = None, brain_age_gap: float | None = None
) -> Subject:
    """Simulate one subject from the template: atrophy (age) -> random warp -> tissue maps -> bias.

    Atrophy follows the subject's *brain* age: the chronological age plus a brain-age gap drawn
    from N(0, ``cohort.atrophy.brain_age_gap_sd_years``), so brains of the same age differ as in
    real cohorts and no volume predicts age exactly. ``age`` / ``brain_age_gap`` override the
    draws (for controlled comparisons); all other draws are unchanged.
    """
    c = cfg["cohort"]
    seed = int(cfg["seed"])
    idx = subject_index(sub_id)
    age = subject_age(cfg, sub_id) if age is None else float(age)
    split = assign_splits(cfg).get(sub_id, "none") if int(c["n_subjects"]) >= 3 else "none"
    age_train_only = sub_id in age_train_ids(cfg)
    if age_train_only:
        split = "train"
    aff = np.asarray(template.affine, dtype=np.float64)
    shape = template.shape

    if brain_age_gap is None:
        gap_sd = float(c["atrophy"]["brain_age_gap_sd_years"])
        brain_age_gap = float(make_rng(seed, idx, "brainage").normal(0.0, gap_sd)) if gap_sd > 0 else 0.0
    probs, atrophy_info = apply_atrophy(template.probs, aff, age + brain_age_gap, c)
    atrophy_info["brain_age_gap_years"] = round(float(brain_age_gap), 2)
    warp = random_displacement(
        shape, aff, float(c["warp"]["max_displacement_mm"]), float(c["warp"]["smoothness_mm"]),
        make_rng(seed, idx, "warp"),
    )
    probs = np.clip(apply_displacement(probs, warp, aff, order=1), 0, None)
    probs = (probs / probs.sum(0, keepdims=True)).astype(np.float32)
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    brain_mask = (probs[0] < 0.5).astype(np.uint8)

    params = draw_tissue_params(make_rng(seed, idx, "tissue"), float(c["tissue_variation_cv"]))
    maps = parameter_maps(probs, params)
    bias = bias_field(
        shape, aff, float(c["bias_field"]["max_amplitude"]), float(c["bias_field"]["smoothness_mm"]),
        make_rng(seed, idx, "bias"),
    )
    info = {
        "participant_id": sub_id,
        "age": age,
        "split": split,
        "age_train_only": age_train_only,
        "seed": seed,
        "subject_index": idx,
        "resolution_mm": float(abs(aff[0, 0])),
        "tissue_params": params,
        "tissue_params_units": {"T1": "ms", "T2": "ms", "PD": "relative"},
        "atrophy": atrophy_info,
        "warp": {"max_displacement_mm": float(c["warp"]["max_displacement_mm"]),
                 "smoothness_mm": float(c["warp"]["smoothness_mm"]),
                 "convention": "subject(x) = template(x + u(x)), u in RAS mm"},
        "volumes_ml": {name: float(probs[k].sum() * abs(np.linalg.det(aff[:3, :3])) / 1000.0)
                       for k, name in ((1, "CSF"), (2, "GM"), (3, "WM"))},
    }
    return Subject(sub_id, age, split, probs, labels, brain_mask, maps["T1"], maps["T2"], maps["PD"],
                   bias, warp, aff, params, info)


def subject_files(sub_id: str, outdir: str | Path) -> dict[str, Path]:
    """The ground-truth file paths of ``sub_id`` in ``outdir`` (= results/groundtruth/sub-XXX),
    named as :data:`mrichain.plan.layout.GROUNDTRUTH` says."""
    d = Path(outdir)
    return {k: d / f"{sub_id}_{name}" for k, name in GROUNDTRUTH.items()}


def write_subject(subject: Subject, outdir: str | Path) -> dict[str, Path]:
    """Write the subject's ground truth into ``outdir``; returns {key: path} (see :func:`subject_files`)."""
    p = subject_files(subject.sub_id, outdir)
    a = subject.affine
    save_image(subject.labels, a, p["dseg"], dtype=np.uint8)
    save_image(np.moveaxis(subject.probs, 0, -1), a, p["probseg"])
    save_image(subject.t1map, a, p["T1map"])
    save_image(subject.t2map, a, p["T2map"])
    save_image(subject.pdmap, a, p["PDmap"])
    save_image(subject.bias, a, p["biasfield"])
    save_image(subject.warp, a, p["warp"])
    save_image(subject.brain_mask, a, p["brain_mask"], dtype=np.uint8)
    save_json(subject.info, p["info"])
    return p


def read_subject(outdir: str | Path, sub_id: str | None = None) -> Subject:
    """Read a subject written by :func:`write_subject` (``sub_id`` defaults to the folder name)."""
    outdir = Path(outdir)
    sub_id = sub_id or outdir.name
    p = subject_files(sub_id, outdir)
    info = load_json(p["info"])
    probs_img = load_image(p["probseg"], ndim=4)
    arr = lambda k, dt=np.float32: np.asarray(load_image(p[k]).dataobj, dtype=dt)  # noqa: E731
    return Subject(
        sub_id=sub_id, age=float(info["age"]), split=info.get("split", "none"),
        probs=np.ascontiguousarray(np.moveaxis(np.asarray(probs_img.dataobj, np.float32), -1, 0)),
        labels=arr("dseg", np.uint8), brain_mask=arr("brain_mask", np.uint8),
        t1map=arr("T1map"), t2map=arr("T2map"), pdmap=arr("PDmap"), bias=arr("biasfield"),
        warp=np.asarray(load_image(p["warp"], ndim=4).dataobj, np.float32),
        affine=np.array(probs_img.affine, np.float64), tissue_params=info["tissue_params"], info=info,
    )
