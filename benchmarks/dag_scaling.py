"""How the Snakemake DAG scales with the cohort: `snakemake -n` time, memory, jobs, command size.

For each subject count N (default 200, 1000 and 10000) the script writes config/config.yaml with
only ``cohort.n_subjects`` set to N into a fresh temporary directory, and runs there

    python -m snakemake -n -p --snakefile <repo>/Snakefile --directory <tmp> --configfile <tmp>/config.yaml --cores 2

optionally with ``--profile <path>`` (e.g. profiles/slurm: a dry run with the SLURM executor needs
no cluster, and its group-components change how groups are merged, so the DAG cost differs).
Per run it records:

- seconds: wall time of the snakemake process (DAG building, group handling, dry-run scheduling);
- peak_mb: the peak resident memory of that process (its own rusage, via os.wait4);
- jobs: the ``total`` row of Snakemake's job-count table;
- group_jobs / other_jobs: "Group job" entries and ungrouped jobs of the dry run (local rules and
  rules without a shell command, like `all`, left out); with a cluster profile their sum is the
  number of cluster submissions;
- longest_cmd_bytes / longest_cmd_rule: the longest shell command printed by ``-p`` (the line
  after "Shell command:") and its rule; long_cmd_rules: every rule whose longest command is over
  100 KB. Linux refuses any single argument over 128 KiB, so a command that grows with the cohort
  breaks at scale.

It needs only the Snakefile, config/config.yaml and its ``cohort.n_subjects`` key. Results go to a
TSV (default results/benchmarks/dag_scaling.tsv under the repository) and a printed table that
gives each time as a ratio of the smallest N's time (the target: 1,000 subjects within 6x the time
of 200, and at most 30 s on a 2-core machine). Runs are sequential; a run over --timeout seconds is
killed and recorded as a timeout.

    python benchmarks/dag_scaling.py                                # 200, 1000, 10000 subjects
    python benchmarks/dag_scaling.py --subjects 200 1000            # quicker
    python benchmarks/dag_scaling.py --subjects 200 1000 --profile none profiles/slurm   # both
    python benchmarks/dag_scaling.py --config config/test.yaml --subjects 8 --profile profiles/slurm
                                            # SLURM submissions of the test config (groups + other)
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LONG_COMMAND_BYTES = 100_000
FIELDS = [
    "n_subjects", "profile", "status", "seconds", "peak_mb", "jobs", "group_jobs", "other_jobs",
    "longest_cmd_bytes", "longest_cmd_rule", "long_cmd_rules",
]


def write_config(base: Path, n_subjects: int, dest: Path) -> Path:
    """The base config with only cohort.n_subjects changed, written to dest/config.yaml."""
    cfg = yaml.safe_load(base.read_text())
    cfg["cohort"]["n_subjects"] = int(n_subjects)
    path = dest / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake_command(repo: Path, workdir: Path, configfile: Path, cores: int, profile: str | None) -> list[str]:
    cmd = [
        sys.executable, "-m", "snakemake", "-n", "-p",
        "--snakefile", str(repo / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--cores", str(cores),
    ]
    if profile:
        cmd += ["--profile", str(Path(profile) if Path(profile).is_absolute() else repo / profile)]
    return cmd


def run_measured(cmd: list[str], cwd: Path, log: Path, timeout: float) -> tuple[int | None, float, float]:
    """Run cmd with stdout and stderr to log; return (exit code or None on timeout, seconds, peak MB).

    os.wait4 gives the rusage of this child alone (RUSAGE_CHILDREN would keep the largest child
    of all earlier runs); ru_maxrss is in KiB on Linux.
    """
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -signal.SIGKILL
                return None, time.perf_counter() - start, usage.ru_maxrss / 1024
            time.sleep(0.05)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, seconds, usage.ru_maxrss / 1024


def parse_dry_run(log: Path) -> dict:
    """Job count, group jobs, ungrouped jobs and the longest shell command of a `-n -p` log."""
    jobs = None
    group_jobs = other_jobs = 0
    longest, longest_rule, rule, top_level = 0, "", "", False
    per_rule: dict[str, int] = {}
    rule_line = re.compile(rb"^(\s*)(local)?rule (\w+):")
    with open(log, "rb") as f:
        for line in f:
            if line.startswith(b"Shell command:"):
                command = line[len(b"Shell command:"):].strip()
                if top_level and command == b"None":
                    other_jobs -= 1  # a target rule without an action (rule all): never submitted
                if len(command) > longest:
                    longest, longest_rule = len(command), rule
                per_rule[rule] = max(per_rule.get(rule, 0), len(command))
                continue
            m = rule_line.match(line)
            if m:
                rule = m.group(3).decode()
                top_level = not m.group(1) and not m.group(2)
                other_jobs += top_level
            elif b"Group job " in line:
                group_jobs += 1
            elif jobs is None and line.startswith(b"total "):
                jobs = int(line.split()[1])
    return {
        "jobs": jobs, "group_jobs": group_jobs, "other_jobs": other_jobs,
        "longest_cmd_bytes": longest, "longest_cmd_rule": longest_rule,
        "long_cmd_rules": ",".join(f"{r}={n}" for r, n in sorted(per_rule.items()) if n > LONG_COMMAND_BYTES),
    }


def measure(repo: Path, base: Path, n_subjects: int, profile: str | None, cores: int, timeout: float,
            keep: bool) -> dict:
    """One dry run of an n_subjects cohort in a fresh temporary directory: the row of the TSV."""
    tmp = Path(tempfile.mkdtemp(prefix=f"dag_scaling_{n_subjects}_"))
    try:
        configfile = write_config(base, n_subjects, tmp)
        log = tmp / "snakemake.log"
        cmd = snakemake_command(repo, tmp, configfile, cores, profile)
        rc, seconds, peak_mb = run_measured(cmd, tmp, log, timeout)
        row = {"n_subjects": n_subjects, "profile": profile or "none", "seconds": round(seconds, 2),
               "peak_mb": round(peak_mb, 1)}
        row |= parse_dry_run(log)
        row["status"] = "timeout" if rc is None else "ok" if rc == 0 else f"exit {rc}"
        if rc != 0:
            tail = log.read_bytes()[-3000:].decode(errors="replace")
            print(f"  n={n_subjects} profile={row['profile']}: {row['status']}; log tail:\n{tail}", file=sys.stderr)
        if keep:
            print(f"  kept {tmp}", file=sys.stderr)
        return row
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def write_tsv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, delimiter="\t", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def print_table(rows: list[dict]) -> None:
    """Rows with each time as a ratio of the smallest cohort's time under the same profile."""
    base = {}
    for r in sorted(rows, key=lambda r: r["n_subjects"]):
        if r["status"] == "ok":
            base.setdefault(r["profile"], r)
    header = (f"{'subjects':>8} {'profile':<16} {'status':<8} {'seconds':>8} {'ratio':>7} {'peak MB':>8} "
              f"{'jobs':>7} {'groups':>7} {'other':>6} {'longest cmd':>12}")
    print(header)
    print("-" * len(header))
    for r in rows:
        b = base.get(r["profile"])
        ratio = f"{r['seconds'] / b['seconds']:.1f}x" if b and b["seconds"] else "-"
        flag = "  TOO LONG" if r["longest_cmd_bytes"] > LONG_COMMAND_BYTES else ""
        print(f"{r['n_subjects']:>8} {r['profile']:<16} {r['status']:<8} {r['seconds']:>8.1f} {ratio:>7} "
              f"{r['peak_mb']:>8.0f} {r['jobs'] if r['jobs'] is not None else '-':>7} {r['group_jobs']:>7} "
              f"{r['other_jobs']:>6} {r['longest_cmd_bytes']:>12,}{flag}")
    for r in rows:
        if r["long_cmd_rules"]:
            print(f"n={r['n_subjects']} ({r['profile']}): commands over {LONG_COMMAND_BYTES:,} bytes, longest per "
                  f"rule: {r['long_cmd_rules']} (Linux refuses a single argument over 131,072 bytes)")
    by = {(r["profile"], r["n_subjects"]): r for r in rows if r["status"] == "ok"}
    for profile in dict.fromkeys(r["profile"] for r in rows):
        small, large = by.get((profile, 200)), by.get((profile, 1000))
        if small and large:
            print(f"profile {profile}: 1000 vs 200 subjects: {large['seconds'] / small['seconds']:.1f}x the time "
                  f"(target <= 6x and <= 30 s: {large['seconds']:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, nargs="+", default=[200, 1000, 10000],
                    help="cohort sizes (default: 200 1000 10000)")
    ap.add_argument("--profile", nargs="+", default=["none"],
                    help="Snakemake profile directories, relative to the repository or absolute; "
                         "'none' = no profile (default)")
    ap.add_argument("--repo", type=Path, default=REPO, help="repository with the Snakefile (default: this one)")
    ap.add_argument("--config", type=Path, help="base config (default: <repo>/config/config.yaml)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600,
                    help="seconds per snakemake run before it is killed (default 3600)")
    ap.add_argument("--out", type=Path, help="TSV (default: <repo>/results/benchmarks/dag_scaling.tsv)")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory and log")
    args = ap.parse_args(argv)

    repo = args.repo.resolve()
    base = (args.config or repo / "config" / "config.yaml").resolve()
    out = args.out or repo / "results" / "benchmarks" / "dag_scaling.tsv"
    rows = []
    for profile in args.profile:
        for n in args.subjects:
            print(f"snakemake -n: {n} subjects, profile {profile} ...", file=sys.stderr, flush=True)
            prof = None if profile == "none" else profile
            rows.append(measure(repo, base, n, prof, args.cores, args.timeout, args.keep))
            write_tsv(rows, out)
    print_table(rows)
    print(f"wrote {out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
