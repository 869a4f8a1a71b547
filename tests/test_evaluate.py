"""Scoring and aggregation on small synthetic files, without the DAG: a per-subject stage
(segment, denoise), the cohort-level brain-age stage, and metrics.json / comparison.tsv."""
import json

import numpy as np
import pandas as pd
import pytest

from mrichain.scoring.aggregate import aggregate
from mrichain.scoring.evaluate import score_stage
from mrichain.io import save_image, save_json
from mrichain.predict.pipeline import run_prediction
from test_methods import phantom

SPLITS = {"sub-001": "train", "sub-002": "train", "sub-003": "train", "sub-004": "val", "sub-005": "test"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Per subject: labels, a one-voxel-shifted copy, noise-free image, two noisy versions, mask, info."""
    d = tmp_path_factory.mktemp("eval")
    out = {}
    for i, sub in enumerate(SPLITS):
        img, lab = phantom(shape=(24, 28, 24), voxel=6.0)
        labels = np.asarray(lab.dataobj)
        clean = np.asarray(img.dataobj)
        rng = np.random.default_rng(i)
        f = {k: d / f"{sub}_{k}.nii.gz" for k in ("dseg", "shifted", "clean", "noisy", "lessnoisy", "mask")}
        save_image(labels, img.affine, f["dseg"], dtype=np.uint8)
        save_image(np.roll(labels, 1, axis=0), img.affine, f["shifted"], dtype=np.uint8)
        save_image(clean, img.affine, f["clean"])
        save_image(clean + 0.10 * rng.standard_normal(clean.shape), img.affine, f["noisy"])
        save_image(clean + 0.02 * rng.standard_normal(clean.shape), img.affine, f["lessnoisy"])
        save_image((labels > 0).astype(np.uint8), img.affine, f["mask"], dtype=np.uint8)
        f["info"] = save_json({"age": 20.0 + 10 * i}, d / f"{sub}_info.json")
        out[sub] = {k: str(v) for k, v in f.items()}
    return d, out


def test_segment_and_denoise_scores(files, tmp_path):
    _, f = files
    seg = {"stage": "segment", "acq": "R4", "splits": SPLITS, "subjects": {
        s: {"reference": f[s]["dseg"], "input": f[s]["clean"],
            "methods": {"atropos": {"labels": f[s]["dseg"]}, "unet": {"labels": f[s]["shifted"]}}} for s in SPLITS}}
    table = score_stage(seg, figures_dir=tmp_path / "fig")
    assert list(table.columns) == ["stage", "acq", "subject", "split", "method", "metric", "value"]
    dice = table[table.metric == "dice_mean"].groupby("method")["value"].mean()
    assert dice["atropos"] == pytest.approx(1.0) and 0.5 < dice["unet"] < 0.99
    assert (table[(table.metric == "hd95_mm_mean") & (table.method == "unet")]["value"] > 0).all()
    assert len(list((tmp_path / "fig").glob("*.png"))) == len(SPLITS)  # one montage per subject

    den = {"stage": "denoise", "acq": "R4", "splits": SPLITS, "subjects": {
        s: {"reference": f[s]["clean"], "input": f[s]["noisy"], "mask": f[s]["mask"],
            "methods": {"antsnlm": {"image": f[s]["lessnoisy"]}}} for s in SPLITS}}
    table = score_stage(den)
    psnr = table[table.metric == "psnr"].groupby("method")["value"].mean()
    assert psnr["antsnlm"] > psnr["input"] + 10  # 5x less noise: ~14 dB


def test_brain_age_prediction_scores_and_aggregate(files, tmp_path):
    _, f = files
    subs = list(SPLITS)
    pred_tsv, model_json = tmp_path / "pred.tsv", tmp_path / "model.json"
    table = run_prediction("linear", {"features": ["csf", "gm", "wm"]}, subs, SPLITS,
                           info_paths=[f[s]["info"] for s in subs], out_predictions=pred_tsv,
                           out_model=model_json, label_paths=[f[s]["dseg"] for s in subs])
    assert list(table.subject) == subs and json.loads(model_json.read_text())["n_train"] == 3
    manifest = {"stage": "predict", "acq": "R4", "splits": SPLITS,
                "methods": {"linear": {"predictions": str(pred_tsv), "model": str(model_json)}}}
    scores = score_stage(manifest, figures_dir=tmp_path / "fig")
    assert (tmp_path / "fig" / "linear.png").exists()
    segment = score_stage({"stage": "segment", "acq": "R4", "splits": SPLITS, "subjects": {
        s: {"reference": f[s]["dseg"], "input": f[s]["clean"], "methods": {"atropos": {"labels": f[s]["shifted"]}}}
        for s in subs}})
    paths = []
    for name, t in (("predict", scores), ("segment", segment)):
        paths.append(tmp_path / f"{name}.tsv")
        t.to_csv(paths[-1], sep="\t", index=False)
    out = {k: tmp_path / f"{k}.out" for k in ("metrics", "by_acq", "summary", "comparison")}
    metrics = aggregate([str(p) for p in paths], "R4", out["metrics"], out["by_acq"], out["summary"],
                        out["comparison"])
    test = pd.read_csv(pred_tsv, sep="\t").query("split == 'test'")
    assert metrics["predict"]["linear"]["mae_years"] == pytest.approx(float(np.abs(test.predicted_age - test.age).mean()))
    assert metrics["predict"]["linear"]["n_test"] == 1 and json.loads(out["metrics"].read_text()) == metrics
    seg_test = segment[(segment.split == "test") & (segment.metric == "dice_mean")]["value"].mean()
    assert metrics["segment"]["atropos"]["dice_mean"] == pytest.approx(seg_test)
    comparison = pd.read_csv(out["comparison"], sep="\t")
    assert set(comparison.kind) == {"classical"}  # linear, atropos
