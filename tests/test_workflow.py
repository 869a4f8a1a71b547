"""The whole DAG on config/test.yaml in a temporary directory (integration).

One run of the pipeline is shared by the tests of this module: results, a second run that does
nothing, the staleness of one stage's parameter, the report, and bad input with --keep-going
(what needs only a dry run or lint: tests/test_dag.py).
"""
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from dag import ROOT, TEST_CONFIG, planned_jobs, snakemake
from mrichain.scoring.aggregate import MIN_N
from mrichain.plan.manifests import Plan
from mrichain.plan.stages import METHOD_STAGES, STAGE_NAMES, kind, learned_methods, stage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(local_run):
    return local_run


def test_metrics_cover_all_stages(run):
    metrics = json.loads((run / "results" / "metrics.json").read_text())
    assert set(metrics) == set(STAGE_NAMES) | {"mrf"}
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    acq = metrics["acquire"]["simulated"]
    assert abs(acq["snr_measured"] - cfg["acquire"]["snr"]) / cfg["acquire"]["snr"] < 0.1
    assert abs(acq["acceleration_measured"] - cfg["acquire"]["accelerations"][0]) < 0.5
    rec = metrics["reconstruct"]["zerofilled"]
    assert 0 < rec["ssim"] < 1 and rec["psnr"] > 15 and rec["nmse"] < 0.2
    by_acq = json.loads((run / "results" / "metrics_by_acq.json").read_text())
    assert set(by_acq) == set(Plan(cfg).conditions) | {"MRF"}  # R4, R1, the sweep's R4cs ..., the oracle; MRF
    assert set(by_acq["R4cs"]) == {"denoise", "register", "segment", "predict"}
    den = by_acq["R1"]["denoise"]  # fully sampled: noise is what is left to remove
    assert den["antsnlm"]["psnr"] > den["input"]["psnr"] and den["antsnlm"]["ssim"] > den["input"]["ssim"]
    assert by_acq["R1"]["reconstruct"]["zerofilled"]["nmse"] < 1e-6  # RSS of full k-space is the reference
    assert by_acq["R1"]["segment"]["atropos"]["dice_mean"] > metrics["segment"]["atropos"]["dice_mean"]
    reg = metrics["register"]["antssyn"]
    assert reg["dice_mean"] > 0.5 and reg["folding_percent"] < 1.0 and reg["seconds_per_pair"] > 0
    seg = metrics["segment"]["atropos"]
    assert seg["dice_mean"] > 0.6
    assert 0 < by_acq["R1"]["segment"]["atropos"]["hd95_mm_mean"] < seg["hd95_mm_mean"]  # aliasing costs boundary
    # the aggregate MAE is the test split's mean absolute error of the predictions table
    table = pd.read_csv(run / "results" / "predict" / "acq-R4_desc-linear_predictions.tsv", sep="\t")
    test = table[table.split == "test"]
    assert metrics["predict"]["linear"]["mae_years"] == pytest.approx(float(np.mean(np.abs(test.predicted_age - test.age))), rel=1e-5)
    for stage in (s.name for s in METHOD_STAGES):
        assert set(metrics[stage]) >= set(cfg[stage]["methods"]), stage  # classical and learned side by side
        for method in cfg[stage]["methods"]:
            assert metrics[stage][method]["seconds"] > 0
            assert metrics[stage][method]["n_test"] >= 1
    sfcn = metrics["predict"]["sfcn"]
    assert 0 <= sfcn["interval_coverage"] <= 1 and sfcn["interval_width_years"] > 0
    assert 0 <= metrics["segment"]["unet"]["dice_mean"] <= 1


def test_outputs_have_logs_montages_and_tables(run):
    res = run / "results"
    for stage in STAGE_NAMES:
        tsv = res / "metrics" / f"acq-R4_stage-{stage}.tsv"
        assert tsv.exists()
        assert list((res / "figures" / f"acq-R4_stage-{stage}").glob("*.png")), stage
    assert (res / "metrics" / "summary.tsv").exists()
    comparison = (res / "comparison.tsv").read_text().splitlines()
    assert comparison[0].split("\t")[:4] == ["stage", "method", "kind", "metric"]
    assert any("\tlearned\t" in row for row in comparison) and any("\tclassical\t" in row for row in comparison)
    # every learned method trains through rule train: the chain's and the MRF branch's DRONE
    trained = [*(f"{stage}-{m.name}" for stage, m in learned_methods()), "mrf-drone"]
    for name in trained:
        card = json.loads((run / "models" / f"{name}.json").read_text())
        assert {"architecture", "training_data_hash", "seed", "validation_score", "epochs_run", "wall_seconds",
                "device"} <= set(card), name
        assert (run / "models" / f"{name}.pt").exists() and (run / "models" / f"{name}_curve.png").exists()
        assert "CUDA_VISIBLE_DEVICES=" in (run / "logs" / "train" / f"{name}.log").read_text()
    logs = list((run / "logs").rglob("*.log"))
    assert len(logs) > 10
    # the fastMRI-layout file has the documented datasets
    import h5py

    h5 = next(res.glob("kspace/sub-*/*.h5"))
    with h5py.File(h5) as f:
        assert f["kspace"].ndim == 4 and f["kspace"].dtype == np.complex64
        assert f["reconstruction_rss"].ndim == 3 and f["mask"].ndim == 1


def test_tuning_cards_floors_and_intervals(run):
    """Every tuned method has its card (chosen values from its grid, val scores, provenance); every
    method stage has a floor in metrics.json; the comparison carries gains over floors, and intervals
    only where the number of test subjects supports them."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    tuned = [(s.name, m) for s in METHOD_STAGES for m in cfg[s.name].get("tune", {})]
    assert len(tuned) == 3
    for stage_name, method in tuned:
        card = json.loads((run / "results" / "tuning" / f"{stage_name}-{method}.json").read_text())
        grid = cfg[stage_name]["tune"][method]
        assert card["grid"] == grid and len(card["results"]) == int(np.prod([len(v) for v in grid.values()]))
        assert all(card["chosen"][k] in grid[k] for k in grid)
        assert card["metric"] == stage(stage_name).primary_metric and np.isfinite(card["chosen_score"])
        prov = card["provenance"]
        assert prov["config_sha256"] and len(prov["config_sha256"]) == 64 and prov["packages"]["sigpy"]
        assert "tuned" in (run / "logs" / "tune" / f"{stage_name}-{method}.log").read_text()
    assert json.loads((run / "models" / "segment-unet.json").read_text())["provenance"]["packages"]["monai"]
    metrics = json.loads((run / "results" / "metrics.json").read_text())
    for s in METHOD_STAGES:
        floors = [m for m in metrics[s.name] if kind(s.name, m) == "floor"]
        assert floors, s.name
    comparison = pd.read_csv(run / "results" / "comparison.tsv", sep="\t")
    assert {"ci_low", "ci_high", "floor", "gain", "gain_ci_low", "gain_ci_high"} <= set(comparison.columns)
    ssim = comparison[(comparison.metric == "ssim_truth") & (comparison.method == "cs")].iloc[0]
    assert ssim.floor == "zerofilled" and np.isfinite(ssim.gain)
    # the test cohort's test split is below the bootstrap's minimum n: a value and its n, no interval, no "beats"
    assert ssim.n_test == len(Plan(cfg).test_subjects) < MIN_N
    assert np.isnan(ssim.ci_low) and np.isnan(ssim.ci_high) and pd.isna(ssim.beats_floor)
    diffs = pd.read_csv(run / "results" / "differences.tsv", sep="\t")
    assert ((diffs.method_a == "varnet") & (diffs.method_b == "cs") & (diffs.metric == "ssim_truth")).any()


def test_second_run_does_nothing(run):
    proc = snakemake(run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_one_stage_reruns_only_it_and_dependants(run, tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["denoise"]["params"]["antsnlm"]["patch_radius"] = 2  # a fixed (untuned) parameter of the feed
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(snakemake(run, "-n", "--quiet", "rules", configfile=changed))
    n_sub = cfg["cohort"]["n_subjects"]
    n_acq = len(cfg["acquire"]["accelerations"])
    plan = Plan(cfg)
    n_sweep = len(plan.stage_conditions("denoise")) - n_acq  # R4cs, R4varnet: test split only
    # antsnlm everywhere, the age subjects at their one (fully sampled) acquisition, the test
    # subjects at the sweep's conditions; dncnn's input did not change
    assert jobs.get("denoise") == n_sub * n_acq + cfg["cohort"]["n_age_train_subjects"] + len(plan.test_subjects) * n_sweep
    # the MRF branch compares its synthetic T1w with the acquired, denoised one: cut again to the
    # mapped slices (mrf_slab), segmented there (rule segment at MRFacquired), scored; the report's
    # first page, the test subjects' pages and the methods text (the feed's params, new cards)
    assert set(jobs) == {"tune", "denoise", "train", "register", "segment", "predict", "score", "aggregate", "budget",
                         "mrf_slab", "mrf_score", "overview", "subject_report_manifest", "subject_report",
                         "citation_manifest", "citation", "all"}
    assert jobs["mrf_slab"] == len(plan.test_subjects)
    mrf_segmented = [w for r, w in _planned(snakemake(run, "-n", configfile=changed))
                     if r == "segment" and w["acq"].startswith("MRF")]
    assert sorted(w["sub"] for w in mrf_segmented) == plan.test_subjects  # the acquired slab only
    assert {w["acq"] for w in mrf_segmented} == {"MRFacquired"}
    # the models that learn from denoised images (voxelmorph, unet, sfcn) or from their
    # segmentations (the brain-age mlp reads the segment feed's labels)
    assert jobs["train"] == 4
    # SyN and the linear age model are tuned on what the changed feed feeds them (val split)
    assert jobs["tune"] == 2
    # denoise, register, segment, predict at each of their conditions; not acquire or reconstruct
    assert jobs["score"] == sum(len(plan.stage_conditions(s)) for s in ("denoise", "register", "segment", "predict"))


def test_mrf_branch_maps_scores_and_segments(run):
    """The MRF branch ran every method on every test subject: maps on the mapped slices, scores in
    metrics.json beside the floor, DRONE's card, the synthetic T1w segmented, the figures."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    plan = Plan(cfg)
    res = run / "results"
    metrics = json.loads((res / "metrics.json").read_text())
    assert set(metrics["mrf"]) == set(cfg["mrf"]["methods"])
    for method in ("matching", "matchingsvd", "drone"):  # the floor reads no fingerprint
        assert metrics["mrf"][method]["t1_mape"] < metrics["mrf"]["constant"]["t1_mape"], method
        assert metrics["mrf"][method]["seconds_per_slice"] > 0 and metrics["mrf"][method]["n_test"] == len(plan.test_subjects)
    comparison = pd.read_csv(res / "comparison.tsv", sep="\t")
    drone_row = comparison[(comparison.stage == "mrf") & (comparison.method == "drone") & (comparison.metric == "t1_mape")]
    assert drone_row.iloc[0]["kind"] == "learned" and drone_row.iloc[0]["floor"] == "constant"
    card = json.loads((run / "models" / "mrf-drone.json").read_text())
    assert card["stage"] == "mrf" and card["dictionary"]["atoms"] > 100 and card["training_data_hash"]
    assert "domain" not in card  # trained on the dictionary, not on the cohort's images
    manifest = json.loads((run / "results" / "manifests" / "train" / "mrf-drone.json").read_text())
    assert manifest == {"dictionary": "models/mrf-dictionary.h5"}
    for sub in plan.test_subjects:
        t1 = nib.load(res / "mrf" / sub / f"{sub}_acq-MRF_desc-matchingsvd_T1map.nii.gz")
        assert t1.shape == nib.load(res / "groundtruth" / sub / f"{sub}_T1map.nii.gz").shape
        mapped = np.asarray(t1.dataobj) > 0
        assert mapped.any(axis=(0, 1)).sum() == cfg["mrf"]["acquire"]["n_slices"]  # the central slices only
    down = pd.read_csv(res / "mrf" / "downstream.tsv", sep="\t")
    assert set(down.source) == {"MRF drone", "acquired R1 (mapped slices only)", "acquired R1 (whole volume)"}
    assert down.dice_mean.between(0, 1).all()
    assert {p.name for p in (res / "figures" / "acq-MRF_stage-mrf").glob("*.png")} == {"montage.png", "downstream.png"}


def test_changing_the_mrf_snr_reruns_only_the_maps_and_what_reads_them(run, tmp_path):
    """mrf.acquire.snr_db: the fingerprints' noise. Not the dictionary or DRONE (they do not see
    it), not the acquired slab; every map, the segmentations of synthetic T1w images, the scores."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["mrf"]["acquire"]["snr_db"] = 25
    changed = tmp_path / "snr.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(snakemake(run, "-n", "--quiet", "rules", configfile=changed))
    n = len(Plan(cfg).test_subjects)
    # the segment feed on each segment_from method's synthetic T1w (rule segment at MRF<method>)
    assert jobs == {"mrf_map": n * len(cfg["mrf"]["methods"]), "segment": n * len(cfg["mrf"]["segment_from"]),
                    "mrf_score": 1, "aggregate": 1, "overview": 1, "all": 1}


def test_error_budget_sweep_and_limits(run):
    """The error budget, the sweep and the acceleration limits exist, cover what the plan says,
    and their numbers are the per-subject scores': the oracle's segmentation is scored on the
    noise-free image and beats the R4 chain."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    plan = Plan(cfg)
    res = run / "results"
    budget = pd.read_csv(res / "error_budget.tsv", sep="\t", keep_default_na=False, na_values=[""])
    assert list(budget.columns[:4]) == ["stage", "metric", "method", "condition"]
    assert set(budget.stage) == {"segment", "register", "predict"}
    seg = budget[(budget.stage == "segment") & (budget.method == cfg["segment"]["feed"])].set_index("condition")
    assert list(seg.index) == ["oracle", "R1", "R4", "R4cs", "R4varnet"]
    assert seg.loc["R1", "vs"] == "oracle" and seg.loc["R4cs", "vs"] == "R1"
    assert seg.loc["oracle", "value"] > seg.loc["R4", "value"]  # undersampled and noisy input costs Dice
    scores = pd.read_csv(res / "metrics" / "acq-oracle_stage-segment.tsv", sep="\t")
    oracle = scores[(scores.method == cfg["segment"]["feed"]) & (scores.metric == "dice_mean") & (scores.split == "test")]
    assert seg.loc["oracle", "value"] == pytest.approx(oracle.value.mean(), rel=1e-5)
    sweep = pd.read_csv(res / "sweep.tsv", sep="\t")
    assert list(sweep.columns[:6]) == ["acceleration", "recon_method", "stage", "method", "metric", "value"]
    got = set(zip(sweep.acceleration, sweep.recon_method))
    # every reconstruction method at R4; at R1 only the feed (the sweep's fully sampled reference)
    assert got == {(4.0, m) for m in cfg["reconstruct"]["methods"]} | {(1.0, cfg["reconstruct"]["feed"])}
    limits = pd.read_csv(res / "acceleration_limits.tsv", sep="\t")
    assert set(limits.recon_method) == set(cfg["reconstruct"]["methods"]) and set(limits.stage) == {"segment", "predict"}
    assert limits.max_acceleration.dropna().isin([1.0, 4.0]).all()  # a limit is an acceleration of the sweep
    assert (limits.max_acceleration_ci.fillna(0) <= limits.max_acceleration.fillna(0)).all()
    for png in ("error_budget.png", "sweep.png"):
        assert (res / "figures" / png).stat().st_size > 5_000
    # the oracle's segmentation ran on the test subjects' noise-free images, the sweep's on CS's output
    for sub in plan.test_subjects:
        assert (res / "segment" / sub / f"{sub}_acq-oracle_desc-atropos_dseg.nii.gz").exists()
        assert (res / "denoise" / sub / f"{sub}_acq-R4cs_desc-antsnlm_T1w.nii.gz").exists()
    assert not list(res.glob(f"segment/{plan.split_subjects('train')[0]}/*acq-oracle*"))  # test split only


def _planned(proc) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job of a dry run."""
    jobs = []
    # grouped jobs are printed indented under their group's header
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", proc.stdout + proc.stderr):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            w = re.search(r"^\s*wildcards: (.*)$", block, flags=re.M)
            jobs.append((m.group(1), dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {}))
    return jobs


def test_adding_an_acceleration_reruns_only_it_and_what_depends_on_it(run, tmp_path):
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["acquire"]["accelerations"].insert(1, 2)
    cfg["acquire"]["center_fractions"].insert(1, cfg["acquire"]["center_fractions"][0])
    changed = tmp_path / "r2.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    plan = Plan(cfg)
    jobs = _planned(snakemake(run, "-n", configfile=changed))
    rules = {r for r, _ in jobs}
    assert "simulate_subject" not in rules and "template" not in rules
    # every acquisition job is a new R2 one, of every image subject (not the age subjects: fully sampled only)
    acquired = [w for r, w in jobs if r == "acquire"]
    assert {w["acq"] for w in acquired} == {"R2"} and len(acquired) == cfg["cohort"]["n_subjects"]
    # retrained: exactly the learned methods that train on R2 (VarNet on every undersampled
    # acquisition, VoxelMorph and U-Net on all); not DnCNN or SFCN (fully sampled only)
    retrained = {(w["stage"], w["method"]) for r, w in jobs if r == "train"}
    assert retrained == {(s, m) for s, m in plan.learned_run() if "R2" in plan.train_acqs(stage(s))}
    assert "tune" not in rules  # every method is tuned at an acquisition that did not change
    # the chain of the old acquisitions through methods that did not change does not rerun
    changed_methods = {m for _, m in retrained}
    for r, w in jobs:
        if r in ("reconstruct", "denoise", "segment", "register") and w.get("acq") in ("R4", "R1", "R4cs", "oracle"):
            assert w["method"] in changed_methods, (r, w)




def test_killed_training_job_resumes_from_its_checkpoint(run, tmp_path):
    """Kill a training job after its first checkpoint; the rerun continues from it."""
    import os
    import signal

    work = tmp_path / "resume"
    shutil.copytree(run, work, symlinks=True)
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["denoise"]["params"]["dncnn"].update(epochs=40, patience=40)  # new settings: trains afresh
    longer = tmp_path / "longer.yaml"
    longer.write_text(yaml.safe_dump(cfg))
    target = "models/denoise-dncnn.pt"
    ckpt = work / "models" / "checkpoints" / "denoise-dncnn.ckpt"
    ckpt.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(longer), "--cores", "1", "--rerun-incomplete", target]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint was written"
    os.killpg(proc.pid, signal.SIGKILL)  # as a node failure would: no clean-up
    proc.wait()
    assert not (work / target).exists() or (work / target).stat().st_mtime < ckpt.stat().st_mtime
    subprocess.run(cmd + ["--unlock"], check=True, capture_output=True)  # the killed run left its lock
    subprocess.run(cmd, check=True, capture_output=True)
    log = (work / "logs" / "train" / "denoise-dncnn.log").read_text()
    assert "resuming denoise-dncnn.pt from checkpoint after epoch" in log
    card = json.loads((work / target.replace(".pt", ".json")).read_text())
    assert card["training"]["epochs"] == 40
