"""Aggregate per-subject stage scores into ``results/metrics.json``, intervals and paired differences.

``metrics.json`` is ``{stage: {method: {metric: value}}}``: the mean over the test split at the
primary acquisition (the first configured acceleration; a stage scored only elsewhere, the MR
fingerprinting branch, at its own ``acq``: :func:`primary_rows`), plus ``n_test``. Brain-age absolute
errors become ``mae_years``. ``metrics_by_acq.json`` is ``{acq: {stage: {method: {metric}}}}``
for every acquisition. The tables:

``summary.tsv``
    one row per (acq, stage, method, metric): the test mean ``value``, ``n_test`` and its 95 %
    bootstrap interval ``ci_low``, ``ci_high`` over the test subjects.
``differences.tsv``
    one row per (acq, stage, metric, method_a, method_b): every non-floor method minus each floor
    of its stage, and every learned method minus every classical method, on the test subjects
    that have both values: ``n``, ``mean_difference`` (a - b), its 95 % paired bootstrap interval,
    ``higher_is_better`` (of the metric) and ``better`` (the interval lies entirely on the better
    side of zero: DESIGN.md's "beats").
``comparison.tsv``
    the methods of each stage side by side at the primary acquisition: the ``summary.tsv`` columns
    with the method's ``kind`` (floor / classical / learned, from :func:`mrichain.stages.kind`),
    plus its gain over the stage's floor: ``floor``, ``gain`` (mean paired difference method -
    floor), ``gain_ci_low``, ``gain_ci_high`` and ``beats_floor``. Floors have no gain.

Intervals (:func:`mean_interval`): ``scipy.stats.bootstrap`` of the mean, BCa (second-order
accurate; corrects the bias and skew of seconds, HD95 and absolute errors), 9999 resamples of
subjects. Small samples are handled without pretending:

- fewer than 2 finite values, or a non-finite one (e.g. an infinite PSNR of an exact
  reconstruction): no interval (NaN);
- all values equal: the degenerate interval ``[v, v]`` (every resample has that mean; BCa is
  undefined there and scipy would return NaN with a warning);
- BCa undefined for another reason (heavy ties, e.g. 0/1 coverage values): the percentile
  interval instead.

With n = 2 any bootstrap interval of the mean is the range of the two values, and at small n it
covers less than 95 %: a "better" on a handful of test subjects is weak evidence.

Cohort-level rows (split ``all``, e.g. the fit's seconds of a cohort-level method) get no interval
and pair with nothing. Every interval draws from its own stream, seeded by ``seed`` and the row's
key (acq, stage, method(s), metric): the tables are reproducible, and one row's interval does not
change when methods or metrics are added elsewhere.

The floor of a stage's comparison row, where the stage has several (e.g. ``identity`` and
``affine`` in registration), is the strongest one on that metric: the best test mean at the
primary acquisition by the metric's direction (first declared where the direction is unknown).
A method has to beat the best trivial baseline, not the weakest.
"""
from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from mrichain.io import save_json
from mrichain.metrics import higher_is_better

RENAME = {"abs_error_years": "mae_years", "in_interval": "interval_coverage"}

CONFIDENCE = 0.95
N_RESAMPLES = 9999

KEYS = ["acq", "stage", "method", "metric"]


def _rng(seed: int, *key: str) -> np.random.Generator:
    """One independent stream per row: the seed and a stable hash of the row's key."""
    return np.random.default_rng([int(seed), zlib.crc32("|".join(map(str, key)).encode())])


def mean_interval(values, seed: int = 0, key: tuple = (), confidence: float = CONFIDENCE,
                  n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of ``values`` (NaNs dropped); see the module docstring
    for the method and the small-sample rules. For a paired difference, pass the per-subject
    differences: resampling subjects resamples their pairs (``paired=True``)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2 or not np.isfinite(x).all():
        return (np.nan, np.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    from scipy.stats import bootstrap

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's DegenerateDataWarning: handled by the fallback
            res = bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                            method=method, vectorized=True, batch=1000, rng=_rng(seed, *key))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return (low, high)
    return (np.nan, np.nan)


def _test_scores(scores: pd.DataFrame) -> pd.DataFrame:
    test = scores[scores["split"] == "test"].copy()
    test["metric"] = test["metric"].replace(RENAME)
    return test


def summarise(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean over the test split with its bootstrap interval (cohort-level rows such as a fit's
    seconds are kept as they are, without an interval)."""
    test = scores[scores["split"].isin(["test", "all"])].copy()
    test["metric"] = test["metric"].replace(RENAME)
    summary = (
        test.groupby(KEYS, sort=False)["value"]
        .agg(value="mean", n_test="count")
        .reset_index()
    )
    values = {k: g["value"].to_numpy() for k, g in test[test["split"] == "test"].groupby(KEYS, sort=False)}
    cohort = {k for k, _ in test[test["split"] == "all"].groupby(KEYS, sort=False)}
    ci = [mean_interval(values[k], seed, k) if k in values and k not in cohort else (np.nan, np.nan)
          for k in summary[KEYS].itertuples(index=False, name=None)]
    summary["ci_low"] = [c[0] for c in ci]
    summary["ci_high"] = [c[1] for c in ci]
    summary = summary[["acq", "stage", "method", "metric", "value", "n_test", "ci_low", "ci_high"]]
    return summary


def _pairs(methods: list[str], kinds: dict[str, str]) -> list[tuple[str, str]]:
    """(a, b): every non-floor method minus each floor, every learned minus every classical."""
    from mrichain.stages import CLASSICAL, FLOOR, LEARNED

    floors = [m for m in methods if kinds[m] == FLOOR]
    others = [m for m in methods if kinds[m] in (CLASSICAL, LEARNED)]
    pairs = [(a, b) for a in others for b in floors]
    pairs += [(a, b) for a in methods if kinds[a] == LEARNED for b in methods if kinds[b] == CLASSICAL]
    return pairs


DIFFERENCE_COLUMNS = ["acq", "stage", "metric", "method_a", "method_b", "kind_a", "kind_b", "n",
                      "mean_difference", "ci_low", "ci_high", "higher_is_better", "better"]


def differences(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Paired differences a - b on the test subjects that have both values (module docstring)."""
    from mrichain.stages import kind

    test = _test_scores(scores)
    rows = []
    for (acq, stage_name), g in test.groupby(["acq", "stage"], sort=False):
        methods = list(dict.fromkeys(g["method"]))
        kinds = {m: kind(stage_name, m) for m in methods}
        pairs = _pairs(methods, kinds)
        if not pairs:
            continue
        wide = {metric: t.pivot_table(index="subject", columns="method", values="value", aggfunc="mean")
                for metric, t in g.groupby("metric", sort=False)}
        for metric, table in wide.items():
            direction = higher_is_better(metric)
            for a, b in pairs:
                if a not in table or b not in table:
                    continue
                d = (table[a] - table[b]).dropna().to_numpy()
                if len(d) == 0:
                    continue
                with np.errstate(invalid="ignore"):
                    mean = float(np.mean(d))
                low, high = mean_interval(d, seed, (acq, stage_name, a, b, metric))
                if direction is None:
                    better = None
                elif direction:
                    better = bool(low > 0)
                else:
                    better = bool(high < 0)
                rows.append(dict(acq=acq, stage=stage_name, metric=metric, method_a=a, method_b=b,
                                 kind_a=kinds[a], kind_b=kinds[b], n=len(d), mean_difference=mean,
                                 ci_low=low, ci_high=high, higher_is_better=direction, better=better))
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def nest(summary: pd.DataFrame) -> dict:
    out: dict = {}
    for r in summary.itertuples():
        out.setdefault(r.stage, {}).setdefault(r.method, {})[r.metric] = float(r.value)
    for (stage, method), g in summary.groupby(["stage", "method"]):
        out[stage][method]["n_test"] = int(g["n_test"].max())
    return out


def strongest_floor(summary: pd.DataFrame, stage_name: str, metric: str, floors: list[str]) -> str | None:
    """The floor with the best test mean on ``metric`` (``summary`` at one acquisition); the first
    floor scored on it where the metric has no direction; None where no floor is scored on it."""
    rows = summary[(summary["stage"] == stage_name) & (summary["metric"] == metric)
                   & summary["method"].isin(floors)]
    rows = rows[rows["value"].notna()]
    if rows.empty:
        return None
    direction = higher_is_better(metric)
    if direction is None:
        return str(rows["method"].iloc[0])
    best = rows["value"].idxmax() if direction else rows["value"].idxmin()
    return str(rows.loc[best, "method"])


def comparison(summary: pd.DataFrame, primary_acq: str, diffs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Methods side by side at the primary acquisition, with their kind and gain over the floor."""
    from mrichain.stages import FLOOR, kind

    table = primary_rows(summary, primary_acq).drop(columns=["acq"]).copy()
    table.insert(2, "kind", [kind(s, m) for s, m in zip(table["stage"], table["method"])])
    if diffs is None:
        diffs = pd.DataFrame(columns=DIFFERENCE_COLUMNS)
    diffs = primary_rows(diffs, primary_acq).set_index(["stage", "metric", "method_a", "method_b"])
    floors = {s: list(dict.fromkeys(g.loc[g["kind"] == FLOOR, "method"])) for s, g in table.groupby("stage")}
    extra = []
    for r in table.itertuples(index=False):
        floor = None if r.kind == FLOOR else strongest_floor(table, r.stage, r.metric, floors.get(r.stage, []))
        key = (r.stage, r.metric, r.method, floor)
        if floor is not None and key in diffs.index:
            d = diffs.loc[key]
            extra.append((floor, d["mean_difference"], d["ci_low"], d["ci_high"], d["better"]))
        else:
            extra.append((floor, np.nan, np.nan, np.nan, None))
    for i, col in enumerate(["floor", "gain", "gain_ci_low", "gain_ci_high", "beats_floor"]):
        table[col] = [e[i] for e in extra]
    return table


def primary_rows(table: pd.DataFrame, primary_acq: str) -> pd.DataFrame:
    """Rows at the primary acquisition, and of every stage scored only elsewhere at its first
    ``acq`` (the MR fingerprinting branch, ``acq`` MRF): what ``metrics.json`` and the comparison
    show."""
    at_primary = set(table.loc[table["acq"] == primary_acq, "stage"])
    first = {st: g["acq"].iloc[0] for st, g in table.groupby("stage", sort=False) if st not in at_primary}
    elsewhere = np.array([first.get(st) == a for st, a in zip(table["stage"], table["acq"])], dtype=bool)
    keep = (table["acq"] == primary_acq).to_numpy() | elsewhere
    return table[keep]


def aggregate(score_files: list[str], primary_acq: str, out_metrics, out_by_acq, out_summary,
              out_comparison=None, out_differences=None, seed: int = 0) -> dict:
    scores = pd.concat([pd.read_csv(f, sep="\t") for f in score_files], ignore_index=True)
    summary = summarise(scores, seed)
    by_acq = {acq: nest(g) for acq, g in summary.groupby("acq", sort=False)}
    metrics = nest(primary_rows(summary, primary_acq))
    save_json(metrics, out_metrics)
    save_json(by_acq, out_by_acq)
    Path(out_summary).parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_summary, sep="\t", index=False, float_format="%.6g")
    if out_comparison is not None or out_differences is not None:
        diffs = differences(scores, seed)
        if out_differences is not None:
            Path(out_differences).parent.mkdir(parents=True, exist_ok=True)
            diffs.to_csv(out_differences, sep="\t", index=False, float_format="%.6g")
        if out_comparison is not None:
            Path(out_comparison).parent.mkdir(parents=True, exist_ok=True)
            comparison(summary, primary_acq, diffs).to_csv(out_comparison, sep="\t", index=False,
                                                           float_format="%.6g")
    return metrics
