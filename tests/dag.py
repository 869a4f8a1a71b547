"""Helpers shared by the tests that run the whole DAG: call Snakemake, read its plans, compare runs."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "config" / "test.yaml"

#: Directories whose files a run must reproduce byte for byte (images, k-space, labels).
DETERMINISTIC_DIRS = ("results/template", "results/groundtruth", "results/kspace", "results/recon",
                      "results/denoise", "results/register", "results/segment")


CLASSICAL_SUBSET = {"reconstruct": ["zerofilled", "cs"], "denoise": ["antsnlm"], "register": ["affine", "antssyn"],
                    "segment": ["kmeans", "atropos"], "predict": ["mean", "linear", "sfcn"]}
"""The methods of :func:`smaller_config`: the feeds, a floor and a tuned classical method per stage,
and one learned method (SFCN, the quickest trainer) so that one training job runs."""


def moving_config(motion: dict) -> dict:
    """config/test.yaml with ``acquire.motion`` set to a copy of ``motion`` (shots, ordering, levels)."""
    import copy

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["acquire"]["motion"] = copy.deepcopy(motion)
    return cfg


def edited_config(path: Path, edit=None) -> tuple[dict, Path]:
    """config/test.yaml with ``edit(cfg)`` applied in place (None: as it is), written to ``path``:
    ``(cfg, path)``."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    if edit:
        edit(cfg)
    path.write_text(yaml.safe_dump(cfg))
    return cfg, path


def smaller_config(path: Path, *, mrf: bool = False, budget: bool = False, learned_device: str | None = None,
                   first_acquisition_only: bool = False) -> Path:
    """config/test.yaml cut to a subset of its jobs, written to ``path``: the same cohort, seed and
    acquisitions, only the methods of :data:`CLASSICAL_SUBSET`, without the error-budget conditions
    (``budget``) and the MR fingerprinting branch (``mrf``). Every job it plans is a job of the
    full test config with the same inputs and parameters, so its outputs must equal the full run's
    (:func:`differing_outputs` with ``b_runs_less``): the tests of the run's mechanics (SLURM,
    DVC) run on it, the full DAG's content is tested once (the ``local_run`` fixture).
    ``first_acquisition_only``: R4 alone (a third of the jobs fewer), for a test that does not
    compare with the full run: its outputs are not the full run's (the R4 noise-free images
    differ, and what reads them).
    ``learned_device``: the ``device`` of every learned method kept (``cpu`` on a cluster whose
    GPU torch cannot use)."""
    from mrichain.plan.stages import stage

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    for name, methods in CLASSICAL_SUBSET.items():
        section = cfg[name]
        assert set(methods) <= set(section["methods"]), f"config/test.yaml no longer runs {methods} in {name}"
        section["methods"] = list(methods)
        for key in ("params", "tune"):
            kept = {m: v for m, v in section.get(key, {}).items() if m in methods}
            if kept:
                section[key] = kept
            else:
                section.pop(key, None)
        if learned_device:
            for m in methods:
                if stage(name).method(m).learned:
                    section.setdefault("params", {}).setdefault(m, {})["device"] = learned_device
    if first_acquisition_only:
        for key in ("accelerations", "center_fractions"):
            cfg["acquire"][key] = cfg["acquire"][key][:1]
    if not budget:
        cfg["error_budget"] = {"sweep": False, "oracle": False}
    if not mrf:
        cfg.pop("mrf", None)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir, *args, configfile=TEST_CONFIG, check=True, cores: str | None = "2", snakefile=ROOT / "Snakefile",
              env: dict | None = None):
    """Run ``python -m snakemake`` on ``workdir``; raise with its output tails when it fails and ``check``.
    ``env``: the subprocess's whole environment (default: this process's)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
           "--configfile", str(configfile)]
    if cores:
        cmd += ["--cores", cores]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc) -> dict[str, int]:
    """Parse the job-count table of a dry run: {rule: count}."""
    jobs = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def rules_run(log: str, local_only: bool = False) -> dict[str, int]:
    """{rule: jobs} from the job headers of a Snakemake log (``rule x:`` / ``localrule x:``).
    ``local_only``: only ``localrule`` headers, printed by the Snakemake that runs a job inside a
    cluster allocation (the job step's outer ``rule x:`` header around it is then not counted)."""
    pattern = r"^localrule (\w+):$" if local_only else r"^(?:local)?rule (\w+):$"
    counts: dict[str, int] = {}
    for rule in re.findall(pattern, log, flags=re.M):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def _without_timings(obj):
    """JSON content with every wall-clock field dropped (seconds, wall time, device differ by host)."""
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items()
                if not any(t in k for t in ("second", "wall", "device", "time"))}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _restricted(a, b, depth: int):
    """``a`` with only the keys ``b`` has, down ``depth`` levels of nested dicts (metrics.json:
    stage, method; metrics_by_acq.json: acquisition, stage, method); below that, values whole."""
    if depth == 0 or not isinstance(a, dict) or not isinstance(b, dict):
        return a
    return {k: _restricted(v, b[k], depth - 1) for k, v in a.items() if k in b}


def differing_outputs(a: Path, b: Path, *, b_runs_less: bool = False) -> list[str]:
    """Relative paths where two runs differ: image/k-space/label files byte for byte, trained
    weights byte for byte, metrics JSON without timing fields. Missing files count as different.
    ``b_runs_less``: ``b``'s config plans a subset of ``a``'s jobs (e.g. :func:`smaller_config`):
    every output of ``b`` must equal ``a``'s; files, models, acquisitions, stages and methods only
    ``a`` has are not differences."""
    diffs = []
    for d in DETERMINISTIC_DIRS:
        files_a = {p.relative_to(a) for p in (a / d).rglob("*") if p.is_file() and p.suffix != ".json"}
        files_b = {p.relative_to(b) for p in (b / d).rglob("*") if p.is_file() and p.suffix != ".json"}
        diffs += [str(p) for p in sorted((files_b - files_a) if b_runs_less else (files_a ^ files_b))]
        diffs += [str(p) for p in sorted(files_a & files_b) if (a / p).read_bytes() != (b / p).read_bytes()]
    for p in sorted((a / "models").glob("*.pt")):
        q = b / p.relative_to(a)
        if b_runs_less and not q.exists():
            continue  # a model only a's config trains (e.g. the MRF branch's DRONE)
        if not q.exists() or p.read_bytes() != q.read_bytes():
            diffs.append(str(p.relative_to(a)))
    for name, depth in (("results/metrics.json", 2), ("results/metrics_by_acq.json", 3)):
        ja, jb = (json.loads((r / name).read_text()) if (r / name).exists() else None for r in (a, b))
        if b_runs_less and ja is not None and jb is not None:  # the acquisitions, stages, methods b ran
            ja = _restricted(ja, jb, depth)
        if ja is None or _without_timings(ja) != _without_timings(jb):
            diffs.append(name)
    return diffs
