"""What head motion costs downstream, with and without correction, from the test scores.

Every stage after reconstruction is also scored at the motion conditions
(:class:`mrichain.plan.conditions.MotionCondition`: ``severeR4`` the moving head corrected by the
motion stage's feed, ``severeR4none`` by its floor, ...). Against the same subjects' still
acquisition (``R4``) through the same chain, this module writes:

``motion_budget.tsv``
    per downstream stage (its primary metric), downstream method and motion condition: ``level``,
    ``motion_method``, ``acq`` (the still reference), ``n``, ``value`` with its 95 % interval, and
    ``harm``: the mean paired cost of the motion (a drop of a higher-is-better metric, a rise
    otherwise; 0 is no cost) with its interval ``harm_ci_low``/``harm_ci_high``.
``motion_limits.tsv``
    "how much motion can each correction absorb before segmentation Dice drops more than 0.02, or
    age MAE rises more than 1 y" (:data:`mrichain.scoring.budget.LIMITS`): per acquisition, motion
    method and downstream method, the levels in the config's order (mild to severe, as a config
    lists them), the harm at each, and ``max_level``: the last level whose mean harm (for
    ``max_level_ci``: the whole 95 % interval) stays within the threshold at it and every level
    before it; empty where even the first does not.

Intervals as the error budget's (:mod:`mrichain.scoring.budget`): bootstrap over test subjects,
paired, none below :data:`mrichain.scoring.aggregate.MIN_N` subjects.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mrichain.plan.conditions import MotionCondition
from mrichain.scoring.budget import (LIMITS, bars_with_intervals, harm_limit, mean_with_interval, metric_panels,
                                     paired_harm, per_subject, primary_metric)

BUDGET_COLUMNS = ["stage", "metric", "method", "condition", "level", "motion_method", "acq", "n", "value",
                  "ci_low", "ci_high", "harm", "harm_ci_low", "harm_ci_high"]
LIMIT_COLUMNS = ["acq", "motion_method", "stage", "method", "metric", "threshold", "levels", "max_level",
                 "max_level_ci", "harm_by_level"]


def motion_budget(scores: pd.DataFrame, conds: dict[str, MotionCondition], seed: int = 0) -> pd.DataFrame:
    """The ``motion_budget.tsv`` table (module docstring) from the score rows of every stage."""
    values = per_subject(scores)
    rows = []
    # the stages scored both at a motion condition and at its still acquisition (not the motion
    # stage itself, which runs only where the head moves)
    still = {cond.acq for cond in conds.values()}
    stages = [s for s in dict.fromkeys(s for (s, c, _, _) in values if c in conds)
              if any(s == s2 and c in still for (s2, c, _, _) in values)]
    for stage_name in stages:
        metric = primary_metric(stage_name)
        methods = list(dict.fromkeys(m for (s, c, m, k) in values if s == stage_name and k == metric and c in conds))
        for method in methods:
            for cond in conds.values():
                key = (stage_name, cond.label, method, metric)
                if key not in values:
                    continue
                row = {"stage": stage_name, "metric": metric, "method": method, "condition": cond.label,
                       "level": cond.level, "motion_method": cond.method, "acq": cond.acq,
                       **mean_with_interval(values[key], seed, ("motion",) + key)}
                ref = values.get((stage_name, cond.acq, method, metric))
                harm = (paired_harm(values[key], ref, metric, seed, ("motion harm",) + key) if ref is not None
                        else (np.nan, np.nan, np.nan))
                row.update(harm=harm[0], harm_ci_low=harm[1], harm_ci_high=harm[2])
                rows.append(row)
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


def motion_limits(budget: pd.DataFrame, levels: list[str], limits: dict[tuple[str, str], float] = LIMITS
                  ) -> pd.DataFrame:
    """The ``motion_limits.tsv`` table (module docstring) from :func:`motion_budget`'s; ``levels``
    in the config's order."""
    rows = []
    for (stage_name, metric), threshold in limits.items():
        sel = budget[(budget["stage"] == stage_name) & (budget["metric"] == metric)]
        for (acq, motion_method, method), g in sel.groupby(["acq", "motion_method", "method"], sort=False):
            g = g.set_index("level")
            at = [lv for lv in levels if lv in g.index]
            last, last_ci, harms = harm_limit(
                [(lv, *g.loc[lv, ["harm", "harm_ci_low", "harm_ci_high"]]) for lv in at], threshold)
            rows.append({"acq": acq, "motion_method": motion_method, "stage": stage_name, "method": method,
                         "metric": metric, "threshold": threshold, "levels": ",".join(at),
                         "max_level": at[last] if last >= 0 else "", "max_level_ci": at[last_ci] if last_ci >= 0 else "",
                         "harm_by_level": harms})
    return pd.DataFrame(rows, columns=LIMIT_COLUMNS)


def plot_motion_budget(budget: pd.DataFrame, path) -> Path:
    """One panel per downstream metric: the harm of each level (x) per motion method (bars), 95 %
    interval whiskers, for each stage's first classical method scored there (the tuned one that
    a lab would run; else its first method)."""
    from mrichain.plan.stages import CLASSICAL, kind
    from mrichain.scoring.figures import save_figure

    panels = metric_panels(budget, path, panel_size=(4.5, 3.8),
                           empty="No motion budget: no stage after reconstruction was scored at a motion condition")
    if panels is None:
        return Path(path)
    fig, axes, path = panels
    for ax, stage_name, metric, g in axes:
        methods_run = list(dict.fromkeys(g["method"]))
        shown = next((m for m in methods_run if kind(stage_name, m) == CLASSICAL), methods_run[0])
        g = g[g["method"] == shown]
        levels = bars_with_intervals(ax, g, "level", "motion_method", "harm", "harm_ci_low", "harm_ci_high")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(np.arange(len(levels)), levels, fontsize=8)
        ax.set_title(f"{stage_name} ({g['method'].iloc[0]}): harm in {metric}", fontsize=9)
        ax.legend(fontsize=7, title="correction", title_fontsize=7)
    return save_figure(fig, path, "What motion costs downstream, against the still acquisition (0: no cost)")


def write_motion_budget(score_files: list[str], conds: dict[str, MotionCondition], levels: list[str], out_budget,
                        out_limits, out_png, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Read the score tables, write both tables and the figure."""
    scores = pd.concat([pd.read_csv(f, sep="\t") for f in score_files], ignore_index=True)
    budget = motion_budget(scores, conds, seed)
    tables = {"budget": budget, "limits": motion_limits(budget, levels)}
    for key, out in (("budget", out_budget), ("limits", out_limits)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tables[key].to_csv(out, sep="\t", index=False, float_format="%.6g")
    plot_motion_budget(budget, out_png)
    return tables
