"""Lab to lab through DVC: lab A runs and pushes, lab B clones, pulls and reuses without retraining.

Everything is real: git repositories in temporary directories, `dvc repro` calling Snakemake on
lab A's study config (a subset of config/test.yaml's jobs at R4 alone, tests/dag.py smaller_config,
with the MR fingerprinting branch that dvc.yaml's `models` stage names), a DVC remote that is a local
directory. What is tested is the sharing, not the chain's content (test_workflow's).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dag import ROOT, planned_jobs, rules_run, smaller_config

pytestmark = [pytest.mark.integration, pytest.mark.dvc]
BIN = Path(sys.executable).parent  # dvc and snakemake of this environment


def sh(*cmd, cwd, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               GIT_AUTHOR_NAME="lab", GIT_AUTHOR_EMAIL="lab@example.org",
               GIT_COMMITTER_NAME="lab", GIT_COMMITTER_EMAIL="lab@example.org")
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def tree_state(path: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file outside .git: what 'left as it was' means."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file() and ".git" not in p.relative_to(path).parts}


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    base = tmp_path_factory.mktemp("labs")
    # The published project: this checkout's files (tracked, plus new ones not ignored), one commit.
    origin = base / "origin"
    files = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (origin / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, origin / rel)
    sh("git", "init", "-q", "-b", "main", cwd=origin)
    sh("git", "add", "-A", cwd=origin)
    sh("git", "commit", "-q", "-m", "mrichain", cwd=origin)

    # Lab A: clone, its study config, a DVC remote on a shared disk, run, push, commit the lock.
    remote = base / "dvc-remote"
    lab_a = base / "lab-a"
    sh("git", "clone", "-q", str(origin), str(lab_a), cwd=base)
    smaller_config(lab_a / "config" / "config.yaml", mrf=True, first_acquisition_only=True)
    sh("dvc", "remote", "add", "-d", "labshare", str(remote), cwd=lab_a)
    t0 = time.perf_counter()
    repro = sh("dvc", "repro", cwd=lab_a)
    repro_s = time.perf_counter() - t0
    sh("dvc", "push", cwd=lab_a)
    sh("git", "add", "-A", cwd=lab_a)
    sh("git", "commit", "-q", "-m", "lab A: test cohort, models, evaluation", cwd=lab_a)

    # Lab B: a fresh clone of lab A's repository, pull, adopt the pulled files for Snakemake.
    lab_b = base / "lab-b"
    sh("git", "clone", "-q", str(lab_a), str(lab_b), cwd=base)
    t0 = time.perf_counter()
    sh("dvc", "pull", cwd=lab_b)
    pull_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sh("snakemake", "--touch", "--forceall", "--cores", "1", "--quiet", cwd=lab_b)
    touch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dry = sh("snakemake", "-n", "--quiet", "rules", "--cores", "1", cwd=lab_b)
    dry_s = time.perf_counter() - t0
    print(f"\nlab A dvc repro {repro_s:.0f} s; lab B dvc pull {pull_s:.1f} s, snakemake --touch {touch_s:.1f} s, "
          f"snakemake -n {dry_s:.1f} s")
    return {"base": base, "a": lab_a, "b": lab_b, "remote": remote, "repro": repro.stdout + repro.stderr,
            "dry": dry.stdout + dry.stderr}


def test_lab_a_ran_every_stage_through_dvc(labs):
    lock = yaml.safe_load((labs["a"] / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"cohort", "models", "evaluate"}
    assert {"train", "simulate_subject", "aggregate"} <= set(rules_run(labs["repro"]))
    assert any(labs["remote"].rglob("*")), "dvc push left the remote empty"


def test_lab_b_reuses_without_simulating_or_training(labs):
    plan = planned_jobs(subprocess.CompletedProcess([], 0, labs["dry"], ""))
    assert "Nothing to be done" in labs["dry"], plan
    assert not ({"simulate_subject", "template", "acquire", "train"} & set(plan))
    status = sh("dvc", "status", cwd=labs["b"]).stdout
    assert "up to date" in status.lower(), status
    a = json.loads((labs["a"] / "results" / "metrics.json").read_text())
    b = json.loads((labs["b"] / "results" / "metrics.json").read_text())
    assert a == b
    for model in (labs["a"] / "models").glob("*.pt"):
        assert (labs["b"] / "models" / model.name).read_bytes() == model.read_bytes()
    shown = sh("dvc", "metrics", "show", cwd=labs["b"]).stdout
    assert "results/metrics.json" in shown
    plots = sh("dvc", "plots", "show", "--json", cwd=labs["b"]).stdout
    assert "train_loss" in plots


def test_lab_b_changes_one_stage_and_only_it_reruns(labs):
    lab_b = labs["b"]
    cfg_path = lab_b / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["register"]["params"]["antssyn"]["reg_iterations"] = [10, 5, 0]
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = planned_jobs(sh("snakemake", "-n", "--quiet", "rules", "--cores", "1", cwd=lab_b))
    # SyN is retuned with its new fixed parameter (test.yaml tunes its gradient step), then reruns,
    # and what reads it: the scores and tables, the report's first page, the test subjects' pages
    # (their registration figures; each page's manifest, a params change) and the methods text (the params
    # it states, the tuning card's choice); Snakemake 9.15.0 and 9.27.1 plan the same 17 jobs here
    rerun = {"tune", "register", "score", "aggregate", "budget", "overview", "subject_report",
             "subject_report_manifest", "citation_manifest", "citation", "all"}
    assert set(plan) == rerun, plan
    assert plan["tune"] == 1
    n_test = sum(1 for _ in (lab_b / "results" / "register").glob("sub-*"))
    # antssyn only, every test subject at the one acquisition (R4; this config has no error-budget conditions)
    assert n_test == 2 and plan["register"] == n_test
    repro = sh("dvc", "repro", cwd=lab_b)
    ran = set(rules_run(repro.stdout + repro.stderr))
    assert ran <= rerun | {"models", "cohort"} and "register" in ran, ran
    assert "up to date" in sh("dvc", "status", cwd=lab_b).stdout.lower()
    diff = sh("dvc", "metrics", "diff", cwd=lab_b).stdout
    assert "register" in diff and "reconstruct" not in diff, diff


def test_missing_remote_gives_dvc_error_and_changes_nothing(labs):
    lab_c = labs["base"] / "lab-c"
    sh("git", "clone", "-q", str(labs["a"]), str(lab_c), cwd=labs["base"])
    sh("dvc", "remote", "modify", "--local", "labshare", "url", str(labs["base"] / "no-such-remote"), cwd=lab_c)
    before = tree_state(lab_c)
    proc = sh("dvc", "pull", cwd=lab_c, check=False)
    assert proc.returncode != 0
    message = proc.stderr + proc.stdout
    assert "ERROR" in message and "missing" in message.lower(), message  # DVC's own error
    after = tree_state(lab_c)
    # no file written or changed (DVC keeps its own bookkeeping under .dvc/, and may leave an
    # empty results/ directory behind: no file in it)
    assert {k: v for k, v in after.items() if not k.startswith(".dvc/")} == \
        {k: v for k, v in before.items() if not k.startswith(".dvc/")}
    assert not any(p.is_file() for d in ("results", "models") for p in (lab_c / d).rglob("*"))
