"""The error budget, the acceleration sweep and the acceleration limits, from the test scores.

Every downstream stage is scored at several *conditions* (:mod:`mrichain.plan.conditions`): the
oracle (ideal input), each acquisition through the feed methods (``R1``, ``R4``), and each
acquisition reconstructed by every other reconstruction method (``R4cs``, ``R4varnet``). From the
per-subject scores (the ``results/metrics/*.tsv`` files) this module writes:

``error_budget.tsv``
    for each stage that runs at the oracle (segmentation, registration, brain age), its primary
    metric (Dice, Dice, MAE in years) per method and condition: ``value`` (test mean),
    ``ci_low``/``ci_high`` (95 % bootstrap interval), ``n``, and what is lost where: ``vs`` (the
    condition it is compared with: the oracle for the fully sampled chain, the fully sampled
    chain for every acceleration and reconstruction method), ``loss`` (the mean paired
    difference value - value at ``vs``) and its interval ``loss_ci_low``/``loss_ci_high``.
``sweep.tsv``
    for every stage after reconstruction, its primary metric at each (acceleration,
    reconstruction method), per downstream method: the columns ``acceleration``,
    ``recon_method``, ``stage``, ``method``, ``metric``, ``value``, ``ci_low``, ``ci_high``, ``n``.
``acceleration_limits.tsv``
    "how far can I accelerate with each reconstruction method before segmentation Dice drops
    more than 0.02 below fully sampled, or age MAE rises more than 1 y" (:data:`LIMITS`): per
    reconstruction method and downstream method, the largest acceleration whose mean harm (and,
    for ``max_acceleration_ci``, whose whole 95 % interval of the paired harm) stays within the
    threshold at that and every smaller acceleration of the sweep. The reference is the fully
    sampled acquisition through the feed methods (a lab's unaccelerated protocol), per subject.

Intervals are :func:`mrichain.scoring.aggregate.interval` (bootstrap over test subjects, seeded per
row), paired where two conditions are compared (the same subjects at both); below
:data:`mrichain.scoring.aggregate.MIN_N` subjects there is none (NaN), and ``max_acceleration_ci`` is NaN.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mrichain.scoring.aggregate import RENAME, interval, scores_on_test_split
from mrichain.plan.conditions import ORACLE, Condition
from mrichain.scoring.metrics import higher_is_better

LIMITS: dict[tuple[str, str], float] = {("segment", "dice_mean"): 0.02, ("predict", "mae_years"): 1.0}
"""(stage, metric) -> the largest tolerated harm against fully sampled (Dice drop; MAE rise in years)."""

BUDGET_COLUMNS = ["stage", "metric", "method", "condition", "acceleration", "recon_method", "n", "value",
                  "ci_low", "ci_high", "vs", "loss", "loss_ci_low", "loss_ci_high"]
SWEEP_COLUMNS = ["acceleration", "recon_method", "stage", "method", "metric", "value", "ci_low", "ci_high", "n"]
LIMIT_COLUMNS = ["recon_method", "stage", "method", "metric", "threshold", "reference", "accelerations",
                 "max_acceleration", "max_acceleration_ci", "harm_by_acceleration"]


def primary_metric(stage_name: str) -> str:
    from mrichain.plan.stages import stage

    m = stage(stage_name).primary_metric
    return RENAME.get(m, m)


def per_subject(scores: pd.DataFrame) -> dict[tuple[str, str, str, str], pd.Series]:
    """(stage, condition, method, metric) -> value by test subject."""
    test = scores_on_test_split(scores)
    return {k: g.groupby("subject")["value"].mean() for k, g in test.groupby(["stage", "acq", "method", "metric"])}


def mean_with_interval(values: pd.Series, seed: int, key: tuple) -> dict:
    v = values.dropna().to_numpy(dtype=float)
    low, high = interval(v, seed, key)
    return {"n": len(v), "value": float(np.mean(v)) if len(v) else np.nan, "ci_low": low, "ci_high": high}


def paired_difference(a: pd.Series, b: pd.Series, seed: int, key: tuple) -> tuple[float, float, float]:
    """Mean of a - b over the subjects both have, and its paired 95 % interval."""
    d = (a - b).dropna().to_numpy(dtype=float)
    if len(d) == 0:
        return np.nan, np.nan, np.nan
    low, high = interval(d, seed, key)
    return float(np.mean(d)), low, high


def _ordered(conds: dict[str, Condition], feed: str) -> list[Condition]:
    """Oracle, then by acceleration, the feed's reconstruction first at each."""
    rest = [c for c in conds.values() if not c.oracle]
    rest.sort(key=lambda c: (c.acceleration, c.recon != feed))
    return ([conds[ORACLE]] if ORACLE in conds else []) + rest


def paired_harm(a: pd.Series, b: pd.Series, metric: str, seed: int, key: tuple) -> tuple[float, float, float]:
    """What ``a`` costs against the reference ``b`` on ``metric``, paired over the subjects both
    have: the mean harm (the drop of a higher-is-better metric, the rise of a lower-is-better one;
    0 is no cost) and its 95 % interval (low, high), from :func:`paired_difference`."""
    sign = -1.0 if higher_is_better(metric) else 1.0
    mean, low, high = paired_difference(a, b, seed, key)
    # + 0.0: no "-0" where the harm is exactly zero (the reference itself)
    return (sign * mean + 0.0, *(v + 0.0 for v in sorted((sign * low, sign * high))))


def fully_sampled(conds: dict[str, Condition]) -> str | None:
    """The label of the fully sampled acquisition through the feed methods (None if not configured)."""
    return next((c.label for c in conds.values() if not c.oracle and not c.derived and c.acceleration == 1.0), None)


def error_budget(scores: pd.DataFrame, conds: dict[str, Condition], feed: str, seed: int = 0) -> pd.DataFrame:
    values = per_subject(scores)
    full = fully_sampled(conds)
    oracle_stages = list(dict.fromkeys(s for (s, c, _, _) in values if c == ORACLE))
    rows = []
    for stage_name in oracle_stages:
        metric = primary_metric(stage_name)
        methods = list(dict.fromkeys(m for (s, c, m, k) in values if s == stage_name and k == metric))
        for method in methods:
            for cond in _ordered(conds, feed):
                key = (stage_name, cond.label, method, metric)
                if key not in values:
                    continue
                row = {"stage": stage_name, "metric": metric, "method": method, "condition": cond.label,
                       "acceleration": cond.acceleration, "recon_method": cond.recon or "",
                       **mean_with_interval(values[key], seed, ("budget",) + key)}
                vs = ORACLE if cond.label == full else (full if not cond.oracle else None)
                ref = values.get((stage_name, vs, method, metric)) if vs else None
                if ref is not None:
                    loss = paired_difference(values[key], ref, seed, ("loss",) + key + (vs,))
                else:
                    vs, loss = None, (np.nan, np.nan, np.nan)
                row.update(vs=vs or "", loss=loss[0], loss_ci_low=loss[1], loss_ci_high=loss[2])
                rows.append(row)
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


def sweep(scores: pd.DataFrame, conds: dict[str, Condition], feed: str, seed: int = 0) -> pd.DataFrame:
    """Primary metric of every stage scored at a sweep condition, per (acceleration, recon method)."""
    values = per_subject(scores)
    values = {k: v for k, v in values.items() if k[1] in conds}
    sweep_stages = list(dict.fromkeys(s for (s, c, _, _) in values if conds[c].derived and not conds[c].oracle))
    rows = []
    for stage_name in sweep_stages:
        metric = primary_metric(stage_name)
        # the methods that run at the sweep conditions (the feed of a feed stage; all of a leaf stage)
        swept = {m for (s, c, m, k) in values
                 if s == stage_name and k == metric and conds[c].derived and not conds[c].oracle}
        for cond in _ordered(conds, feed):
            if cond.oracle:
                continue
            for (s, c, method, k), v in values.items():
                if s == stage_name and c == cond.label and k == metric and method in swept:
                    rows.append({"acceleration": cond.acceleration, "recon_method": cond.recon, "stage": stage_name,
                                 "method": method, "metric": metric, **mean_with_interval(v, seed, ("sweep", s, c, method, k))})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def harm_limit(steps: list[tuple[str, float, float, float]], threshold: float) -> tuple[int, int, str]:
    """How far along ``steps`` (mildest first: ``(label, harm, ci_low, ci_high)``) the harm stays
    within ``threshold`` at every step so far: the index of the last such step by the mean harm and
    by the whole interval (-1: not even the first), and the harms as text
    (``"R4: +0.012 [+0.003, +0.02]; ..."``; no interval where there is none)."""
    last = last_ci = -1
    ok = ok_ci = True
    text = []
    for i, (label, h, low, high) in enumerate(steps):
        ci = f" [{low:+.3g}, {high:+.3g}]" if np.isfinite(high) else ""
        text.append(f"{label}: {h:+.3g}{ci}")
        ok = ok and bool(h <= threshold)
        ok_ci = ok_ci and bool(np.isfinite(high) and high <= threshold)
        last = i if ok else last
        last_ci = i if ok_ci else last_ci
    return last, last_ci, "; ".join(text)


def acceleration_limits(scores: pd.DataFrame, conds: dict[str, Condition], feed: str, seed: int = 0,
                        limits: dict[tuple[str, str], float] = LIMITS) -> pd.DataFrame:
    values = per_subject(scores)
    full = fully_sampled(conds)
    rows = []
    if full is None:
        return pd.DataFrame(rows, columns=LIMIT_COLUMNS)
    recons = list(dict.fromkeys(c.recon for c in _ordered(conds, feed) if not c.oracle))
    for (stage_name, metric), threshold in limits.items():
        methods = list(dict.fromkeys(m for (s, c, m, k) in values if s == stage_name and k == metric))
        for recon in recons:
            for method in methods:
                ref = values.get((stage_name, full, method, metric))
                at = sorted((c for c in conds.values() if not c.oracle and c.recon == recon
                             and (stage_name, c.label, method, metric) in values), key=lambda c: c.acceleration)
                if ref is None or not at:
                    continue
                steps = [(f"R{c.acceleration:g}",
                          *paired_harm(values[(stage_name, c.label, method, metric)], ref, metric, seed,
                                       ("limit", stage_name, c.label, method, metric))) for c in at]
                last, last_ci, harms = harm_limit(steps, threshold)
                rows.append({"recon_method": recon, "stage": stage_name, "method": method, "metric": metric,
                             "threshold": threshold, "reference": full,
                             "accelerations": ",".join(f"{c.acceleration:g}" for c in at),
                             "max_acceleration": at[last].acceleration if last >= 0 else np.nan,
                             "max_acceleration_ci": at[last_ci].acceleration if last_ci >= 0 else np.nan,
                             "harm_by_acceleration": harms})
    return pd.DataFrame(rows, columns=LIMIT_COLUMNS)


def _pyplot(path) -> tuple:
    """matplotlib's pyplot on the Agg backend (no display), and ``path`` with its folder made."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return plt, path


def _empty_figure(path: Path, message: str) -> Path:
    """A figure that says why there is nothing to plot (the report still links one)."""
    plt, path = _pyplot(path)
    fig, ax = plt.subplots(figsize=(5.5, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def metric_panels(table: pd.DataFrame, path, *, empty: str, panel_size: tuple[float, float]):
    """A figure of one panel per (stage, metric) of ``table`` (side by side, ``panel_size`` inches
    each): ``(fig, [(ax, stage, metric, rows)], path)``, written by
    :func:`mrichain.scoring.figures.save_figure`; None for a table without rows, after
    writing a figure that says so (``empty``) at ``path``."""
    plt, path = _pyplot(path)
    if table.empty:
        _empty_figure(path, empty)
        return None
    groups = list(table.groupby(["stage", "metric"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(panel_size[0] * len(groups), panel_size[1]), squeeze=False)
    return fig, [(ax, st, metric, g) for ax, ((st, metric), g) in zip(axes[0], groups)], path


def bars_with_intervals(ax, table: pd.DataFrame, x: str, group: str, value: str, low: str, high: str) -> list:
    """Grouped bars on ``ax``: one group per value of column ``x`` (in order of appearance), one
    bar per value of ``group`` within it (labelled, for a legend), height ``value`` with 95 %
    interval whiskers from ``low`` to ``high`` (none where they are NaN). Returns the x labels."""
    xs = list(dict.fromkeys(table[x]))
    groups = list(dict.fromkeys(table[group]))
    width = 0.8 / max(len(groups), 1)
    for i, name in enumerate(groups):
        t = table[table[group] == name].groupby(x).first().reindex(xs)
        pos = np.arange(len(xs)) + (i - (len(groups) - 1) / 2) * width
        err = np.vstack([t[value] - t[low], t[high] - t[value]]).clip(min=0)
        ax.bar(pos, t[value], width, label=name, yerr=np.nan_to_num(err), capsize=2)
    return xs


def plot_error_budget(budget: pd.DataFrame, path) -> Path:
    """One panel per downstream metric: a bar per condition for each method, 95 % interval whiskers."""
    from mrichain.scoring.figures import save_figure

    panels = metric_panels(budget, path, panel_size=(5.5, 4.2),
                           empty="No error budget: the config runs no oracle (error_budget.oracle: false)")
    if panels is None:
        return Path(path)
    fig, axes, path = panels
    for ax, stage_name, metric, g in axes:
        conditions = bars_with_intervals(ax, g, "condition", "method", "value", "ci_low", "ci_high")
        ax.set_xticks(np.arange(len(conditions)), conditions, rotation=45, ha="right", fontsize=8)
        lo = np.nanmin(np.r_[g["ci_low"], g["value"]])
        hi = np.nanmax(np.r_[g["ci_high"], g["value"]])
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo:  # the differences, not the distance from zero
            ax.set_ylim(lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo))
        ax.set_title(f"{stage_name}: {metric} (axis not from 0)", fontsize=10)
        ax.legend(fontsize=7)
    return save_figure(fig, path, "Error budget: oracle -> fully sampled chain -> each acceleration and reconstruction")


def plot_sweep(table: pd.DataFrame, path) -> Path:
    """One panel per downstream metric against acceleration: a line per reconstruction method
    (colour) and downstream method (line style), with its 95 % interval band; the fully sampled
    chain (the feed's R1 point, the reference of every method) as a grey dotted line across."""
    from mrichain.scoring.figures import save_figure

    panels = metric_panels(table, path, panel_size=(4.5, 4.0),
                           empty="No acceleration sweep: the config runs none (error_budget.sweep: false)")
    if panels is None:
        return Path(path)
    fig, axes, path = panels
    colours = {r: f"C{i}" for i, r in enumerate(dict.fromkeys(table["recon_method"]))}
    styles = ["-", "--", ":", "-."]
    for ax, stage_name, metric, g in axes:
        for j, method in enumerate(dict.fromkeys(g["method"])):
            for recon, t in g[g["method"] == method].groupby("recon_method", sort=False):
                t = t.sort_values("acceleration")
                ax.plot(t["acceleration"], t["value"], styles[j % len(styles)], marker="o", ms=3,
                        color=colours[recon], label=f"{recon} -> {method}")
                ax.fill_between(t["acceleration"], t["ci_low"], t["ci_high"], color=colours[recon], alpha=0.15)
            full = g[(g["method"] == method) & (g["acceleration"] == 1.0)]
            if len(full):
                ax.axhline(full["value"].iloc[0], color="0.5", ls=":", lw=0.8)
        ax.set_xlabel("acceleration R")
        ax.set_title(f"{stage_name}: {metric}", fontsize=10)
        ax.legend(fontsize=6)
    return save_figure(fig, path)


def write_budget(score_files: list[str], conds: dict[str, Condition], feed: str, out_budget, out_sweep,
                 out_limits, out_budget_png, out_sweep_png, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Read the score tables and write the three tables and the two figures."""
    scores = pd.concat([pd.read_csv(f, sep="\t") for f in score_files], ignore_index=True)
    tables = {"budget": error_budget(scores, conds, feed, seed), "sweep": sweep(scores, conds, feed, seed),
              "limits": acceleration_limits(scores, conds, feed, seed)}
    for key, out in (("budget", out_budget), ("sweep", out_sweep), ("limits", out_limits)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tables[key].to_csv(out, sep="\t", index=False, float_format="%.6g")
    plot_error_budget(tables["budget"], out_budget_png)
    plot_sweep(tables["sweep"], out_sweep_png)
    return tables
