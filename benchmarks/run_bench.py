"""Run the benchmark config and check the learned-vs-classical targets side by side.

    python benchmarks/run_bench.py [--config config/bench.yaml] [--workdir results/bench/run] [--cores all]

Runs the whole DAG on the benchmark config in its own working directory, then writes
``results/bench/comparison.tsv`` (one row per stage, method, metric at each acquisition) and
``results/bench/targets.tsv`` and ``targets.md`` (each learned-vs-classical target with the measured value, the
reference, the paired test-subject difference with its 95 % bootstrap interval, and whether it is
met: "beats" means the interval lies above zero, and a learned method the "did it learn" check
flagged meets nothing), and prints the targets table. Brain age also gets
the simulation's irreducible error and, where the config runs the oracle condition, its ceiling
(the tuned linear model on ground-truth volumes). The run's error budget (and, where the config sweeps, the sweep
and acceleration limits) are copied beside them. Wall time of the run is recorded in ``run_seconds.txt``. Use
``--no-run`` to only re-evaluate a finished run.

    python benchmarks/run_bench.py --config config/bench_sweep.yaml --workdir results/bench/sweep/run

runs the long acceleration sweep instead (results/bench/sweep/).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _get(m: dict, acq: str, stage: str, method: str, metric: str) -> float:
    try:
        v = m[acq][stage][method][metric]
    except KeyError:
        return float("nan")
    return float("nan") if v is None else float(v)


def _diff(diffs: pd.DataFrame, acq: str, stage: str, metric: str, a: str, b: str) -> dict:
    """The paired difference a - b over the test subjects (differences.tsv); NaNs where absent."""
    row = diffs[(diffs.acq == acq) & (diffs.stage == stage) & (diffs.metric == metric)
                & (diffs.method_a == a) & (diffs.method_b == b)]
    if row.empty:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    r = row.iloc[0]
    return {"mean": float(r.mean_difference), "low": float(r.ci_low), "high": float(r.ci_high), "n": int(r.n)}


def targets(by_acq: dict, diffs: pd.DataFrame, oracle: dict | None = None, gap_sd_years: float = 5.0,
            predictions: dict | None = None) -> pd.DataFrame:
    """The learned-vs-classical targets. "Beats" means the 95 % interval of the paired test-subject
    difference lies above zero (below, for lower-is-better metrics); each row has the measured
    value, the reference, the paired difference with its interval, and whether the target is met.
    A target about a learned method is never met when the "did it learn" check flagged the method
    (``learned`` false in metrics_by_acq.json): its note says so.
    predictions: {method: DataFrame of results/predict/acq-R1_desc-<method>_predictions.tsv} for
    the age models' correlation with age over the test split."""
    g = lambda *k: _get(by_acq, *k)  # noqa: E731
    rows = []

    def flagged(acq, stage, method):
        return by_acq.get(acq, {}).get(stage, {}).get(method, {}).get("learned") is False

    def add(name, measured, reference, d=None, met=False, note="", learned=()):
        d = d or {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
        bad = [f"{m} at {a}" for a, s_, m in learned if flagged(a, s_, m)]
        if bad:
            met, note = False, "; ".join([*(["flagged 'did not learn': " + ", ".join(bad)]), *([note] if note else [])])
        rows.append({"target": name, "measured": measured, "reference": reference, "difference": d["mean"],
                     "diff_ci_low": d["low"], "diff_ci_high": d["high"], "n_test": d["n"], "met": bool(met),
                     "note": note})

    def beats(acq, stage, metric, a, b, margin=0.0, higher=True):
        d = _diff(diffs, acq, stage, metric, a, b)
        return d, (d["low"] > margin if higher else d["high"] < -margin)

    def compare(acq, stage, metric, a, b, learned=(), higher=True):
        d, ok = beats(acq, stage, metric, a, b, higher=higher)
        add(f"{stage} {acq}: {a} beats {b} on {metric}", g(acq, stage, a, metric), g(acq, stage, b, metric), d, ok,
            learned=learned)

    compare("R4", "reconstruct", "ssim_truth", "cs", "zerofilled")
    compare("R4", "reconstruct", "ssim_truth", "varnet", "cs", [("R4", "reconstruct", "varnet")])
    d = _diff(diffs, "R1", "denoise", "psnr", "dncnn", "antsnlm")
    add("denoise R1: dncnn beats tuned antsnlm by >= 1 dB PSNR (interval lower bound)", g("R1", "denoise", "dncnn", "psnr"),
        g("R1", "denoise", "antsnlm", "psnr"), d, d["low"] >= 1.0, learned=[("R1", "denoise", "dncnn")])
    compare("R4", "denoise", "psnr", "dncnn", "input", [("R4", "denoise", "dncnn")])
    vxm = [("R4", "register", "voxelmorph")]
    d = _diff(diffs, "R4", "register", "dice_mean", "voxelmorph", "antssyn")
    add("register R4: voxelmorph mean Dice within 0.02 of tuned antssyn (interval lower bound >= -0.02)",
        g("R4", "register", "voxelmorph", "dice_mean"), g("R4", "register", "antssyn", "dice_mean"), d,
        d["low"] >= -0.02, learned=vxm)
    compare("R4", "register", "dice_mean", "voxelmorph", "antssyn", vxm)  # the stretch target
    vs, ss = (g("R4", "register", m, "seconds_per_pair") for m in ("voxelmorph", "antssyn"))
    add("register R4: voxelmorph >= 10x fewer seconds per pair", vs, ss, None, vs <= ss / 10,
        f"speed-up {ss / vs:.1f}x" if vs == vs and vs > 0 else "", learned=vxm)
    vf = g("R4", "register", "voxelmorph", "folding_percent")
    add("register R4: voxelmorph folding < 0.5 %", vf, float("nan"), None, vf < 0.5, learned=vxm)
    for acq in ("R4", "R1"):
        compare(acq, "segment", "dice_mean", "unet", "atropos", [(acq, "segment", "unet")])
    ud = g("R1", "segment", "unet", "dice_mean")
    add("segment R1: unet mean tissue Dice >= 0.88", ud, float("nan"), None, ud >= 0.88, learned=[("R1", "segment", "unet")])
    learned_age = [m for m in ("mlp", "sfcn") if m in by_acq.get("R1", {}).get("predict", {})]
    maes = {m: g("R1", "predict", m, "mae_years") for m in learned_age}
    usable = [m for m in learned_age if not flagged("R1", "predict", m) and maes[m] == maes[m]]
    best = min(usable or learned_age, key=lambda m: maes[m] if maes[m] == maes[m] else float("inf"))
    d = _diff(diffs, "R1", "predict", "mae_years", best, "linear")
    irreducible = gap_sd_years * math.sqrt(2 / math.pi)
    note = f"irreducible {irreducible:.1f} y (brain-age gap SD x sqrt(2/pi)); mean predictor " \
           f"{g('R1', 'predict', 'mean', 'mae_years'):.1f} y"
    if oracle:
        note += f"; oracle (linear on ground-truth volumes) {oracle['mae_years']:.1f} y"
    add(f"predict R1: best learned age model ({best}) MAE within 1 y of the linear model's (interval upper bound)",
        maes[best], g("R1", "predict", "linear", "mae_years"), d, d["high"] <= 1.0, note,
        learned=[("R1", "predict", best)])
    d, ok = beats("R1", "predict", "mae_years", best, "linear", higher=False)
    add(f"predict R1: best learned age model ({best}) beats the linear model (stretch)", maes[best],
        g("R1", "predict", "linear", "mae_years"), d, ok, learned=[("R1", "predict", best)])
    if predictions and "sfcn" in predictions:
        test = predictions["sfcn"][predictions["sfcn"].split == "test"]
        r = float(test[["age", "predicted_age"]].corr().iloc[0, 1]) if len(test) > 2 else float("nan")
        add("predict R1: sfcn predictions correlate with age (r >= 0.8, test split)", r, 0.8, None, r >= 0.8,
            learned=[("R1", "predict", "sfcn")])
    if "MRF" in by_acq:
        for metric in ("t1_mape", "t2_mape"):
            dr, mt = g("MRF", "mrf", "drone", metric), g("MRF", "mrf", "matching", metric)
            add(f"mrf: drone {metric} no worse than full matching", dr, mt, None, dr <= mt,
                "speed at 20k atoms: benchmarks/mrf_speed.py")
    return pd.DataFrame(rows)


# The methods the targets compare; a config without one of them (config/bench_sweep.yaml runs no
# SyN) gets no targets table, rather than rows that read "not met" for a method never run.
TARGET_METHODS = {"reconstruct": {"zerofilled", "cs", "varnet"}, "denoise": {"antsnlm", "dncnn"},
                  "register": {"affine", "antssyn", "voxelmorph"}, "segment": {"atropos", "unet"},
                  "predict": {"mean", "linear"}}
# What the error-budget rule writes (results/...), copied beside the tables of the bench.
BUDGET_OUTPUTS = ["error_budget.tsv", "sweep.tsv", "acceleration_limits.tsv", "figures/error_budget.png",
                  "figures/sweep.png"]


def runs_target_methods(cfg: dict) -> bool:
    return all(want <= set(cfg[stage]["methods"]) for stage, want in TARGET_METHODS.items())


def oracle_brain_age(by_acq: dict) -> dict | None:
    """The ceiling of the volume model: the DAG's oracle condition (the tuned linear model fitted
    and applied on ground-truth labels, :mod:`mrichain.plan.conditions`)."""
    mae = _get(by_acq, "oracle", "predict", "linear", "mae_years")
    return None if mae != mae else {"mae_years": mae}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "bench.yaml"))
    p.add_argument("--workdir", default=str(ROOT / "results" / "bench" / "run"))
    p.add_argument("--cores", default="all")
    p.add_argument("--no-run", action="store_true")
    a = p.parse_args(argv)
    work = Path(a.workdir)
    out = work.parent
    out.mkdir(parents=True, exist_ok=True)
    if not a.no_run:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
               "--configfile", a.config, "--cores", a.cores, "--rerun-incomplete"]
        subprocess.run(cmd, check=True)
        (out / "run_seconds.txt").write_text(f"{time.perf_counter() - t0:.0f}\n")
    by_acq = json.loads((work / "results" / "metrics_by_acq.json").read_text())
    rows = [
        {"acq": acq, "stage": stage, "method": method, "metric": metric, "value": value}
        for acq, stages in by_acq.items() for stage, methods in stages.items()
        for method, metrics in methods.items() for metric, value in metrics.items()
    ]
    pd.DataFrame(rows).to_csv(out / "comparison.tsv", sep="\t", index=False, float_format="%.6g")
    for name in BUDGET_OUTPUTS:
        src = work / "results" / name
        if src.exists():
            shutil.copyfile(src, out / Path(name).name)
    cfg = yaml.safe_load(Path(a.config).read_text())
    if not runs_target_methods(cfg):
        print(f"{a.config} does not run every method the targets compare: no targets.tsv")
        print((work / "results" / "acceleration_limits.tsv").read_text())
        return 0
    diffs = pd.read_csv(work / "results" / "differences.tsv", sep="\t")
    predictions = {m: pd.read_csv(p, sep="\t") for m in ("sfcn", "mlp")
                   if (p := work / "results" / "predict" / f"acq-R1_desc-{m}_predictions.tsv").exists()}
    table = targets(by_acq, diffs, oracle_brain_age(by_acq), cfg["cohort"]["atrophy"]["brain_age_gap_sd_years"],
                    predictions)
    table.to_csv(out / "targets.tsv", sep="\t", index=False, float_format="%.4g")
    (out / "targets.md").write_text(markdown(table))
    print(table.to_string(index=False))
    return 0


def _fmt(v: float, spec: str = ".4g") -> str:
    return "" if v != v else format(v, spec)


def markdown(table: pd.DataFrame) -> str:
    """The targets as a Markdown table (``results/bench/targets.md``, for the docs): target,
    measured, reference, the paired difference with its 95 % interval, n, met, note."""
    lines = ["| target | measured | reference | paired difference [95 % CI] | n | met | note |",
             "|---|---:|---:|---:|---:|:---:|---|"]
    for r in table.itertuples(index=False):
        diff = "" if r.difference != r.difference else \
            f"{_fmt(r.difference, '+.3g')} [{_fmt(r.diff_ci_low, '+.3g')}, {_fmt(r.diff_ci_high, '+.3g')}]"
        lines.append(f"| {r.target} | {_fmt(r.measured)} | {_fmt(r.reference)} | {diff} | "
                     f"{r.n_test or ''} | {'yes' if r.met else 'no'} | {r.note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
