"""Per-stage wall times of a finished run, from Snakemake's benchmark files.

    python benchmarks/stage_times.py [results/benchmarks]

Prints one row per rule: jobs, total job-seconds, mean and max seconds per job, and the share of
the total. docs/benchmarks.md's timing table is this script's output for the default run.
"""
import sys
from pathlib import Path

import pandas as pd


def stage_times(bench_dir: Path) -> pd.DataFrame:
    rows = []
    for f in sorted(bench_dir.rglob("*.tsv")):
        rule = f.parent.name if f.parent != bench_dir else f.stem
        rows.append({"rule": rule, "job": f.stem, "s": float(pd.read_csv(f, sep="\t")["s"].iloc[0])})
    df = pd.DataFrame(rows)
    out = df.groupby("rule", sort=False)["s"].agg(jobs="count", total_s="sum", mean_s="mean", max_s="max")
    out["share"] = out["total_s"] / out["total_s"].sum()
    return out.sort_values("total_s", ascending=False)


if __name__ == "__main__":
    bench = Path(sys.argv[1] if len(sys.argv) > 1 else "results/benchmarks")
    table = stage_times(bench)
    print(table.to_markdown(floatfmt=".1f") if hasattr(table, "to_markdown") else table.round(1).to_string())
    print(f"\njob-seconds in all: {table['total_s'].sum():.0f}")
