"""The run report's first page: the headline table and the error-budget figure.

Snakemake's report opens on the workflow description (the ``report:`` directive); the Snakefile
points it at the reStructuredText this module writes, ``results/report/overview.rst``, once the
run has made it, so the report opens on the answer rather than the workflow graph.

The headline table: one row per stage, its primary score (:attr:`mrichain.plan.stages.Stage.primary_metric`,
in the tables' name: :data:`mrichain.scoring.metrics.TABLE_NAMES`) at the primary acquisition for
its floor(s), classical and learned methods (test mean, with the 95 % interval where the test split
has :data:`mrichain.scoring.aggregate.MIN_N` subjects or more), the learned method's paired
difference to the classical one (with its interval and "beats" only above that size), and the
"did it learn" verdict with its reason where it did not. Read from ``comparison.tsv`` and
``differences.tsv`` (:mod:`mrichain.scoring.aggregate`): nothing is recomputed here.

The figure is embedded as a ``data:`` URI, so the page needs no other file.
"""
from __future__ import annotations

import base64
import math
from pathlib import Path

import pandas as pd

from mrichain.plan.stages import ALL_STAGES, CLASSICAL, FLOOR, LEARNED, MRF
from mrichain.scoring.aggregate import MIN_N
from mrichain.scoring.metrics import TABLE_NAMES, higher_is_better

PRIMARY = {s.name: TABLE_NAMES.get(s.primary_metric, s.primary_metric) for s in ALL_STAGES if s.primary_metric}
PRIMARY[MRF] = "t1_mape"
"""The headline score of each stage, as the tables name it (MR fingerprinting: T1 MAPE)."""


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    v = float(v)
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _with_interval(value, low, high) -> str:
    if low is None or pd.isna(low) or pd.isna(high):
        return _num(value)
    return f"{_num(value)} [{_num(low)}, {_num(high)}]"


def _cell(rows: pd.DataFrame) -> str:
    return "; ".join(f"{r.method} {_with_interval(r.value, r.ci_low, r.ci_high)}" for r in rows.itertuples()) or "—"


def headline(comparison: pd.DataFrame, differences: pd.DataFrame, primary_acq: str) -> pd.DataFrame:
    """One row per stage (declaration order) at the primary acquisition: ``stage``, ``metric``,
    ``n_test``, ``floor``, ``classical``, ``learned`` (method and test mean [interval]),
    ``learned_vs_classical`` (paired difference [interval], "beats" where its interval excludes
    zero on the better side) and ``learned?`` (the verdict: yes / did not learn: reason / not checked)."""
    rows = []
    order = [s.name for s in ALL_STAGES]
    for stage_name in sorted(set(comparison["stage"]), key=lambda s: order.index(s) if s in order else len(order)):
        metric = PRIMARY.get(stage_name)
        t = comparison[(comparison["stage"] == stage_name) & (comparison["metric"] == metric)]
        if t.empty:
            continue
        learned = t[t["kind"] == LEARNED]
        d = differences[(differences["stage"] == stage_name) & (differences["metric"] == metric)
                        & differences["method_a"].isin(learned["method"])
                        & differences["method_b"].isin(t.loc[t["kind"] == CLASSICAL, "method"])]
        d = d[d["acq"] == primary_acq] if "acq" in d else d
        versus = []
        for r in d.itertuples():
            text = f"{r.method_a} − {r.method_b} {_with_interval(r.mean_difference, r.ci_low, r.ci_high)}"
            if str(r.better) == "True":
                text += " (beats)"
            versus.append(text)
        verdicts = []
        for r in learned.itertuples():
            if r.learned is True or str(r.learned) == "True":
                verdicts.append(f"{r.method}: yes")
            elif r.learned is False or str(r.learned) == "False":
                verdicts.append(f"{r.method}: {r.learned_reason}")
            else:
                verdicts.append(f"{r.method}: not checked")
        n = t["n_test"].max()
        rows.append({"stage": stage_name, "metric": metric + ("" if higher_is_better(metric) else " (lower is better)"),
                     "n_test": int(n) if pd.notna(n) else 0, "floor": _cell(t[t["kind"] == FLOOR]),
                     "classical": _cell(t[t["kind"] == CLASSICAL]), "learned": _cell(learned),
                     "learned_vs_classical": "; ".join(versus) or "—", "learned?": "; ".join(verdicts) or "—"})
    return pd.DataFrame(rows)


def _rst_table(table: pd.DataFrame) -> str:
    """A reStructuredText list-table of ``table`` (cells as text)."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [list(table.columns)] + table.astype(str).values.tolist():
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {c}" for c in row[1:]]
    return "\n".join(lines)


def overview_rst(comparison: pd.DataFrame, differences: pd.DataFrame, primary_acq: str,
                 budget_png: str | Path | None = None) -> str:
    """The report's first page (reStructuredText): the headline table, its small-sample caveat,
    and the error-budget figure (a PNG, embedded) when given and present."""
    table = headline(comparison, differences, primary_acq)
    n = int(table["n_test"].max()) if not table.empty else 0
    parts = [
        "The answer first: each stage's primary score on the test split at acquisition "
        f"**{primary_acq}**, floor, tuned classical and learned methods side by side "
        "(test mean [95 % bootstrap interval]).",
        "",
        _rst_table(table) if not table.empty else "No scores yet.",
        "",
    ]
    if n < MIN_N:
        parts += [f"**{n} test subjects: a demonstration, not evidence.** Below {MIN_N} test subjects no "
                  "interval and no \"beats\" is printed (docs/explanation/evidence.md).", ""]
    if budget_png is not None and Path(budget_png).is_file():
        data = base64.b64encode(Path(budget_png).read_bytes()).decode("ascii")
        # docutils refuses input lines over 10,000 characters; an image URI may span lines (it
        # drops their whitespace), so the data is wrapped at 76 characters
        uri = "data:image/png;base64," + data
        lines = [uri[i:i + 76] for i in range(0, len(uri), 76)]
        parts += ["**Error budget**: what each upstream step costs the downstream scores, from the oracle "
                  "(ideal inputs) to the fully sampled chain to each acceleration and reconstruction.", "",
                  f".. image:: {lines[0]}", *(f"   {line}" for line in lines[1:]), "   :width: 90%", ""]
    parts += ["Each test subject has a page with its images, labels, registration and brain age under its "
              "scores (`results/reports/ <results/reports/>`_, beside a report written in the working "
              "folder; a BIDS App's pages, ``sub-<label>.html``, sit beside its report). Below: the montages, "
              "training curves, per-subject scores and the workflow's provenance (menu on the left)."]
    return "\n".join(parts) + "\n"


def write_overview(comparison_tsv, differences_tsv, primary_acq: str, out_rst, budget_png=None) -> None:
    """Write :func:`overview_rst` of a run's ``comparison.tsv`` and ``differences.tsv``."""
    comparison = pd.read_csv(comparison_tsv, sep="\t")
    differences = pd.read_csv(differences_tsv, sep="\t")
    Path(out_rst).parent.mkdir(parents=True, exist_ok=True)
    Path(out_rst).write_text(overview_rst(comparison, differences, primary_acq, budget_png))
