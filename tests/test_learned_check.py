"""The "did it learn" check and the small-n rule, on tiny synthetic files through the real scorers
(mrichain.scoring.evaluate) and the aggregation (mrichain.scoring.aggregate): no DAG, no training."""
import json

import numpy as np
import pandas as pd
import pytest

from mrichain.scoring.aggregate import MIN_N, aggregate, comparison, differences, learned_checks, mean_interval, summarise
from mrichain.scoring.evaluate import score_stage
from mrichain.io import save_image, save_json
from test_methods import phantom

SUBS = [f"sub-{i:03d}" for i in range(1, 5)]
SPLITS = {"sub-001": "train", "sub-002": "val", "sub-003": "test", "sub-004": "test"}


def verdict(checks: pd.DataFrame, method: str, acq: str = "R4"):
    r = checks[(checks.method == method) & (checks.acq == acq)]
    assert len(r) == 1, method
    return r.iloc[0].learned, r.iloc[0].learned_reason


# --- brain age ---------------------------------------------------------------------------------
def predictions(tmp_path, name, ages, predicted, splits):
    path = tmp_path / f"{name}.tsv"
    pd.DataFrame({"subject": [f"sub-{i:03d}" for i in range(1, len(ages) + 1)], "split": splits,
                  "age": ages, "predicted_age": predicted}).to_csv(path, sep="\t", index=False)
    return str(path)


def age_scores(tmp_path, predicted_by_method, card=None):
    rng = np.random.default_rng(0)
    ages = np.linspace(21, 79, 12)
    splits = ["test", "train", "val", "train", "train", "test", "train", "test", "train", "val", "train", "test"]
    methods = {"mean": {"predictions": predictions(tmp_path, "mean", ages, np.full(12, 50.0), splits)}}
    for m, f in predicted_by_method.items():
        methods[m] = {"predictions": predictions(tmp_path, m, ages, f(ages, rng), splits)}
    manifest = {"stage": "predict", "acq": "R4", "splits": {}, "methods": methods}
    if card is not None:
        manifest["cards"] = {"sfcn": card}
    return score_stage(manifest)


def test_a_constant_age_predictor_is_flagged(tmp_path):
    scores = age_scores(tmp_path, {"sfcn": lambda a, rng: 54.0 + 1.9 * rng.uniform(size=a.size)})
    learned, reason = verdict(learned_checks(scores), "sfcn")
    assert learned is False
    assert reason.startswith("did not learn: predictions span") and "for ages spanning 58.0 y" in reason
    assert "6 held-out subjects" in reason  # val and test


def test_predictions_that_spread_without_following_age_are_flagged(tmp_path):
    """Predictions close to the ages on the test subjects (MAE 5 y against the mean predictor's
    17 y: the floor check passes them) and reversed on the val subjects, so that over the held-out
    subjects they spread as the ages do (SD 0.93 of theirs) but barely follow them (r = 0.13): the
    spread alone would pass them; the correlation does not."""
    held_out = {0: 30.0, 5: 48.0, 7: 56.0, 11: 70.0,  # test, ages 21, 47, 58, 79
                2: 75.0, 9: 25.0}  # val, ages 32, 68
    scores = age_scores(tmp_path, {"sfcn": lambda a, rng: np.array([held_out.get(i, 50.0) for i in range(a.size)])})
    learned, reason = verdict(learned_checks(scores), "sfcn")
    assert learned is False and "did not learn" in reason, reason


def test_a_predictor_that_tracks_age_passes(tmp_path):
    scores = age_scores(tmp_path, {"sfcn": lambda a, rng: a + rng.normal(0, 3.0, a.size)})
    learned, reason = verdict(learned_checks(scores), "sfcn")
    assert learned is True and reason.startswith("learned: predictions span")
    # shrunk towards the mean but still tracking (r ~ 0.5): passes the spread check; a constant does not
    scores = age_scores(tmp_path, {"sfcn": lambda a, rng: 50 + 0.5 * (a - 50)})
    assert verdict(learned_checks(scores), "sfcn")[0] is True


def test_the_model_card_says_whether_it_beat_its_start(tmp_path):
    tracks = {"sfcn": lambda a, rng: a + rng.normal(0, 3.0, a.size)}
    card = save_json({"beats_start": False}, tmp_path / "predict-sfcn.json")
    scores = age_scores(tmp_path, tracks, card=str(card))
    row = scores[scores.metric == "check_beats_start"]
    assert list(row.split) == ["all"] and list(row.value) == [0.0]
    learned, reason = verdict(learned_checks(scores), "sfcn")
    assert learned is False and "no epoch beat its untrained start" in reason
    # a card without the key is unknown, not false: no row, the other checks decide
    save_json({"validation_score": 1.0}, card)
    scores = age_scores(tmp_path, tracks, card=str(card))
    assert not (scores.metric == "check_beats_start").any()
    assert verdict(learned_checks(scores), "sfcn")[0] is True


def test_check_rows_stay_out_of_the_score_tables(tmp_path):
    scores = age_scores(tmp_path, {"sfcn": lambda a, rng: a})
    assert {"check_predicted_age", "check_age"} <= set(scores.metric)
    assert not summarise(scores).metric.str.startswith("check_").any()
    assert not differences(scores).metric.str.startswith("check_").any()


# --- images, registration, segmentation ---------------------------------------------------------
@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Per subject: labels, shifted labels, one-class labels, noise-free image, noisy image, a
    half-denoised image, brain mask, a Jacobian of ones, a timing file."""
    d = tmp_path_factory.mktemp("learned")
    out = {}
    for i, sub in enumerate(SUBS):
        img, lab = phantom(shape=(24, 28, 24), voxel=6.0)
        labels, clean = np.asarray(lab.dataobj), np.asarray(img.dataobj)
        noise = 0.1 * np.random.default_rng(i).standard_normal(clean.shape)
        arrays = {"dseg": labels, "shifted": np.roll(labels, 2, axis=0), "oneclass": (labels > 0) * 2,
                  "clean": clean, "noisy": clean + noise, "denoised": clean + 0.5 * noise,
                  "mask": labels > 0, "jacobian": np.ones(clean.shape)}
        f = {}
        for k, a in arrays.items():
            f[k] = str(d / f"{sub}_{k}.nii.gz")
            labels_like = k in ("dseg", "shifted", "oneclass", "mask")
            save_image(a, img.affine, f[k], dtype=np.uint8 if labels_like else np.float32)
        f["timing"] = str(save_json({"seconds_per_pair": 1.0}, d / f"{sub}_timing.json"))
        out[sub] = f
    return out


def denoise_manifest(f, dncnn):
    return {"stage": "denoise", "acq": "R4", "splits": SPLITS, "subjects": {
        s: {"reference": f[s]["clean"], "input": f[s]["noisy"], "mask": f[s]["mask"],
            "methods": {"antsnlm": {"image": f[s]["denoised"]}, "dncnn": {"image": f[s][dncnn]}}} for s in SUBS}}


def test_an_identity_output_is_flagged_for_an_image_stage(volumes):
    scores = score_stage(denoise_manifest(volumes, "noisy"))  # dncnn returns its input
    test = scores[(scores.method == "dncnn") & (scores.split == "test")]
    assert (test[test.metric == "check_change_vs_input"].value == 0).all()
    learned, reason = verdict(learned_checks(scores), "dncnn")
    assert learned is False and "differs from the input floor's by 0 % within the brain" in reason

    scores = score_stage(denoise_manifest(volumes, "denoised"))  # removes half the noise
    change = scores[(scores.method == "dncnn") & (scores.metric == "check_change_of_error_vs_input")].value
    assert change.between(0.45, 0.55).all()  # half of the input's error against the truth
    learned, reason = verdict(learned_checks(scores), "dncnn")
    assert learned is True and reason.startswith("learned: its output differs from the input floor's")


def register_manifest(f, voxelmorph):
    return {"stage": "register", "acq": "R4", "splits": SPLITS, "subjects": {
        s: {"reference": f[s]["dseg"], "fixed": f[s]["clean"], "unregistered": f[s]["shifted"],
            "methods": {m: {"image": f[s]["clean"], "labels": f[s][lab], "jacobian": f[s]["jacobian"],
                            "timing": f[s]["timing"]}
                        for m, lab in (("affine", "shifted"), ("voxelmorph", voxelmorph))}}
        for s in SUBS if SPLITS[s] == "test"}}


def test_an_identity_registration_is_flagged_and_a_moving_one_passes(volumes):
    scores = score_stage(register_manifest(volumes, "shifted"))  # the unregistered labels
    learned, reason = verdict(learned_checks(scores), "voxelmorph")
    assert learned is False and "its warped labels differ from the identity floor's in 0 %" in reason
    scores = score_stage(register_manifest(volumes, "dseg"))  # labels moved onto the template's
    assert (scores[scores.metric == "check_label_change_vs_affine"].value > 0.1).all()
    assert verdict(learned_checks(scores), "voxelmorph")[0] is True


def test_a_one_class_segmentation_is_flagged(volumes):
    def manifest(unet):
        return {"stage": "segment", "acq": "R4", "splits": SPLITS, "subjects": {
            s: {"reference": volumes[s]["dseg"], "input": volumes[s]["clean"],
                "methods": {"kmeans": {"labels": volumes[s]["shifted"]}, "unet": {"labels": volumes[s][unet]}}}
            for s in SUBS}}

    learned, reason = verdict(learned_checks(score_stage(manifest("oneclass"))), "unet")
    assert learned is False and "fewer than 2 tissue classes on 2 of 2 test subjects" in reason
    assert verdict(learned_checks(score_stage(manifest("dseg"))), "unet")[0] is True


# --- small n -------------------------------------------------------------------------------------
def segment_scores(n):
    rng = np.random.default_rng(7)
    subs = [f"sub-{i:03d}" for i in range(1, n + 1)]
    kmeans = rng.uniform(0.6, 0.7, n)
    values = {"kmeans": kmeans, "atropos": kmeans + 0.05 + rng.normal(0, 0.01, n),
              "unet": kmeans + 0.1 + rng.normal(0, 0.01, n)}
    rows = [dict(stage="segment", acq="R4", subject=s, split="test", method=m, metric="dice_mean", value=float(v))
            for m, vals in values.items() for s, v in zip(subs, vals)]
    rows += [dict(stage="segment", acq="R4", subject=s, split="test", method="unet", metric="check_classes", value=3.0)
             for s in subs]
    return pd.DataFrame(rows)


def test_below_the_minimum_n_no_interval_and_no_beats_are_printed():
    assert MIN_N == 10
    scores = segment_scores(2)
    summary = summarise(scores)
    assert summary.n_test.eq(2).all() and summary.ci_low.isna().all() and summary.ci_high.isna().all()
    assert summary.value.notna().all()
    diffs = differences(scores)
    assert diffs.n.eq(2).all() and diffs.ci_low.isna().all() and diffs.better.isna().all()
    assert diffs.mean_difference.notna().all()
    table = comparison(summary, "R4", diffs).set_index("method")
    assert table.loc["unet"].beats_floor is None and table.loc["unet"].gain > 0
    assert table.loc["unet"].learned is True  # the verdict does not need an interval


def test_from_the_minimum_n_intervals_and_beats_are_as_before():
    scores = segment_scores(20)
    summary = summarise(scores, seed=3).set_index("method")
    values = scores[scores.method == "unet"].query("metric == 'dice_mean'").value.to_numpy()
    # the same stream and numbers as the interval has always been computed with
    assert (summary.loc["unet", "ci_low"], summary.loc["unet", "ci_high"]) == mean_interval(
        values, 3, ("R4", "segment", "unet", "dice_mean"))
    diffs = differences(scores, seed=3)
    assert diffs.ci_low.notna().all() and diffs.better.eq(True).all()
    table = comparison(summarise(scores), "R4", diffs).set_index("method")
    assert table.loc["unet"].beats_floor == True and table.loc["atropos"].beats_floor == True  # noqa: E712


# --- the tables -----------------------------------------------------------------------------------
def test_the_learned_column_and_reason_reach_comparison_differences_and_metrics_json(tmp_path):
    constant = age_scores(tmp_path, {"sfcn": lambda a, rng: 54.0 + 1.9 * rng.uniform(size=a.size)})
    constant.to_csv(tmp_path / "predict.tsv", sep="\t", index=False)
    segment_scores(20).to_csv(tmp_path / "segment.tsv", sep="\t", index=False)
    out = {k: tmp_path / k for k in ("metrics.json", "by_acq.json", "summary.tsv", "comparison.tsv", "diff.tsv")}
    metrics = aggregate([str(tmp_path / "predict.tsv"), str(tmp_path / "segment.tsv")], "R4", out["metrics.json"],
                        out["by_acq.json"], out["summary.tsv"], out["comparison.tsv"], out["diff.tsv"])
    comp = pd.read_csv(out["comparison.tsv"], sep="\t")
    assert list(comp.columns[-2:]) == ["learned", "learned_reason"]
    sfcn = comp[comp.method == "sfcn"].iloc[0]
    assert sfcn.learned == False and sfcn.learned_reason.startswith("did not learn: predictions span")  # noqa: E712
    assert sfcn.beats_floor == False  # noqa: E712
    unet = comp[comp.method == "unet"].iloc[0]
    assert unet.learned == True and unet.beats_floor == True  # noqa: E712  (20 test subjects)
    assert comp[comp.kind != "learned"].learned.isna().all()  # floors and classical: empty
    diffs = pd.read_csv(out["diff.tsv"], sep="\t")
    mine = diffs[diffs.method_a == "sfcn"]
    assert len(mine) and (mine.learned == False).all() and (mine.better == False).all()  # noqa: E712
    assert mine.learned_reason.str.contains("ages spanning 58.0 y").all()
    assert metrics["predict"]["sfcn"]["learned"] is False and metrics["segment"]["unet"]["learned"] is True
    assert "learned" not in metrics["segment"]["atropos"]
    assert json.loads(out["by_acq.json"].read_text())["R4"]["predict"]["sfcn"]["learned"] is False
    summary = pd.read_csv(out["summary.tsv"], sep="\t")
    assert not summary.metric.str.startswith("check_").any()
