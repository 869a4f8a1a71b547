"""Real inputs through the DAG: a BIDS dataset and a directory of fastMRI files, each
run end to end on a copy of the test run (its models and tuning cards), written as BIDS
derivatives; bad inputs fail their own jobs, naming the file, and the others keep their outputs."""
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from bids_dataset import write_bids_dataset
from browser import chromium, severe_errors, wait_for  # noqa: F401 (chromium: the browser fixture)
from dag import TEST_CONFIG, edited_config, planned_jobs, snakemake
from fastmri_files import write_fastmri_file
from mrichain.plan.config import load_config
from mrichain.realdata.derivatives import check_names
from mrichain.realdata.fastmri import read_header, read_target

pytestmark = pytest.mark.integration

DERIV = Path("results/derivatives/mrichain")
HOSTILE = "202_6000393$(touch PWNED)"
"""Part of a fastMRI file name that runs a command if a shell ever reads the path unquoted."""
REAL_RULES = {"real_prepare", "real_image_stage", "real_restore", "real_predict_manifest", "real_predict",
              "fastmri_reconstruct", "fastmri_denoise", "fastmri_score", "real_summary_manifest", "real_summary", "all",
              "real_subject_report_manifest", "real_subject_report", "real_subject_report_bidsignore", "real_citation",
              # the methods text describes the real inputs too: rewritten when they are added
              "citation_manifest", "citation"}


def _config(tmp_path, inp: dict) -> Path:
    """config/test.yaml with ``input: inp``, written in ``tmp_path``."""
    return edited_config(tmp_path / "config.yaml", lambda c: c.update(input=inp))[1]


def _copy_run(local_run, tmp_path) -> Path:
    work = tmp_path / "run"
    shutil.copytree(local_run, work, symlinks=True)
    return work


@pytest.fixture(scope="module")
def fastmri_run(local_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fastmri_run")
    d = tmp / "fast mri"  # a space in the path, and a file name that runs `touch PWNED` if ever unquoted
    d.mkdir()
    # two 4-coil volumes with 2x readout oversampling (fastMRI's layout), 40 x 32 recon size
    for name, seed in (("file_brain_AXT1_201_6002717.h5", 0), (f"file_brain_AXT1PRE_{HOSTILE}.h5", 1)):
        write_fastmri_file(d / name, n_slices=3, seed=seed, acquisition=name.split("_")[2])
    cfg = _config(tmp, {"kind": "fastmri", "dir": str(d), "accelerations": [4, 1], "center_fractions": [0.08, 0.08]})
    work = _copy_run(local_run, tmp)
    planned = planned_jobs(snakemake(work, "-n", "--quiet", "rules", configfile=cfg))
    snakemake(work, configfile=cfg)
    return {"work": work, "dir": d, "config": cfg, "planned": planned}


def test_fastmri_directory_runs_only_its_jobs_end_to_end(fastmri_run):
    """The cohort's jobs are up to date in the copy: adding real inputs plans only theirs
    (2 files x 2 accelerations x 3 reconstruction + 2 denoising methods, 4 scorings, 1 summary)."""
    planned = fastmri_run["planned"]
    assert set(planned) <= REAL_RULES, planned
    assert planned["fastmri_reconstruct"] == 2 * 2 * 3 and planned["fastmri_denoise"] == 2 * 2 * 2
    assert planned["fastmri_score"] == 4
    again = snakemake(fastmri_run["work"], "-n", configfile=fastmri_run["config"])
    assert "Nothing to be done" in again.stdout + again.stderr


def test_fastmri_reconstructions_have_the_recon_size_and_header_voxels(fastmri_run):
    work, d = fastmri_run["work"], fastmri_run["dir"]
    f = d / "file_brain_AXT1_201_6002717.h5"
    header = read_header(f)
    target = read_target(f)
    sub = "sub-filebrainAXT12016002717"
    for acq in ("R4", "R1"):
        for method in ("zerofilled", "cs", "varnet"):
            img = nib.load(work / DERIV / sub / "anat" / f"{sub}_acq-{acq}_rec-{method}_T1w.nii.gz")
            assert img.shape == (target.shape[1], target.shape[2], target.shape[0])  # [h, w, S]
            assert np.allclose(img.header.get_zooms()[:3], header.voxel_size_mm, atol=1e-4)
            assert np.isfinite(img.get_fdata()).all()


def test_fastmri_scores_as_fastmri_evaluates(fastmri_run):
    """ZF, CS and VarNet scored against the cropped reconstruction_rss at each acceleration;
    fully sampled zero-filling reproduces the RSS target (SSIM ~1), undersampling costs."""
    work = fastmri_run["work"]
    metrics = json.loads((work / "results/realdata/metrics.json").read_text())
    rec = metrics["reconstruct"]
    assert {f"{m}@{a}" for m in ("zerofilled", "cs", "varnet") for a in ("R4", "R1")} == set(rec)
    for key, v in rec.items():
        assert set(v) == {"nmse", "psnr", "ssim", "n"} and v["n"] == 2, key
    # zero-filling a fully sampled file gives its RSS target: SSIM 1, NMSE 0, PSNR infinite (JSON null)
    assert rec["zerofilled@R1"]["ssim"] > 0.99 and rec["zerofilled@R1"]["nmse"] < 1e-3
    assert rec["zerofilled@R1"]["psnr"] is None and rec["cs@R4"]["psnr"] > 0
    assert rec["zerofilled@R4"]["ssim"] < rec["zerofilled@R1"]["ssim"]
    assert metrics["denoise"] == {"antsnlm": "no reference", "dncnn": "no reference"}
    table = pd.read_csv(work / "results/realdata/summary.tsv", sep="\t")
    assert len(table) == 2 * 2 * 3 * 3  # files x accelerations x methods x metrics


def test_fastmri_derivatives_are_valid_bids(fastmri_run):
    root = fastmri_run["work"] / DERIV
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "mrichain"
    assert check_names(root) == []


def test_learned_models_warn_outside_their_training(fastmri_run):
    """The test cohort's VarNet learned 4 coils at 4 mm: the 4-coil files pass the coil check,
    their sub-millimetre voxels are named in the job's log as outside its training."""
    logs = list((fastmri_run["work"] / "logs/fastmri_reconstruct").rglob("*_varnet_T1w.log"))
    assert logs
    text = logs[0].read_text()
    assert "outside its training" in text and "trained at 4 mm" in text and "coils" not in text.split("WARNING")[-1]


def bids_app(bids_dir, out, level, *args, work=None, check=True):
    """``mrichain BIDS_DIR OUTPUT_DIR LEVEL`` (the BIDS App, mrichain.bids_app) on the test config."""
    cmd = [sys.executable, "-m", "mrichain.cli", str(bids_dir), str(out), level, "--configfile", str(TEST_CONFIG),
           "--cores", "2", *args] + (["--work-dir", str(work)] if work is not None else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def bids_run(local_run, tmp_path_factory):
    """The BIDS App on a 2-subject dataset, in a copy of the test run: participant level for
    sub-01 (planned first with --dry-run), then group level (sub-02, the tables, the report)."""
    tmp = tmp_path_factory.mktemp("bids_run")
    bids = tmp / "my study"
    records = write_bids_dataset(bids, load_config(TEST_CONFIG), n_subjects=2, voxel_mm=2.0)
    # sub-02's T1w is a symlink (as in a DataLad dataset) into a directory whose name holds `;`
    t1w = Path(records[-1]["T1w"])
    target = tmp / "annex; touch PWNED #" / t1w.name
    target.parent.mkdir()
    t1w.rename(target)
    t1w.symlink_to(target)
    work = _copy_run(local_run, tmp)
    out = tmp / "derivatives out"
    planned = planned_jobs(bids_app(bids, out, "participant", "--participant-label", "01", "--dry-run", work=work))
    bids_app(bids, out, "participant", "--participant-label", "sub-01", work=work)
    after_participant = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    bids_app(bids, out, "group", work=work)
    return {"work": work, "out": out, "records": records, "config": work / "mrichain_config.yaml",
            "planned": planned, "after_participant": after_participant}


def test_bids_app_participant_level_runs_only_that_participant(bids_run):
    """Participant 01 (two sessions): only its real-input jobs are planned (the cohort is up to
    date in the copy) and only its derivatives exist before the group level."""
    planned = bids_run["planned"]
    assert set(planned) <= REAL_RULES | {"participant"}, planned
    assert planned["real_prepare"] == 2 and "real_summary" not in planned and planned["real_subject_report"] == 1
    assert bids_run["after_participant"] and all(p.startswith("sub-01/") for p in bids_run["after_participant"])


def test_bids_app_group_level_writes_the_tables_and_the_report(bids_run):
    out = bids_run["out"]
    ages = pd.read_csv(out / "group" / "realdata_brain_age.tsv", sep="\t")
    assert list(ages["participant_id"]) == ["sub-01", "sub-01", "sub-02"]
    assert (out / "group" / "cohort_comparison.tsv").is_file()
    html = (out / "report.html").read_text(errors="replace")
    assert "Real inputs" in html and "reconstruction_rss" in html  # the category and its caption (realdata.rst)
    assert "The answer first" in html  # the report opens on the headline table (rule overview)
    assert ".bidsignore" in {p.name for p in out.iterdir()} and check_names(out) == []


def test_bids_app_subject_page_renders_every_reportlet_in_chromium(bids_run, browser):
    """sub-01.html (two sessions) opened from the derivatives folder: every figure it links exists
    and loads, no console error, brain age and "no reference" shown; the methods text beside it
    names every method that ran."""
    from selenium.webdriver.common.by import By

    page = bids_run["out"] / "sub-01.html"
    browser.get(page.as_uri())
    wait_for(browser, lambda: browser.execute_script("return document.readyState") == "complete", what="sub-01.html")
    imgs = browser.find_elements(By.TAG_NAME, "img")
    figures = sorted((bids_run["out"] / "sub-01" / "figures").glob("*.png"))
    assert figures and len(imgs) == len(figures)
    widths = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in imgs]
    assert all(w and w > 0 for w in widths), widths
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "ses-01" in text and "ses-02" in text and "no reference" in text and "brain age" in text
    assert not severe_errors(browser)
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    methods_text = (bids_run["out"] / "logs" / "CITATION.md").read_text()
    for stage_name in ("reconstruct", "denoise", "register", "segment", "predict"):
        for method in cfg[stage_name]["methods"]:
            assert f"`{method}`" in methods_text, method


def test_bids_app_refuses_bad_arguments_before_any_job(tmp_path):
    """Exit 2 with one line naming the problem, and nothing written: an unknown participant, an
    output folder inside the raw dataset, a bad config override."""
    bids = tmp_path / "bids"
    write_bids_dataset(bids, load_config(TEST_CONFIG), n_subjects=1, voxel_mm=4.0, two_sessions="none")
    cases = [(("participant", "--participant-label", "07"), tmp_path / "out", "sub-07"),
             (("participant",), bids / "mrichain", "is inside input.bids_dir"),
             (("group", "--config", "segment.methods=[nosuchmethod]"), tmp_path / "out", "segment.methods")]
    for args, out, expected in cases:
        proc = bids_app(bids, out, *args, check=False)
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists()
    assert sorted(p.name for p in bids.iterdir()) == ["dataset_description.json", "derivatives", "participants.tsv",
                                                      "sub-01"]


def test_bids_dataset_end_to_end_on_the_inputs_grid(bids_run):
    """Every T1w (sub-01 has two sessions) gets a brain mask, each denoising and segmentation
    method's output and a brain age; images come back on the input's grid and voxel order."""
    deriv = bids_run["out"]
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    for rec in bids_run["records"]:
        src = nib.load(rec["T1w"])
        key = Path(rec["T1w"]).name.replace("_T1w.nii.gz", "")
        folder = deriv / rec["participant_id"] / (rec["session"] or "") / "anat"
        outs = [folder / f"{key}_desc-brain_mask.nii.gz"]
        outs += [folder / f"{key}_desc-{m}_T1w.nii.gz" for m in cfg["denoise"]["methods"]]
        outs += [folder / f"{key}_desc-{m}_dseg.nii.gz" for m in cfg["segment"]["methods"]]
        for out in outs:
            img = nib.load(out)
            assert img.shape == src.shape and np.allclose(img.affine, src.affine, atol=1e-4), out
        labels = np.asarray(nib.load(folder / f"{key}_desc-{cfg['segment']['feed']}_dseg.nii.gz").dataobj)
        truth = np.asarray(nib.load(rec["dseg"]).dataobj)
        # the chain's labels on the lab's grid agree with the truth far above chance (not a score:
        # a check that the way back lands on the right voxels)
        brain = truth > 0
        assert np.mean(labels[brain] == truth[brain]) > 0.5
    assert check_names(deriv) == []


def test_hostile_file_names_run_nothing(fastmri_run, bids_run):
    """A `$(...)` in a fastMRI file name, a space in the dataset paths, a `;` in a symlinked T1w's
    target: every job ran on them (their derivatives are there) and none executed anything."""
    assert not [p for run in (fastmri_run, bids_run) for p in run["work"].parent.rglob("PWNED")]
    sub = "sub-filebrainAXT1PRE2026000393touchPWNED"
    assert (fastmri_run["work"] / DERIV / sub / "anat" / f"{sub}_acq-R4_rec-zerofilled_desc-dncnn_T1w.nii.gz").exists()
    assert list((bids_run["out"] / "sub-02" / "anat").glob("sub-02_desc-*_dseg.nii.gz"))


def test_bids_brain_age_scored_against_participants_ages(bids_run):
    work = bids_run["work"]
    ages = pd.read_csv(work / "results/realdata/brain_age.tsv", sep="\t")
    assert list(ages["participant_id"]) == ["sub-01", "sub-01", "sub-02"]
    assert list(ages["session_id"].fillna("n/a")) == ["ses-01", "ses-02", "n/a"]
    truth = {r["participant_id"]: r["age"] for r in bids_run["records"]}
    assert np.allclose(ages["age"], [truth[p] for p in ages["participant_id"]], atol=0.01)
    metrics = json.loads((work / "results/realdata/metrics.json").read_text())
    for method in ("mean", "linear", "sfcn"):
        if f"predicted_age_{method}" in ages:
            err = (ages[f"predicted_age_{method}"] - ages["age"]).abs().mean()
            assert metrics["predict"][method]["mae_years"] == pytest.approx(err, abs=1e-3)
    assert metrics["segment"] and set(metrics["segment"].values()) == {"no reference"}
    # the same ages in the BIDS tables: one scans.tsv per subject (session) folder
    scans = pd.read_csv(bids_run["out"] / "sub-01/ses-02/sub-01_ses-02_scans.tsv", sep="\t")
    row = ages[(ages.participant_id == "sub-01") & (ages.session_id == "ses-02")].iloc[0]
    assert scans["brainage_linear"].iloc[0] == pytest.approx(row["predicted_age_linear"], abs=1e-3)
    # and the input's motion score; three scans are too few to flag any (n/a)
    assert 0 < scans["motion_efc"].iloc[0] < 1 and scans["motion_flagged"].isna().all()


def test_bad_inputs_fail_their_own_jobs_and_the_others_survive(local_run, tmp_path):
    """A corrupt T1w fails its preparation naming the file; the other subject's derivatives are
    written (--keep-going). A fastMRI file without k-space fails its reconstructions the same way."""
    records = write_bids_dataset(tmp_path / "bids", load_config(TEST_CONFIG), n_subjects=2, voxel_mm=2.0,
                                 two_sessions="none")
    bad = Path(records[0]["T1w"])
    bad.write_bytes(gzip.compress(b"not a nifti"))
    cfg = _config(tmp_path, {"kind": "bids", "bids_dir": str(tmp_path / "bids")})
    work = _copy_run(local_run, tmp_path)
    proc = snakemake(work, "--keep-going", configfile=cfg, check=False)
    assert proc.returncode != 0
    log = (work / "logs/real_prepare/sub-01.log").read_text()
    assert str(bad) in log and "Traceback" not in log
    good = work / DERIV / "sub-02" / "anat"
    assert (good / "sub-02_desc-brain_mask.nii.gz").exists() and list(good.glob("*_dseg.nii.gz"))

    d = tmp_path / "fastmri"
    d.mkdir()
    write_fastmri_file(d / "good.h5", n_slices=2, acquisition="AXT1")
    write_fastmri_file(d / "broken.h5", n_slices=2, seed=3, acquisition="AXT1")
    write_fastmri_file(d / "t2.h5", n_slices=2, seed=4, acquisition="AXT2")
    with h5py.File(d / "broken.h5", "a") as f:
        del f["kspace"]
    cfg = _config(tmp_path, {"kind": "fastmri", "dir": str(d), "accelerations": [4], "center_fractions": [0.08]})
    proc = snakemake(work, "--keep-going", configfile=cfg, check=False)
    assert proc.returncode != 0
    logs = list((work / "logs/fastmri_reconstruct").rglob("sub-broken_*zerofilled*.log"))
    assert logs and "broken.h5" in logs[0].read_text() and "Traceback" not in logs[0].read_text()
    assert (work / DERIV / "sub-good/anat/sub-good_acq-R4_rec-cs_T1w.nii.gz").exists()
    # a T2w file: the T1w-trained VarNet refuses it by name, zero-filling and CS run
    log = next((work / "logs/fastmri_reconstruct").rglob("sub-t2_acq-R4_varnet_T2w.log")).read_text()
    assert "t2.h5: the input is T2w, the model was trained on T1w" in log and "varnet.pt" in log
    assert (work / DERIV / "sub-t2/anat/sub-t2_acq-R4_rec-zerofilled_T2w.nii.gz").exists()


def test_models_dir_trains_nothing(local_run, tmp_path):
    """input.models_dir naming the test run's models: the plan of a fresh run trains nothing and
    every learned method's job reads its weights from there."""
    cfg = _config(tmp_path, {"kind": "simulated", "models_dir": str(local_run / "models")})
    proc = snakemake(tmp_path / "run", "-n", "-p", configfile=cfg)
    jobs = planned_jobs(proc)
    assert "train" not in jobs and jobs["segment"] > 0
    assert f"--model {local_run / 'models'}/segment-unet.pt" in proc.stdout
