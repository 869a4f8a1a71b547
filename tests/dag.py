"""Helpers shared by the tests that run the whole DAG: call Snakemake, read its plans, compare runs."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "config" / "test.yaml"

#: Directories whose files a run must reproduce byte for byte (images, k-space, labels).
DETERMINISTIC_DIRS = ("results/template", "results/groundtruth", "results/kspace", "results/recon",
                      "results/denoise", "results/register", "results/segment")


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


def differing_outputs(a: Path, b: Path, *, b_runs_less: bool = False) -> list[str]:
    """Relative paths where two runs differ: image/k-space/label files byte for byte, trained
    weights byte for byte, metrics JSON without timing fields. Missing files count as different.
    ``b_runs_less``: ``b``'s config plans a subset of ``a``'s jobs (e.g. no error-budget
    conditions, no MRF branch): every output of ``b`` must equal ``a``'s; files, models, stages and
    acquisitions only ``a`` has are not differences."""
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
    for name in ("results/metrics.json", "results/metrics_by_acq.json"):
        ja, jb = (json.loads((r / name).read_text()) if (r / name).exists() else None for r in (a, b))
        if b_runs_less and ja is not None and jb is not None:  # the stages (metrics) or acquisitions b ran
            ja = {k: v for k, v in ja.items() if k in jb}
        if ja is None or _without_timings(ja) != _without_timings(jb):
            diffs.append(name)
    return diffs
