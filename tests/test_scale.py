"""A 1,000-subject cohort plans without any shell command growing with the cohort (integration).

The dry run prints every job's shell command (``-p``); Linux refuses a single argument over
128 KiB, so a manifest passed on the command line would make every scoring job fail on a large
cohort. Dry-run time and memory at 200 / 1,000 / 10,000 subjects are measured by
``benchmarks/dag_scaling.py``, not asserted here.
"""
import re

import pytest
import yaml

from dag import ROOT, planned_jobs, snakemake
from mrichain.plan.manifests import Plan
from mrichain.plan.stages import STAGE_NAMES

pytestmark = pytest.mark.integration
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
    assert jobs["score"] == sum(len(plan.stage_conditions(s)) for s in STAGE_NAMES)
    commands = [c for c in re.findall(r"^Shell command: (.*)$", out, flags=re.M) if c != "None"]
    # the manifest writers are run: blocks, `all` has no command
    no_command = ("all", "manifest", "subject_report_manifest", "citation_manifest")
    assert len(commands) == sum(n for r, n in jobs.items() if r not in no_command)
    longest = max(commands, key=len)
    assert len(longest.encode()) < LIMIT, longest[:300]
    scoring = [c for c in commands if c.startswith("mrichain score ")]
    assert scoring and all("--manifest results/manifests/score/" in c for c in scoring)
