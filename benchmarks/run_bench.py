"""Run the benchmark config and check the learned-vs-classical targets side by side.

    python benchmarks/run_bench.py [--config config/bench.yaml] [--workdir results/bench/run] [--cores all]

Runs the whole DAG on the benchmark config in its own working directory, then writes
``results/bench/comparison.tsv`` (one row per stage, method, metric at each acquisition) and
``results/bench/targets.tsv`` (each target of issue 3 with the measured values, the margin
required and whether it is met), and prints the targets table. Wall time of the run is recorded
in ``results/bench/run_seconds.txt``. Use ``--no-run`` to only re-evaluate a finished run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _get(m: dict, acq: str, stage: str, method: str, metric: str) -> float:
    try:
        v = m[acq][stage][method][metric]
    except KeyError:
        return float("nan")
    return float("nan") if v is None else float(v)


def targets(by_acq: dict, recon_acq: str = "R4", denoise_acq: str | None = None) -> pd.DataFrame:
    """The issue-3 targets from ``metrics_by_acq.json``; NaN where a method did not run."""
    denoise_acq = denoise_acq or ("R1" if "R1" in by_acq else recon_acq)
    seg_acq = recon_acq
    g = lambda *k: _get(by_acq, *k)  # noqa: E731
    rows = []

    def add(name, measured, reference, needed, met, note=""):
        rows.append({"target": name, "measured": measured, "reference": reference, "required": needed,
                     "met": bool(met), "note": note})

    v, cs, zf = (g(recon_acq, "reconstruct", m, "ssim") for m in ("varnet", "cs", "zerofilled"))
    add(f"reconstruct {recon_acq}: learned SSIM >= CS SSIM + 0.02", v, cs, cs + 0.02, v >= cs + 0.02)
    add(f"reconstruct {recon_acq}: learned SSIM >= zero-filled SSIM + 0.08", v, zf, zf + 0.08, v >= zf + 0.08)
    d, n = g(denoise_acq, "denoise", "dncnn", "psnr"), g(denoise_acq, "denoise", "antsnlm", "psnr")
    add(f"denoise {denoise_acq}: learned PSNR >= ANTs NLM PSNR + 1 dB", d, n, n + 1.0, d >= n + 1.0)
    vd, sd = g(seg_acq, "register", "voxelmorph", "dice_mean"), g(seg_acq, "register", "antssyn", "dice_mean")
    add(f"register {seg_acq}: learned Dice within 0.03 of SyN", vd, sd, sd - 0.03, vd >= sd - 0.03)
    vs, ss = (g(seg_acq, "register", m, "seconds_per_pair") for m in ("voxelmorph", "antssyn"))
    add(f"register {seg_acq}: learned >= 10x fewer seconds per pair", vs, ss, ss / 10, vs <= ss / 10,
        f"speed-up {ss / vs:.1f}x" if vs == vs and vs > 0 else "")
    vf = g(seg_acq, "register", "voxelmorph", "folding_percent")
    add(f"register {seg_acq}: learned folding < 0.5 %", vf, float("nan"), 0.5, vf < 0.5)
    ud, ad = g(seg_acq, "segment", "unet", "dice_mean"), g(seg_acq, "segment", "atropos", "dice_mean")
    add(f"segment {seg_acq}: learned mean tissue Dice >= 0.90", ud, float("nan"), 0.90, ud >= 0.90)
    add(f"segment {seg_acq}: learned Dice above Atropos", ud, ad, ad, ud > ad)
    sm, lm = g(seg_acq, "predict", "sfcn", "mae_years"), g(seg_acq, "predict", "linear", "mae_years")
    add(f"predict {seg_acq}: learned MAE <= linear MAE", sm, lm, lm, sm <= lm)
    cov = g(seg_acq, "predict", "sfcn", "interval_coverage")
    add(f"predict {seg_acq}: interval coverage (reported)", cov, float("nan"), float("nan"), cov == cov,
        "nominal coverage is the configured interval")
    return pd.DataFrame(rows)


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
    table = targets(by_acq)
    table.to_csv(out / "targets.tsv", sep="\t", index=False, float_format="%.4g")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
