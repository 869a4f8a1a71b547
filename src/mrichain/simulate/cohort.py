"""The simulated cohort: subject ids, splits, ages, and per-subject ground truth.

Every random draw comes from ``numpy.random.default_rng(SeedSequence([seed, subject_index,
purpose]))`` (:func:`make_rng`), so a subject's anatomy, tissue values, bias field and noise do not
depend on how many subjects the cohort has nor on the order in which they are simulated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrichain.io import load_image, load_json, save_image, save_json
from mrichain.layout import GROUNDTRUTH
from mrichain.simulate.atrophy import apply_atrophy
from mrichain.simulate.bias import bias_field
from mrichain.simulate.template import Template
from mrichain.simulate.tissue import draw_tissue_params, parameter_maps
from mrichain.simulate.warp import apply_displacement, random_displacement

PURPOSE = {"split": 1, "age": 2, "warp": 3, "tissue": 4, "bias": 5, "noise": 6, "mask": 7, "brainage": 8,
           "mrf_noise": 9, "mrf_b1": 10, "age_split": 11}
"""Purpose codes: the third entropy word of each random stream."""


def make_rng(seed: int, subject_index: int, purpose: str) -> np.random.Generator:
    """The random generator for one (seed, subject, purpose) stream."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(subject_index), PURPOSE[purpose]]))


def subject_index(sub_id: str) -> int:
    """'sub-007' -> 7."""
    return int(str(sub_id).split("-", 1)[1])


def subject_ids(cfg: dict) -> list[str]:
    """['sub-001', ..., 'sub-NNN'] for ``cfg['cohort']['n_subjects']`` subjects."""
    n = int(cfg["cohort"]["n_subjects"])
    return [f"sub-{i:03d}" for i in range(1, n + 1)]


def age_train_ids(cfg: dict) -> list[str]:
    """Subjects simulated only to train the brain-age models (``cohort.n_age_train_subjects``),
    numbered after the image cohort: ['sub-(N+1)', ...]. They are train- or val-split subjects of
    the cohort-level stage only (:func:`age_splits`): acquired fully sampled, taken through the
    feed methods, never scored and never used to train or tune an image stage."""
    n = int(cfg["cohort"]["n_subjects"])
    m = int(cfg["cohort"].get("n_age_train_subjects", 0))
    return [f"sub-{i:03d}" for i in range(n + 1, n + m + 1)]


def assign_splits(cfg: dict) -> dict[str, str]:
    """{sub_id: 'train'|'val'|'test'}, a seeded permutation; val and test get >= 1 subject each
    (sizes round(fraction * n)), train the rest (>= 1). Needs n_subjects >= 3."""
    ids = subject_ids(cfg)
    n = len(ids)
    if n < 3:
        raise ValueError(f"cohort.n_subjects={n}: need at least 3 subjects (one per split)")
    frac = cfg["cohort"]["split"]
    n_val = max(1, int(round(float(frac.get("val", 0)) * n)))
    n_test = max(1, int(round(float(frac.get("test", 0)) * n)))
    while n - n_val - n_test < 1:
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    order = make_rng(cfg["seed"], 0, "split").permutation(n)
    out = {}
    for rank, i in enumerate(order):
        out[ids[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return dict(sorted(out.items()))


def age_splits(cfg: dict) -> dict[str, str]:
    """{age subject: 'train'|'val'}: the age subjects (:func:`age_train_ids`) split in the image
    cohort's train:val ratio (``cohort.split``), a seeded permutation; val gets
    ``round(m * val / (train + val))`` of the ``m`` subjects, none below 3 subjects (they all train).
    The val ones give the brain-age models a validation split large enough to select an epoch or a
    tuned value by (the image cohort's val split alone is 2 subjects by default)."""
    ids = age_train_ids(cfg)
    frac = cfg["cohort"]["split"]
    tr, va = float(frac.get("train", 0)), float(frac.get("val", 0))
    n_val = int(round(len(ids) * va / (tr + va))) if len(ids) >= 3 and tr + va > 0 else 0
    order = make_rng(cfg["seed"], 0, "age_split").permutation(len(ids))
    return {ids[i]: "val" if rank < n_val else "train" for rank, i in enumerate(order)}


def subject_age(cfg: dict, sub_id: str) -> float:
    """Age in years, uniform in ``cfg['cohort']['age_range']``, rounded to 0.01 year."""
    a0, a1 = cfg["cohort"]["age_range"]
    rng = make_rng(cfg["seed"], subject_index(sub_id), "age")
    return round(float(rng.uniform(float(a0), float(a1))), 2)


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
    named as :data:`mrichain.layout.GROUNDTRUTH` says."""
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
