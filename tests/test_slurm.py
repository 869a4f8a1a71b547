"""A subset of config/test.yaml's jobs through `snakemake --profile slurm` on a real single-node SLURM.

The profile is used as the README tells a lab to: `mrichain profile install slurm` (here into a
temporary XDG_CONFIG_HOME), then `snakemake --profile slurm`, the short form. The cluster
(slurmctld, slurmd, munge from Debian's packages) is started and stopped here, with a CPU and a
GPU partition named as in the profile and one GPU generic resource (tests/slurm_cluster.py).
Its GPU is not real, so the config run here sets `device: cpu` for its learned method.
Needs root and the packages; skipped otherwise, unless MRICHAIN_REQUIRE_SLURM=1 (set by .ci/run)
makes a missing SLURM a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from dag import ROOT, differing_outputs, planned_jobs, rules_run, smaller_config, snakemake
from slurm_cluster import LocalSlurm, missing_requirements

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
PROFILE = ROOT / "profiles" / "slurm"
GRES_PROFILE = ROOT / "profiles" / "slurm-gres"  # the same, with the GPU asked for as --gres=gpu:1
# Status polling every few seconds instead of the plugin's defaults (40 s before the first check,
# then 10 s): the test's jobs take seconds. Everything else comes from the profile as a lab uses it.
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3"]
# "Job <snakemake job id, or a uuid for a group> has been submitted with SLURM jobid <id> (log: <path>)."
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)")


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """The environment of a lab that ran `mrichain profile install slurm`: an XDG_CONFIG_HOME
    (a temporary one here, ~/.config on a login node) holding snakemake/slurm."""
    xdg = tmp_path_factory.mktemp("xdg-config")
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg)}
    proc = subprocess.run(["mrichain", "profile", "install", "slurm"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (xdg / "snakemake" / "slurm" / "config.yaml").read_bytes() == (PROFILE / "config.yaml").read_bytes()
    return env


@pytest.fixture(scope="module")
def slurm_config(tmp_path_factory):
    """A subset of config/test.yaml's jobs (tests/dag.py smaller_config: the feeds, a floor and a
    tuned classical method per stage, one learned method; no error budget, no MRF branch) with
    `device: cpu` for the learned method. What runs through SLURM here is the mechanism (every
    job through sbatch, grouping, the GPU partition, failures and resumption); that its outputs
    equal a local run's covers the content of the rest, which test_workflow runs locally. The test
    cluster's GPU is declared but not real (gres File=/dev/null): SLURM sets CUDA_VISIBLE_DEVICES=0
    in a training job, and a job given a GPU that its torch cannot use fails
    (mrichain.train.engine.select_device) unless the config chooses the CPU deliberately, as here."""
    return smaller_config(tmp_path_factory.mktemp("slurm-config") / "test-slurm.yaml", learned_device="cpu")


def slurm_snakemake(workdir, env, configfile, *args, check=True):
    """`snakemake --profile slurm` (found by name through env's XDG_CONFIG_HOME) on ``workdir``."""
    return snakemake(workdir, "--profile", "slurm", "--slurm-keep-successful-logs", *FAST_POLL, *args,
                     configfile=configfile, check=check, cores=None, env=env)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing_requirements()
    if reason:
        if os.environ.get("MRICHAIN_REQUIRE_SLURM") == "1":
            pytest.fail(f"MRICHAIN_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    cpu = profile["default-resources"]["slurm_partition"]
    gpu = profile["set-resources"]["train"]["slurm_partition"]
    with LocalSlurm(tmp_path_factory.mktemp("slurm"), cpu_partition=cpu, gpu_partition=gpu) as c:
        yield c


@pytest.fixture(scope="module")
def slurm_run(cluster, slurm_env, slurm_config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-dag")
    planned = planned_jobs(snakemake(workdir, "-n", "--quiet", "rules", configfile=slurm_config))
    t0 = time.perf_counter()
    proc = slurm_snakemake(workdir, slurm_env, slurm_config, check=False)
    elapsed = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"SLURM run failed ({proc.returncode}):\n{log[-8000:]}\n{cluster.logs()}")
    # the installed profile, found by its name (not profiles/slurm by path)
    assert re.search(r"^Using profiles? slurm\b", log, flags=re.M), log[:2000]
    submissions = SUBMITTED.findall(log)
    print(f"\nsmaller test config on SLURM: {elapsed:.0f} s, {len(submissions)} submissions for "
          f"{sum(n for r, n in planned.items() if r != 'all')} jobs")
    return {"workdir": workdir, "log": log, "planned": planned, "submissions": submissions,
            "env": slurm_env, "config": slurm_config}


def local_rules() -> set[str]:
    """Rules Snakemake runs on the submit host, not through sbatch: `all` (it only collects files)
    and the rules the workflow marks `localrule: True` or lists in a `localrules:` directive."""
    local = {"all"}
    for smk in (ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))):
        text = smk.read_text()
        for name, body in re.findall(r"^rule (\w+):[^\n]*\n((?:[ \t]+.*\n|[ \t]*\n)*)", text, flags=re.M):
            if re.search(r"^\s+localrule:\s*True\b", body, flags=re.M):
                local.add(name)
        for names in re.findall(r"^localrules:\s*(.+)$", text, flags=re.M):
            local |= {n.strip() for n in names.split(",") if n.strip()}
    return local


def rules_run_in_slurm_jobs(workdir: Path) -> dict[str, int]:
    """{rule: jobs} executed inside SLURM allocations, read from every job's SLURM log."""
    counts: dict[str, int] = {}
    for log in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"):
        for rule, n in rules_run(log.read_text(errors="replace"), local_only=True).items():
            counts[rule] = counts.get(rule, 0) + n
    return counts


def test_every_job_went_through_sbatch(slurm_run, cluster):
    local = local_rules()  # `all` and the manifest writers: they run on the submit host
    planned = {r: n for r, n in slurm_run["planned"].items() if r not in local}
    assert rules_run_in_slurm_jobs(slurm_run["workdir"]) == planned
    ran_locally = rules_run(slurm_run["log"], local_only=True)
    assert set(ran_locally) <= local  # nothing else ran locally
    assert {r: n for r, n in ran_locally.items() if r != "all"} == \
        {r: n for r, n in slurm_run["planned"].items() if r in local and r != "all"}
    job_ids = {int(j) for _, j, _ in slurm_run["submissions"]}
    assert job_ids <= set(cluster.submitted_job_ids())
    # grouping: the per-subject chains and the scoring jobs go as a few submissions, not one per job
    assert len(job_ids) < sum(planned.values()) / 2


def test_training_got_a_gpu_from_slurm(slurm_run, cluster):
    train = [(job_id, Path(log)) for _, job_id, log in slurm_run["submissions"] if "rule_train" in log]
    assert len(train) == slurm_run["planned"]["train"]
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    for job_id, _ in train:
        job = cluster.job(job_id)
        assert job["JobState"] == "COMPLETED"
        assert job["Partition"] == profile["set-resources"]["train"]["slurm_partition"]
        assert "gpu:1" in job.get("TresPerJob", "") + job.get("TresPerNode", ""), job
    for log in (slurm_run["workdir"] / "logs" / "train").glob("*.log"):
        # written by the rule's first command: the variable SLURM set for the allocated GPU
        assert log.read_text().splitlines()[0] == "CUDA_VISIBLE_DEVICES=0", log
    other = [j for _, j, log in slurm_run["submissions"] if "rule_train" not in log]
    for job_id in other[:3]:
        assert "gpu" not in cluster.job(job_id).get("TresPerJob", ""), "CPU rules must not ask for a GPU"


def test_outputs_match_a_local_run(slurm_run, local_run):
    # the local run (config/test.yaml) runs more methods and conditions: compare what both ran
    assert differing_outputs(local_run, slurm_run["workdir"], b_runs_less=True) == []


def test_failed_job_names_rule_and_log_and_rerun_resumes(slurm_run, tmp_path):
    """A job that fails on the cluster is reported with its rule and logs; the rerun does only what is left."""
    cfg, env = slurm_run["config"], slurm_run["env"]
    work = tmp_path / "work"
    shutil.copytree(slurm_run["workdir"], work, symlinks=True)
    shutil.rmtree(work / ".snakemake" / "slurm_logs")
    # A run that has not yet registered one test subject (its SyN outputs and everything after
    # them removed), whose denoised input is corrupt (mtime kept, so nothing else looks stale).
    reg = sorted((work / "results" / "register").glob("sub-*/*_acq-R4_*_desc-antssyn_T1w.nii.gz"))[0]
    sub = reg.parent.name
    for f in reg.parent.glob(f"{sub}_acq-R4_*_desc-antssyn_*"):
        f.unlink()
    shutil.rmtree(work / "results" / "figures" / "acq-R4_stage-register")
    for f in ("metrics/acq-R4_stage-register.tsv", "metrics.json", "metrics_by_acq.json", "metrics/summary.tsv",
              "comparison.tsv"):
        (work / "results" / f).unlink()
    moving = work / "results" / "denoise" / sub / f"{sub}_acq-R4_desc-antsnlm_T1w.nii.gz"
    good, stat = moving.read_bytes(), moving.stat()
    moving.write_bytes(b"\x1f\x8b not a gzip file")
    os.utime(moving, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # and what reads the registration scores: the report's first page, every test subject's page
    pages = len(list((work / "results" / "reports").glob("sub-*.html")))
    left = {"register": 1, "score": 1, "aggregate": 1, "budget": 1, "overview": 1, "subject_report": pages, "all": 1}
    assert pages and planned_jobs(snakemake(work, "-n", "--quiet", "rules", configfile=cfg)) == left

    proc = slurm_snakemake(work, env, cfg, "--retries", "0", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"Error in (rule register|group subjects_test)", log), log[-3000:]
    assert f"logs/register/{sub}_acq-R4_antssyn.log" in log  # the rule's own log, naming the file inside
    assert moving.name in (work / "logs" / "register" / f"{sub}_acq-R4_antssyn.log").read_text()
    assert re.search(r"\.snakemake/slurm_logs/\S+\.log", log)  # and the SLURM job's log
    assert not reg.exists() and not (work / "results" / "metrics.json").exists()  # nothing half-written

    # Repair the input and rerun the same command: the failed job and what depends on it run, nothing else.
    moving.write_bytes(good)
    os.utime(moving, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(snakemake(work, "-n", "--quiet", "rules", configfile=cfg)) == left
    proc = slurm_snakemake(work, env, cfg, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    dry = snakemake(work, "-n", configfile=cfg)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert differing_outputs(slurm_run["workdir"], work) == []


def test_a_gpu_job_without_cuda_fails_and_says_why(slurm_run, tmp_path):
    """Without `device: cpu`, a training job given SLURM's (not real) GPU while torch cannot use
    CUDA fails at once, its log naming torch, CUDA_VISIBLE_DEVICES and the fix; no CPU fallback."""
    if torch.cuda.is_available():
        pytest.skip("this torch can use CUDA: the job would train on a real GPU")
    work = tmp_path / "work"
    shutil.copytree(slurm_run["workdir"], work, symlinks=True)
    shutil.rmtree(work / ".snakemake" / "slurm_logs")
    model = "models/predict-sfcn.pt"  # the run's learned method, now without a `device` key
    assert (work / model).exists()
    no_device = smaller_config(tmp_path / "no-device.yaml")
    proc = slurm_snakemake(work, slurm_run["env"], no_device, model, "--force", "--retries", "0", check=False)
    assert proc.returncode != 0
    log = (work / "logs" / "train" / "predict-sfcn.log").read_text()
    assert log.splitlines()[0] == "CUDA_VISIBLE_DEVICES=0"
    assert "mrichain train: error: this job was given a GPU (CUDA_VISIBLE_DEVICES=0)" in log, log[-3000:]
    assert f"torch {torch.__version__}" in log and "pip install torch==" in log and "device: cpu" in log
    assert "Traceback" not in log and "epoch 1" not in log  # failed before training, no CPU run


def test_gres_profile_asks_for_the_gpu_with_gres(slurm_run, cluster, tmp_path):
    """The site variant: `mrichain profile install slurm-gres`, then `snakemake --profile
    slurm-gres` retrains the run's one model (the finished run copied, only `train` forced). SLURM's
    record of that job shows the GPU requested per node, as `--gres=gpu:1` records it
    (TresPerNode=gres:gpu:1), and no per-job request (`--gpus=1` records TresPerJob, as the slurm
    profile's jobs in test_training_got_a_gpu_from_slurm); SLURM allocated it (CUDA_VISIBLE_DEVICES=0)."""
    env = {**slurm_run["env"], "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run(["mrichain", "profile", "install", "slurm-gres"], check=False, capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    work = tmp_path / "work"
    shutil.copytree(slurm_run["workdir"], work, symlinks=True)
    shutil.rmtree(work / ".snakemake" / "slurm_logs")
    model = "models/predict-sfcn.pt"
    before = (work / model).read_bytes()
    proc = snakemake(work, "--profile", "slurm-gres", "--slurm-keep-successful-logs", *FAST_POLL, model, "--force",
                     "--retries", "0", configfile=slurm_run["config"], check=False, cores=None, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{log[-6000:]}\n{cluster.logs()}"
    assert re.search(r"^Using profiles? slurm-gres\b", log, flags=re.MULTILINE), log[:2000]
    submissions = SUBMITTED.findall(log)
    assert len(submissions) == 1 and "rule_train" in submissions[0][2], submissions
    job = cluster.job(submissions[0][1])
    gres = yaml.safe_load((GRES_PROFILE / "config.yaml").read_text())["set-resources"]["train"]
    assert job["JobState"] == "COMPLETED"
    assert job["Partition"] == gres["slurm_partition"]
    assert job.get("TresPerNode") == f"gres:{gres['gres']}" == "gres:gpu:1", job
    assert "TresPerJob" not in job, job
    assert (work / "logs" / "train" / "predict-sfcn.log").read_text().splitlines()[0] == "CUDA_VISIBLE_DEVICES=0"
    assert (work / model).read_bytes() == before  # the same model as the slurm profile's job trained
