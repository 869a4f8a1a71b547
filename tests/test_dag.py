"""The DAG tier: what needs only Snakemake's plan of the workflow (a dry run or lint), no job.

Seconds each, so they run before and apart from the integration tests that run the DAG
(``pytest -m dag``); marked ``integration`` too, so the unit tier (``-m "not integration"``)
stays free of Snakemake. A 1,000-subject cohort plans without any shell command growing with the
cohort: the dry run prints every job's shell command (``-p``); Linux refuses a single argument
over 128 KiB, so a manifest passed on the command line would make every scoring job fail on a
large cohort (dry-run time and memory at 200 / 1,000 / 10,000 subjects:
``benchmarks/dag_scaling.py``, not asserted here).
"""
import json
import re

import pytest
import yaml

from bids_dataset import write_bids_dataset
from dag import ROOT, TEST_CONFIG, edited_config, planned_jobs, snakemake
from fastmri_files import write_fastmri_file
from mrichain.plan.config import load_config
from mrichain.plan.manifests import Plan
from mrichain.plan.stages import METHOD_STAGES, STAGE_NAMES, learned_methods

pytestmark = [pytest.mark.integration, pytest.mark.dag]
LIMIT = 100 * 1024


def test_thousand_subjects_no_command_over_100_kb(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["cohort"]["n_subjects"] = 1000
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path / "work", "-n", "-p", configfile=big)
    out = proc.stdout + proc.stderr
    jobs = planned_jobs(proc)
    plan = Plan(cfg)  # one scoring job per stage and condition it runs at, whatever the cohort size
    assert jobs["simulate_subject"] == 1000 + cfg["cohort"]["n_age_train_subjects"]
    assert jobs["score"] == sum(len(plan.stage_conditions(s)) for s in (*STAGE_NAMES, "motion"))
    commands = [c for c in re.findall(r"^Shell command: (.*)$", out, flags=re.M) if c != "None"]
    # the manifest writers are run: blocks, `all` has no command
    no_command = ("all", "manifest", "subject_report_manifest", "citation_manifest")
    assert len(commands) == sum(n for r, n in jobs.items() if r not in no_command)
    longest = max(commands, key=len)
    assert len(longest.encode()) < LIMIT, longest[:300]
    scoring = [c for c in commands if c.startswith("mrichain score ")]
    assert scoring and all("--manifest results/manifests/score/" in c for c in scoring)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["segment"].update(methods=["fancy"], feed="fancy"), "allowed values: kmeans, atropos, unet"),
        (lambda c: c["acquire"].update(accelerations=[-4, 1]), "acquire.accelerations[0]"),
        (lambda c: c["acquire"].update(snr=0), "acquire.snr"),
        (lambda c: c["cohort"].pop("n_subjects"), "config key 'cohort.n_subjects' is missing"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, edit, expected):
    _, bad = edited_config(tmp_path / "bad.yaml", edit)
    proc = snakemake(tmp_path / "work", configfile=bad, check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (tmp_path / "work" / "results").exists() and not (tmp_path / "work" / "logs").exists()


@pytest.mark.parametrize("inp, expected", [
    ({"kind": "bids", "bids_dir": "{tmp}/nothing"}, "{tmp}/nothing"),
    ({"kind": "bids", "bids_dir": "{bids}", "participant_label": ["07"]}, "07"),
    ({"kind": "fastmri", "dir": "{tmp}", "accelerations": [4], "center_fractions": [0.08]}, "holds no .h5 file"),
])
def test_bad_real_input_config_fails_before_any_job(tmp_path, inp, expected):
    """A dataset that is not there, a participant that does not exist, a directory without
    fastMRI files: Snakemake stops while building the DAG, with a message naming it."""
    bids = tmp_path / "bids"
    if "{bids}" in json.dumps(inp):
        write_bids_dataset(bids, load_config(TEST_CONFIG), n_subjects=1, voxel_mm=4.0, two_sessions="none")
    inp = json.loads(json.dumps(inp).replace("{tmp}", str(tmp_path)).replace("{bids}", str(bids)))
    _, cfg = edited_config(tmp_path / "config.yaml", lambda c: c.update(input=inp))
    proc = snakemake(tmp_path / "run", "-n", configfile=cfg, check=False)
    assert proc.returncode != 0
    assert expected.replace("{tmp}", str(tmp_path)) in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "results").exists()


def test_learned_feeds_plan(tmp_path):
    """Every stage may feed its learned method downstream: the DAG still builds (a job reading a
    model is not grouped, so no group waits on training that waits on it)."""
    def learned_feeds(cfg):
        for stage in METHOD_STAGES:
            if stage.has_feed:
                cfg[stage.name]["feed"] = next(m.name for m in stage.methods if m.learned)

    cfg, learned = edited_config(tmp_path / "learned.yaml", learned_feeds)
    jobs = planned_jobs(snakemake(tmp_path / "work", "-n", "--quiet", "rules", configfile=learned))
    n_sub, n_acq = cfg["cohort"]["n_subjects"], len(cfg["acquire"]["accelerations"])
    # every learned method of the chain, and the MRF branch's DRONE (stage mrf)
    assert jobs["denoise"] >= n_sub * n_acq and jobs["train"] == len(learned_methods()) + 1


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path / "work", "--lint", check=False)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and "Lints for" not in out, out


def test_lint_is_clean_with_real_inputs(tmp_path):
    """realdata.smk is only included for real inputs: lint it there (a directory of fastMRI files)."""
    d = tmp_path / "fastmri"
    d.mkdir()
    write_fastmri_file(d / "file_brain_AXT1_201_6002717.h5", n_slices=3, seed=0, acquisition="AXT1")
    _, cfg = edited_config(tmp_path / "config.yaml", lambda c: c.update(input={
        "kind": "fastmri", "dir": str(d), "accelerations": [4, 1], "center_fractions": [0.08, 0.08]}))
    proc = snakemake(tmp_path / "work", "--lint", configfile=cfg, check=False)
    assert proc.returncode == 0 and "good condition" in proc.stdout + proc.stderr, proc.stdout[-2000:]
