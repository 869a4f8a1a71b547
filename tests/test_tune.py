"""Tuning classical methods on the val split (mrichain.train.tune): the tuner picks the known best point
of a toy grid, through the same job and scorer code the pipeline runs, and writes its card."""
import json

import numpy as np
import pytest

from mrichain.io import load_json, save_image, save_json
from mrichain.train.tune import grid_points, tune, tuned_params
from test_learned_recon import _volume, _write


def test_grid_points_first_parameter_slowest():
    assert grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def _labels(csf_fraction: float, gm_fraction: float, shape=(10, 10, 10)) -> np.ndarray:
    """A label map with the given CSF and GM fractions of its 1000 voxels (rest WM)."""
    flat = np.full(np.prod(shape), 3, np.uint8)
    n_csf, n_gm = int(round(csf_fraction * flat.size)), int(round(gm_fraction * flat.size))
    flat[:n_csf] = 1
    flat[n_csf:n_csf + n_gm] = 2
    return flat.reshape(shape)


def test_brain_age_tuning_picks_the_informative_feature_and_the_small_penalty(tmp_path):
    """Age is exactly linear in the CSF fraction; the GM fraction is noise. Of alpha x features,
    only (small alpha, [csf]) predicts the val ages well: the card must choose it (lower MAE wins)."""
    rng = np.random.default_rng(0)
    subjects = [f"sub-{i:03d}" for i in range(1, 13)]
    splits = {s: ("val" if i % 4 == 0 else "train") for i, s in enumerate(subjects)}
    ages = rng.uniform(20, 80, len(subjects))
    labels, info = [], []
    for sub, age in zip(subjects, ages):
        lab = _labels(0.05 + 0.004 * (age - 20), rng.uniform(0.3, 0.4))
        labels.append(str(save_image(lab, np.eye(4), tmp_path / f"{sub}_dseg.nii.gz", dtype=np.uint8)))
        info.append(str(save_json({"age": float(age)}, tmp_path / f"{sub}_info.json")))
    manifest = {"stage": "predict", "method": "linear", "acq": "R1",
                "job": {"stage": "predict", "method": "linear", "acq": "R1", "subjects": subjects,
                        "splits": splits, "labels": labels, "info": info}}
    grid = {"alpha": [1e6, 1e-3], "features": [["gm"], ["csf"]]}
    card = tune(manifest, grid, {}, tmp_path / "card.json", seed=3)
    assert card["chosen"] == {"alpha": 1e-3, "features": ["csf"]}
    assert card["metric"] == "abs_error_years" and card["higher_is_better"] is False
    assert card["subjects"] == sorted(s for s in subjects if splits[s] == "val")
    scores = {json.dumps(r["params"], sort_keys=True): r["score"] for r in card["results"]}
    assert len(scores) == 4 and card["chosen_score"] == min(scores.values()) < 1.0
    assert load_json(tmp_path / "card.json") == json.loads(json.dumps(card))
    assert len(card["data_hash"]) == 64 and card["provenance"]["mrichain"]
    assert tuned_params({"alpha": 5.0, "other": 1}, tmp_path / "card.json") == {
        "alpha": 1e-3, "features": ["csf"], "other": 1}


def test_cs_tuning_rejects_a_penalty_that_wipes_the_image(tmp_path):
    """Per-subject path: CS at lambda = 1e3 soft-thresholds every wavelet coefficient away; the
    tuner, scoring SSIM against the noise-free image inside the mask, must pick the small lambda."""
    subjects = {}
    for i, sub in enumerate(["sub-001", "sub-002"]):
        kspace = _write(tmp_path / f"{sub}_acq-R4_T1w.h5", i)
        _, target = _volume(i)
        vol = np.transpose(target, (1, 2, 0))  # [S, H, W] -> NIfTI [H, W, S], as reconstruct writes
        truth = save_image(vol, np.eye(4), tmp_path / f"{sub}_truth.nii.gz")
        mask = save_image((vol > 0.2 * vol.max()).astype(np.uint8), np.eye(4), tmp_path / f"{sub}_mask.nii.gz",
                          dtype=np.uint8)
        subjects[sub] = {"inputs": {"kspace": str(kspace)},
                         "score": {"reference": str(kspace), "truth": str(truth), "mask": str(mask)}}
    manifest = {"stage": "reconstruct", "method": "cs", "acq": "R4", "contrast": "T1w", "subjects": subjects}
    card = tune(manifest, {"lam": [1e3, 1e-3]}, {"iterations": 10}, tmp_path / "cs.json")
    assert card["chosen"] == {"lam": 1e-3} and card["metric"] == "ssim_truth"
    by_lam = {r["params"]["lam"]: r for r in card["results"]}
    assert by_lam[1e-3]["score"] > by_lam[1e3]["score"] + 0.2
    assert set(by_lam[1e-3]["per_subject"]) == set(subjects)


def test_empty_grid_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty grid"):
        tune({"stage": "reconstruct", "method": "cs", "acq": "R4", "subjects": {}}, {"lam": []}, {},
             tmp_path / "x.json")
