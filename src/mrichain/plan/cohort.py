"""The cohort's identities: subject ids, splits, ages and every random stream's seed.

What the Snakefile needs at parse time to plan a run, apart from the simulation itself
(:mod:`mrichain.simulate.cohort`, which uses these): no image library, so that planning a run
(and every cluster job, which parses the Snakefile again) does not import nibabel, h5py or scipy.
numpy's generators draw the splits and ages (the same streams as the simulation's), imported when
a draw is made, so the planning package imports without it. Every random draw comes from
``numpy.random.default_rng(SeedSequence([seed, subject_index, purpose]))`` (:func:`make_rng`), so
a subject's anatomy, tissue values, bias field and noise do not depend on how many subjects the
cohort has nor on the order in which they are simulated.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

PURPOSE = {"split": 1, "age": 2, "warp": 3, "tissue": 4, "bias": 5, "noise": 6, "mask": 7, "brainage": 8,
           "mrf_noise": 9, "mrf_b1": 10, "age_split": 11, "motion": 12}
"""Purpose codes: the third entropy word of each random stream."""


def make_rng(seed: int, subject_index: int, purpose: str, *extra: int) -> np.random.Generator:
    """The random generator for one (seed, subject, purpose) stream; ``extra`` entropy words split
    a purpose into independent streams (a motion level's trajectory)."""
    import numpy as np

    return np.random.default_rng(np.random.SeedSequence([int(seed), int(subject_index), PURPOSE[purpose],
                                                         *(int(e) for e in extra)]))


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
