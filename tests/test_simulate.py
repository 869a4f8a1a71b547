"""Tests for the template and the simulated cohort (4 mm grid from config/test.yaml)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from mrichain.simulate import (
    assign_splits, build_template, read_subject, read_template, simulate_subject, subject_age,
    subject_ids, write_subject, write_template,
)
from mrichain.simulate.warp import jacobian_determinant

from dag import ROOT


@pytest.fixture(scope="module")
def cfg():
    with open(ROOT / "config" / "test.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def template(cfg):
    return build_template(cfg["cohort"]["resolution_mm"])


def _bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_template_is_plausible(template, cfg):
    t = template
    r = cfg["cohort"]["resolution_mm"]
    assert t.probs.shape == (4, *t.shape) and t.probs.dtype == np.float32
    np.testing.assert_allclose(t.probs.sum(0), 1.0, atol=1e-5)
    assert set(np.unique(t.labels)) == {0, 1, 2, 3}
    np.testing.assert_allclose(np.diag(t.affine)[:3], [r, r, r])
    vol_l = t.brain_mask.sum() * r**3 / 1e6
    assert 1.2 < vol_l < 2.4  # MNI brain (with brainstem/cerebellum) ~1.9 L
    assert 0 <= t.t1w.min() and t.t1w.max() == pytest.approx(1.0)
    assert t.t1w[t.brain_mask == 0].max() == 0


def test_template_write_read_deterministic(template, tmp_path):
    write_template(template, tmp_path / "a")
    write_template(template, tmp_path / "b")
    a, b = _bytes(tmp_path / "a"), _bytes(tmp_path / "b")
    assert sorted(a) == sorted([
        "tpl-MNI152NLin2009aSym_T1w.nii.gz", "tpl-MNI152NLin2009aSym_dseg.nii.gz",
        "tpl-MNI152NLin2009aSym_desc-brain_mask.nii.gz", "tpl-MNI152NLin2009aSym_probseg.nii.gz",
    ])
    assert a == b
    t2 = read_template(tmp_path / "a")
    np.testing.assert_array_equal(t2.labels, template.labels)
    np.testing.assert_allclose(t2.probs, template.probs)
    np.testing.assert_allclose(t2.affine, template.affine)


def test_template_rebuild_identical(template, cfg):
    t2 = build_template(cfg["cohort"]["resolution_mm"])
    np.testing.assert_array_equal(t2.probs, template.probs)


def test_splits_and_ages(cfg):
    ids = subject_ids(cfg)
    assert ids[0] == "sub-001" and len(ids) == cfg["cohort"]["n_subjects"]
    splits = assign_splits(cfg)
    assert set(splits) == set(ids)
    for s in ("train", "val", "test"):
        assert sum(v == s for v in splits.values()) >= 1
    assert splits == assign_splits(copy.deepcopy(cfg))
    a0, a1 = cfg["cohort"]["age_range"]
    ages = [subject_age(cfg, s) for s in ids]
    assert all(a0 <= a <= a1 for a in ages) and len(set(ages)) == len(ages)
    # a subject's draws do not depend on the cohort size
    big = copy.deepcopy(cfg)
    big["cohort"]["n_subjects"] = 20
    assert [subject_age(big, s) for s in ids] == ages
    tiny = copy.deepcopy(cfg)
    tiny["cohort"]["n_subjects"] = 3
    assert sorted(assign_splits(tiny).values()) == ["test", "train", "val"]


def test_subject_plausible_and_files(template, cfg, tmp_path):
    s = simulate_subject(template, "sub-001", cfg)
    assert s.probs.shape == (4, *template.shape)
    np.testing.assert_allclose(s.probs.sum(0), 1.0, atol=1e-5)
    assert set(np.unique(s.labels)) == {0, 1, 2, 3}
    r = cfg["cohort"]["resolution_mm"]
    assert int(s.brain_mask.sum()) == pytest.approx(int(template.brain_mask.sum()), rel=0.2)
    disp = np.sqrt((s.warp**2).sum(-1))
    assert disp.max() == pytest.approx(cfg["cohort"]["warp"]["max_displacement_mm"], rel=1e-3)
    assert jacobian_determinant(s.warp, s.affine).min() > 0  # diffeomorphic
    a = cfg["cohort"]["bias_field"]["max_amplitude"]
    assert 1 - a - 1e-6 <= s.bias.min() and s.bias.max() <= 1 + a + 1e-6
    # T1 map in pure WM close to the subject's WM T1
    wm = s.probs[3] > 0.99
    np.testing.assert_allclose(s.t1map[wm].mean(), s.tissue_params["WM"]["T1"], rtol=0.02)
    paths = write_subject(s, tmp_path / "sub-001")
    names = {p.name for p in paths.values()}
    assert names == {f"sub-001_{x}" for x in (
        "dseg.nii.gz", "probseg.nii.gz", "T1map.nii.gz", "T2map.nii.gz", "PDmap.nii.gz",
        "desc-biasfield.nii.gz", "desc-warp_xfm.nii.gz", "desc-brain_mask.nii.gz", "info.json")}
    back = read_subject(tmp_path / "sub-001")
    assert back.age == s.age and back.split == s.split
    np.testing.assert_array_equal(back.labels, s.labels)
    np.testing.assert_allclose(back.affine, template.affine)
    assert back.warp.shape == (*template.shape, 3)
    assert r == pytest.approx(abs(back.affine[0, 0]))


def test_subject_files_byte_identical(template, cfg, tmp_path):
    for d in ("a", "b"):
        write_subject(simulate_subject(template, "sub-002", cfg), tmp_path / d)
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")


def test_different_seeds_and_subjects_differ(template, cfg):
    other = copy.deepcopy(cfg)
    other["seed"] = cfg["seed"] + 1
    a = simulate_subject(template, "sub-001", cfg)
    b = simulate_subject(template, "sub-001", other)
    c = simulate_subject(template, "sub-002", cfg)
    assert not np.allclose(a.warp, b.warp) and not np.allclose(a.warp, c.warp)
    assert a.tissue_params != b.tissue_params
    assert (a.labels != b.labels).mean() > 0.005


def test_older_subjects_have_more_csf(template, cfg):
    young = simulate_subject(template, "sub-003", cfg, age=cfg["cohort"]["age_range"][0], brain_age_gap=0.0)
    old = simulate_subject(template, "sub-003", cfg, age=cfg["cohort"]["age_range"][1], brain_age_gap=0.0)
    assert old.probs[1].sum() > 1.1 * young.probs[1].sum()
    assert old.probs[2].sum() < young.probs[2].sum()
    np.testing.assert_array_equal(old.warp, young.warp)  # only the age changed
    assert old.info["atrophy"]["ventricle_expansion_mm"] == pytest.approx(
        cfg["cohort"]["atrophy"]["ventricle_expansion_mm_at_max_age"])
