"""Aggregate per-subject stage scores into ``results/metrics.json``.

``metrics.json`` is ``{stage: {method: {metric: value}}}``: the mean over the test split at the
primary acquisition (the first configured acceleration), plus ``n_test``. Brain-age absolute
errors become ``mae_years``. ``metrics_by_acq.json`` is ``{acq: {stage: {method: {metric}}}}``
for every acquisition; ``summary.tsv`` has one row per (acq, stage, method, metric);
``comparison.tsv`` puts the methods of each stage side by side at the primary acquisition: one row
per (stage, method, metric) with the method's kind (floor / classical / learned, from
:mod:`mrichain.stages`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mrichain.io import save_json

RENAME = {"abs_error_years": "mae_years", "in_interval": "interval_coverage"}


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean over the test split (cohort-level rows such as a fit's seconds are kept as they are)."""
    test = scores[scores["split"].isin(["test", "all"])]
    summary = (
        test.groupby(["acq", "stage", "method", "metric"], sort=False)["value"]
        .agg(value="mean", n_test="count")
        .reset_index()
    )
    summary["metric"] = summary["metric"].replace(RENAME)
    return summary


def nest(summary: pd.DataFrame) -> dict:
    out: dict = {}
    for r in summary.itertuples():
        out.setdefault(r.stage, {}).setdefault(r.method, {})[r.metric] = float(r.value)
    for (stage, method), g in summary.groupby(["stage", "method"]):
        out[stage][method]["n_test"] = int(g["n_test"].max())
    return out


def comparison(summary: pd.DataFrame, primary_acq: str) -> pd.DataFrame:
    from mrichain.stages import kind

    table = summary[summary["acq"] == primary_acq].drop(columns=["acq"]).copy()
    table.insert(2, "kind", [kind(s, m) for s, m in zip(table["stage"], table["method"])])
    return table


def aggregate(score_files: list[str], primary_acq: str, out_metrics, out_by_acq, out_summary,
              out_comparison=None) -> dict:
    scores = pd.concat([pd.read_csv(f, sep="\t") for f in score_files], ignore_index=True)
    summary = summarise(scores)
    by_acq = {acq: nest(g) for acq, g in summary.groupby("acq", sort=False)}
    metrics = by_acq[primary_acq]
    save_json(metrics, out_metrics)
    save_json(by_acq, out_by_acq)
    Path(out_summary).parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_summary, sep="\t", index=False, float_format="%.6g")
    if out_comparison is not None:
        comparison(summary, primary_acq).to_csv(out_comparison, sep="\t", index=False, float_format="%.6g")
    return metrics
