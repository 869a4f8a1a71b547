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
    side of zero: "beats").
``comparison.tsv``
    the methods of each stage side by side at the primary acquisition: the ``summary.tsv`` columns
    with the method's ``kind`` (floor / classical / learned, from :func:`mrichain.plan.stages.kind`),
    plus its gain over the stage's floor: ``floor``, ``gain`` (mean paired difference method -
    floor), ``gain_ci_low``, ``gain_ci_high`` and ``beats_floor``. Floors have no gain.

``differences.tsv`` and ``comparison.tsv`` end with ``learned`` and ``learned_reason`` (of
``method_a`` in the differences): the verdict of :func:`learned_checks` for a learned method
(true / false, empty where nothing could be checked) and its evidence in words; empty for floors
and classical methods. A method that did not learn never beats anything: its ``better`` and
``beats_floor`` are false whatever its interval says. ``metrics.json`` (and
``metrics_by_acq.json``) carry the verdict as ``learned`` beside a learned method's scores.

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
covers far less than 95 %. So the tables print an interval, and a "better" / "beats", only from
:data:`MIN_N` test subjects (paired subjects for a difference) on (:func:`interval`); below it
the value stands with an empty interval and its ``n_test`` / ``n``, and the table is a
demonstration of the pipeline, not evidence. :data:`MIN_N` = 10 comes from the coverage of the
95 % percentile bootstrap interval of a mean (4,000 simulated samples per cell, 1,999 resamples):

=====  ======  ===========  ==============
n      normal  exponential  lognormal(σ=1)
=====  ======  ===========  ==============
2      0.51    0.45         0.43
3      0.75    0.71         0.65
5      0.84    0.79         0.72
8      0.89    0.85         0.78
10     0.89    0.87         0.79
15     0.92    0.89         0.85
20     0.93    0.91         0.86
=====  ======  ===========  ==============

Below 10 even normal data are covered well under 90 % of the time and skewed ones (seconds,
HD95, absolute errors) under 80 %; from 10 on the shortfall is a few points for normal data and
shrinks with n (BCa, used here, is no better at these n). The bench's 20 test subjects keep
their intervals, computed exactly as below :data:`MIN_N` was introduced (same streams, same
numbers).

Cohort-level rows (split ``all``, e.g. the fit's seconds of a cohort-level method) get no interval
and pair with nothing. Every interval draws from its own stream, seeded by ``seed`` and the row's
key (acq, stage, method(s), metric): the tables are reproducible, and one row's interval does not
change when methods or metrics are added elsewhere.

The floor of a stage's comparison row, where the stage has several (e.g. ``identity`` and
``affine`` in registration), is the strongest one on that metric: the best test mean at the
primary acquisition by the metric's direction (first declared where the direction is unknown).
A method has to beat the best trivial baseline, not the weakest.

Did it learn (:func:`learned_checks`), per learned method and acquisition, from the scorers'
``check_`` rows (:mod:`mrichain.scoring.evaluate`) over the test subjects. It did not learn when any of
these holds; it learned when at least one of the first five could be checked and none holds:

- reconstruct, denoise: its output moves the floor's (zero-filled; the undenoised input) by less
  than :data:`MIN_CHANGE_OF_ERROR` (5 %) of the floor's own mean absolute error against the
  truth, in the brain. By the triangle inequality its error can then be at most 5 % below the
  floor's: an identity (an untrained identity-start VarNet, a DnCNN that learned to pass its
  input) gives 0, while a denoiser that removes a third of the noise moves the input by about a
  third of its error;
- register: its warped labels differ from a floor's (identity, affine) in less than
  :data:`MIN_LABEL_CHANGE` (1 %) of the labelled voxels. Nearest-neighbour label warping leaves
  every label in place for displacements below half a voxel (an identity-bound VoxelMorph moved
  val pairs by at most 0.43 voxel), while the simulated warps reach 4 voxels and change a tenth of
  the labels or more;
- segment: on some test subject its labels hold fewer than :data:`MIN_CLASSES` (2) tissue
  classes covering 1 % of the brain each: a constant or one-class output;
- predict: over the held-out subjects (val and test: the model fitted neither; more subjects
  than the test split alone, and the val split's ages are as spread), the SD of its predictions
  is below :data:`MIN_SPREAD_RATIO` (0.2) of the SD of their ages, or their Pearson correlation
  with the ages is below :data:`MIN_AGE_CORRELATION` (0.2; checked with at least
  :data:`MIN_CORRELATION_N` (5) held-out subjects: at a condition run on the test split alone,
  e.g. 2 subjects, r is +-1 whatever the model). A least-squares predictor's spread
  ratio is its correlation with age, so below 0.2 it explains under 4 % of the age variance; a
  constant gives 0, an SFCN collapsed onto the train mean ~0.03. A model not fitted by least
  squares can spread without following age: an SFCN of the benchmark config spread 0.25 of the
  ages' SD at r = 0.01 over 38 held-out subjects (MAE the mean predictor's), which the
  correlation catches; working models there reach r = 0.89 (linear) and 0.92 (MLP);
- its model card says ``beats_start`` false: no epoch's val score beat the untrained network's
  (a missing key is unknown, not false);
- its test mean on the stage's primary metric is not better than the strongest floor's
  (a learned method that does not beat the floor has learned nothing); this can only
  fail a method, never certify one.

The thresholds are far from both a constant or identity output (0) and what a working model
does, so neither n nor the noise of a small test split moves a verdict across them.
"""
from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from mrichain.io import save_json
from mrichain.scoring.metrics import CHECK_PREFIX, TABLE_NAMES, higher_is_better

RENAME = TABLE_NAMES
"""Per-subject score names -> the tables' (:data:`mrichain.scoring.metrics.METRICS`)."""

CONFIDENCE = 0.95
N_RESAMPLES = 9999
MIN_N = 10
"""Fewest test subjects (paired, for a difference) with which an interval and a "beats" are
printed (module docstring: the bootstrap's coverage below it)."""

MIN_CHANGE_OF_ERROR = 0.05
MIN_LABEL_CHANGE = 0.01
MIN_CLASSES = 2
MIN_SPREAD_RATIO = 0.2
MIN_AGE_CORRELATION = 0.2
MIN_CORRELATION_N = 5
"""The "did it learn" thresholds (module docstring)."""

KEYS = ["acq", "stage", "method", "metric"]
CHECK_COLUMNS = ["acq", "stage", "method", "learned", "learned_reason"]


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


def interval(values, seed: int = 0, key: tuple = (), min_n: int = MIN_N) -> tuple[float, float]:
    """:func:`mean_interval`, or no interval (NaN) with fewer than ``min_n`` values (NaNs not
    counted): what the tables print."""
    x = np.asarray(values, dtype=float)
    if np.count_nonzero(~np.isnan(x)) < min_n:
        return (np.nan, np.nan)
    return mean_interval(x, seed, key)


def _scored(scores: pd.DataFrame) -> pd.DataFrame:
    """The score rows, without the "did it learn" evidence (``check_`` metrics)."""
    return scores[~scores["metric"].astype(str).str.startswith(CHECK_PREFIX)]


def scores_on_test_split(scores: pd.DataFrame) -> pd.DataFrame:
    """The score rows of the test split (no "did it learn" evidence), metrics under their table names (:data:`RENAME`)."""
    scores = _scored(scores)
    test = scores[scores["split"] == "test"].copy()
    test["metric"] = test["metric"].replace(RENAME)
    return test


def summarise(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean over the test split with its bootstrap interval (cohort-level rows such as a fit's
    seconds are kept as they are, without an interval)."""
    scores = _scored(scores)
    test = scores[scores["split"].isin(["test", "all"])].copy()
    test["metric"] = test["metric"].replace(RENAME)
    summary = (
        test.groupby(KEYS, sort=False)["value"]
        .agg(value="mean", n_test="count")
        .reset_index()
    )
    values = {k: g["value"].to_numpy() for k, g in test[test["split"] == "test"].groupby(KEYS, sort=False)}
    cohort = {k for k, _ in test[test["split"] == "all"].groupby(KEYS, sort=False)}
    ci = [interval(values[k], seed, k) if k in values and k not in cohort else (np.nan, np.nan)
          for k in summary[KEYS].itertuples(index=False, name=None)]
    summary["ci_low"] = [c[0] for c in ci]
    summary["ci_high"] = [c[1] for c in ci]
    summary = summary[["acq", "stage", "method", "metric", "value", "n_test", "ci_low", "ci_high"]]
    return summary


def _pairs(methods: list[str], kinds: dict[str, str]) -> list[tuple[str, str]]:
    """(a, b): every non-floor method minus each floor, every learned minus every classical."""
    from mrichain.plan.stages import CLASSICAL, FLOOR, LEARNED

    floors = [m for m in methods if kinds[m] == FLOOR]
    others = [m for m in methods if kinds[m] in (CLASSICAL, LEARNED)]
    pairs = [(a, b) for a in others for b in floors]
    pairs += [(a, b) for a in methods if kinds[a] == LEARNED for b in methods if kinds[b] == CLASSICAL]
    return pairs


DIFFERENCE_COLUMNS = ["acq", "stage", "metric", "method_a", "method_b", "kind_a", "kind_b", "n",
                      "mean_difference", "ci_low", "ci_high", "higher_is_better", "better", "learned",
                      "learned_reason"]


def _verdicts(checks: pd.DataFrame | None) -> dict[tuple[str, str, str], tuple]:
    """(acq, stage, method) -> (learned, learned_reason) of :func:`learned_checks`' table."""
    if checks is None or checks.empty:
        return {}
    return {(r.acq, r.stage, r.method): (r.learned, r.learned_reason) for r in checks.itertuples(index=False)}


def differences(scores: pd.DataFrame, seed: int = 0, checks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paired differences a - b on the test subjects that have both values (module docstring);
    ``checks``: :func:`learned_checks` of ``scores`` (computed here when not given)."""
    from mrichain.plan.stages import kind

    verdicts = _verdicts(learned_checks(scores) if checks is None else checks)
    test = scores_on_test_split(scores)
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
                low, high = interval(d, seed, (acq, stage_name, a, b, metric))
                learned, reason = verdicts.get((acq, stage_name, a), (None, ""))
                if learned is False:
                    better = False  # a method that did not learn beats nothing
                elif direction is None or len(d) < MIN_N:
                    better = None
                elif direction:
                    better = bool(low > 0)
                else:
                    better = bool(high < 0)
                rows.append(dict(acq=acq, stage=stage_name, metric=metric, method_a=a, method_b=b,
                                 kind_a=kinds[a], kind_b=kinds[b], n=len(d), mean_difference=mean,
                                 ci_low=low, ci_high=high, higher_is_better=direction, better=better,
                                 learned=learned, learned_reason=reason))
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def _pct(x: float) -> str:
    return f"{100 * x:.2g} %"


def _held_out_agreement(c: pd.DataFrame) -> tuple[bool, str] | None:
    """Brain age: the spread of the predictions over the held-out (val, test) subjects against
    the spread of their ages, and their correlation with the ages; None with fewer than 2 of them
    or ages all equal."""
    held = c[c["split"].isin(["val", "test"])]
    wide = held.pivot_table(index="subject", columns="metric", values="value", aggfunc="mean")
    pred, age = CHECK_PREFIX + "predicted_age", CHECK_PREFIX + "age"
    if pred not in wide or age not in wide:
        return None
    wide = wide[[pred, age]].dropna()
    if len(wide) < 2 or wide[age].std() == 0:
        return None
    p, a = wide[pred].to_numpy(), wide[age].to_numpy()
    ratio = float(np.std(p) / np.std(a))
    text = f"predictions span {np.ptp(p):.1f} y (SD {np.std(p):.1f} y) for ages spanning {np.ptp(a):.1f} y (SD {np.std(a):.1f} y)"
    follows = True
    if len(wide) >= MIN_CORRELATION_N:
        r = float(np.corrcoef(p, a)[0, 1]) if np.std(p) > 0 else 0.0  # a constant follows nothing
        follows = r >= MIN_AGE_CORRELATION
        text += f", correlating with them at r = {r:.2f},"
    text += f" over {len(wide)} held-out subjects"
    return bool(ratio >= MIN_SPREAD_RATIO and follows), text


def _output_evidence(stage_name: str, c: pd.DataFrame) -> list[tuple[bool, str]]:
    """(passes, words) per check of a learned method's outputs at one acquisition (``c``: its
    ``check_`` rows there); module docstring for the checks and thresholds."""
    out = []
    test = c[c["split"] == "test"]
    means = test.groupby("metric", sort=False)["value"].mean()
    n = test["subject"].nunique()
    for metric, value in means.items():
        if not np.isfinite(value):
            continue
        floor = metric.partition("_vs_")[2]
        if metric.startswith(CHECK_PREFIX + "change_of_error_vs_"):
            change = means.get(f"{CHECK_PREFIX}change_vs_{floor}", np.nan)
            out.append((bool(value >= MIN_CHANGE_OF_ERROR),
                        f"its output differs from the {floor} floor's by {_pct(change)} within the brain, "
                        f"{_pct(value)} of {floor}'s own error against the truth ({n} test subjects)"))
        elif metric.startswith(CHECK_PREFIX + "label_change_vs_"):
            out.append((bool(value >= MIN_LABEL_CHANGE),
                        f"its warped labels differ from the {floor} floor's in {_pct(value)} of the labelled voxels "
                        f"({n} test subjects)"))
        elif metric == CHECK_PREFIX + "classes":
            per = test[test["metric"] == metric]["value"]
            few = int((per < MIN_CLASSES).sum())
            out.append((few == 0, f"its labels hold fewer than {MIN_CLASSES} tissue classes on {few} of {len(per)} "
                                  f"test subjects" if few else
                                  f"its labels hold at least {int(per.min())} tissue classes on each of {len(per)} "
                                  f"test subjects"))
    agreement = _held_out_agreement(c) if stage_name == "predict" else None
    if agreement is not None:
        out.append(agreement)
    start = c[c["metric"] == CHECK_PREFIX + "beats_start"]["value"]
    if len(start):
        beat = bool(start.min() > 0)
        out.append((beat, "beat its untrained start on val" if beat
                    else "no epoch beat its untrained start on val (model card: beats_start false)"))
    return out


def _floor_evidence(stage_name: str, method: str, means: pd.DataFrame) -> str | None:
    """Words when the method's test mean on the stage's primary metric is not better than the
    strongest floor's (``means``: stage, method, metric, value at one acquisition); else None."""
    from mrichain.plan.stages import BY_NAME, FLOOR, kind

    if stage_name not in BY_NAME or not BY_NAME[stage_name].primary_metric:
        return None
    metric = RENAME.get(BY_NAME[stage_name].primary_metric, BY_NAME[stage_name].primary_metric)
    direction = higher_is_better(metric)
    at = means[(means["stage"] == stage_name) & (means["metric"] == metric)]
    floors = [m for m in dict.fromkeys(at["method"]) if kind(stage_name, m) == FLOOR]
    floor = strongest_floor(at, stage_name, metric, floors)
    mine = at.loc[at["method"] == method, "value"]
    if floor is None or direction is None or mine.empty or not np.isfinite(mine.iloc[0]):
        return None
    v, f = float(mine.iloc[0]), float(at.loc[at["method"] == floor, "value"].iloc[0])
    if (v > f) if direction else (v < f):
        return None
    return f"its test mean {metric} {v:.4g} does not beat the floor {floor}'s {f:.4g}"


def learned_checks(scores: pd.DataFrame) -> pd.DataFrame:
    """Did each learned method learn, per acquisition (module docstring): columns
    :data:`CHECK_COLUMNS`; ``learned`` True, False or None (nothing could be checked),
    ``learned_reason`` its evidence ("did not learn: predictions span 1.9 y for ages spanning
    58.0 y ...")."""
    from mrichain.plan.stages import LEARNED, kind

    checks = scores[scores["metric"].astype(str).str.startswith(CHECK_PREFIX)]
    test = scores_on_test_split(scores)
    means = test.groupby(KEYS, sort=False)["value"].mean().reset_index()
    rows = []
    for (acq, stage_name), g in scores.groupby(["acq", "stage"], sort=False):
        for method in dict.fromkeys(g["method"]):
            try:
                if kind(stage_name, method) != LEARNED:
                    continue
            except KeyError:
                continue
            c = checks[(checks["acq"] == acq) & (checks["stage"] == stage_name) & (checks["method"] == method)]
            evidence = _output_evidence(stage_name, c)
            fails = [w for ok, w in evidence if not ok]
            floor = _floor_evidence(stage_name, method, means[means["acq"] == acq])
            if floor is not None:
                fails.append(floor)
            if fails:
                learned, reason = False, "did not learn: " + "; ".join(fails)
            elif evidence:
                learned, reason = True, "learned: " + "; ".join(w for _, w in evidence)
            else:
                learned, reason = None, "not checked: no evidence in the scores"
            rows.append(dict(acq=acq, stage=stage_name, method=method, learned=learned, learned_reason=reason))
    table = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    table["learned"] = pd.Series([r["learned"] for r in rows], index=table.index, dtype=object)  # True / False / None
    return table


def nest(summary: pd.DataFrame, checks: pd.DataFrame | None = None) -> dict:
    """``{stage: {method: {metric: mean}}}`` plus ``n_test``, and ``learned`` (bool) where
    ``checks`` (rows of one acquisition) has a verdict."""
    out: dict = {}
    for r in summary.itertuples():
        out.setdefault(r.stage, {}).setdefault(r.method, {})[r.metric] = float(r.value)
    for (stage, method), g in summary.groupby(["stage", "method"]):
        out[stage][method]["n_test"] = int(g["n_test"].max())
    for (_, stage, method), (learned, _) in _verdicts(checks).items():
        if learned is not None and method in out.get(stage, {}):
            out[stage][method]["learned"] = bool(learned)
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


def comparison(summary: pd.DataFrame, primary_acq: str, diffs: pd.DataFrame | None = None,
               checks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Methods side by side at the primary acquisition, with their kind, gain over the floor and
    "did it learn" verdict (``checks``: :func:`learned_checks`; without it, the verdicts the
    ``diffs`` carry)."""
    from mrichain.plan.stages import FLOOR, kind

    table = primary_rows(summary, primary_acq).copy()
    table.insert(3, "kind", [kind(s, m) for s, m in zip(table["stage"], table["method"])])
    if diffs is None:
        diffs = pd.DataFrame(columns=DIFFERENCE_COLUMNS)
    if checks is None:
        checks = (diffs.rename(columns={"method_a": "method"})[CHECK_COLUMNS]
                  .drop_duplicates(["acq", "stage", "method"]))
    verdicts = _verdicts(checks)
    found = [verdicts.get((a, s, m), (None, "")) for a, s, m in zip(table["acq"], table["stage"], table["method"])]
    table = table.drop(columns=["acq"])
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
    table["learned"] = [v[0] for v in found]
    table["learned_reason"] = [v[1] for v in found]
    table.loc[table["learned"].eq(False), "beats_floor"] = False  # a method that did not learn beats nothing
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
    checks = learned_checks(scores)
    by_acq = {acq: nest(g, checks[checks["acq"] == acq]) for acq, g in summary.groupby("acq", sort=False)}
    metrics = nest(primary_rows(summary, primary_acq), primary_rows(checks, primary_acq))
    save_json(metrics, out_metrics)
    save_json(by_acq, out_by_acq)
    Path(out_summary).parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_summary, sep="\t", index=False, float_format="%.6g")
    if out_comparison is not None or out_differences is not None:
        diffs = differences(scores, seed, checks)
        if out_differences is not None:
            Path(out_differences).parent.mkdir(parents=True, exist_ok=True)
            diffs.to_csv(out_differences, sep="\t", index=False, float_format="%.6g")
        if out_comparison is not None:
            Path(out_comparison).parent.mkdir(parents=True, exist_ok=True)
            comparison(summary, primary_acq, diffs, checks).to_csv(out_comparison, sep="\t", index=False,
                                                           float_format="%.6g")
    return metrics
