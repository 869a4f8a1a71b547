"""Bootstrap intervals, paired differences and gains over the floor (mrichain.scoring.aggregate), on
synthetic per-subject score tables: no images, no DAG."""
import json

import numpy as np
import pandas as pd
import pytest

from mrichain.plan import stages
from mrichain.scoring.aggregate import (DIFFERENCE_COLUMNS, aggregate, comparison, differences, higher_is_better,
                                mean_interval, summarise)
from mrichain.cli import build_parser

SUBJECTS = [f"sub-{i:03d}" for i in range(1, 21)]


def scores_table(stage, acq, values: dict, split="test") -> pd.DataFrame:
    """``values``: {(method, metric): per-subject values} -> the long per-subject score table."""
    rows = [dict(stage=stage, acq=acq, subject=sub, split=split, method=m, metric=k, value=float(v))
            for (m, k), vals in values.items() for sub, v in zip(SUBJECTS, vals)]
    return pd.DataFrame(rows, columns=["stage", "acq", "subject", "split", "method", "metric", "value"])


def row(diffs, **key):
    sel = diffs
    for k, v in key.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, key
    return sel.iloc[0]


def test_interval_covers_the_known_mean_about_95_percent():
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        low, high = mean_interval(rng.normal(3.0, 2.0, size=20), seed=i, n_resamples=2000)
        hits += low <= 3.0 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_small_samples_and_ties_are_handled_honestly():
    assert np.isnan(mean_interval([])).all()
    assert np.isnan(mean_interval([1.5])).all()  # one subject: no interval
    assert np.isnan(mean_interval([1.5, np.nan])).all()  # NaNs dropped first
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)  # degenerate: every resample has mean 2
    assert np.isnan(mean_interval([np.inf, 30.0])).all()  # an exact reconstruction's infinite PSNR
    low, high = mean_interval([0, 1, 1, 1, 1, 1, 1, 1])  # heavy ties: a finite interval (BCa or percentile)
    assert 0 <= low < 0.875 <= high <= 1
    assert mean_interval([1.0, 2.0]) == pytest.approx((1.0, 2.0))  # n = 2: the range of the two values


def test_interval_is_deterministic_in_the_seed():
    x = np.random.default_rng(1).normal(size=15)
    assert mean_interval(x, seed=7, key=("a",)) == mean_interval(x, seed=7, key=("a",))
    assert mean_interval(x, seed=7, key=("a",)) != mean_interval(x, seed=8, key=("a",))


def test_metric_directions():
    for m in ("psnr", "ssim", "dice_mean", "dice_csf", "t1w_dice_mean", "speedup_vs_matching"):
        assert higher_is_better(m) is True
    for m in ("nmse", "hd95_mm_mean", "folding_percent", "mae_years", "abs_error_years", "seconds",
              "seconds_per_pair", "t1_mape", "t2_mape_GM", "t1_mape_pure", "seconds_per_slice"):
        assert higher_is_better(m) is False
    assert higher_is_better("snr_measured") is None and higher_is_better("interval_coverage") is None


def _segment_scores():
    rng = np.random.default_rng(3)
    atropos = rng.uniform(0.6, 0.8, 20)
    hd = rng.uniform(5, 10, 20)
    flip = np.tile([1.0, -1.0], 10)
    return scores_table("segment", "R4", {
        ("atropos", "dice_mean"): atropos,
        ("unet", "dice_mean"): atropos + 0.05 + rng.normal(0, 0.01, 20),  # a real gain
        ("atropos", "dice_csf"): atropos,
        ("unet", "dice_csf"): atropos + 0.01 * flip,  # no effect: mean difference 0
        ("atropos", "hd95_mm_mean"): hd,
        ("unet", "hd95_mm_mean"): hd - 2 + rng.normal(0, 0.2, 20),  # lower is better: a gain
        ("atropos", "hd95_mm_csf"): hd,
        ("unet", "hd95_mm_csf"): hd + 2 + rng.normal(0, 0.2, 20),  # worse
    })


def test_paired_difference_marks_a_known_effect_better_and_no_effect_not():
    diffs = differences(_segment_scores(), seed=1)
    assert list(diffs.columns) == DIFFERENCE_COLUMNS
    assert set(zip(diffs.method_a, diffs.method_b)) == {("unet", "atropos")}  # learned - classical
    gain = row(diffs, metric="dice_mean")
    assert gain.kind_a == "learned" and gain.kind_b == "classical" and gain.n == 20
    assert gain.mean_difference == pytest.approx(0.05, abs=0.01) and gain.ci_low > 0 and gain.better
    none = row(diffs, metric="dice_csf")
    assert none.mean_difference == pytest.approx(0) and none.ci_low < 0 < none.ci_high and not none.better
    # lower is better: a negative difference is the gain
    assert row(diffs, metric="hd95_mm_mean").better and row(diffs, metric="hd95_mm_mean").ci_high < 0
    worse = row(diffs, metric="hd95_mm_csf")
    assert worse.ci_low > 0 and not worse.better and not worse.higher_is_better


def test_only_subjects_with_both_values_pair_up():
    t = _segment_scores()
    t = t[~((t.method == "unet") & t.subject.isin(SUBJECTS[:5]))]  # unet lacks 5 subjects
    assert (differences(t).n == 15).all()


def test_floors_come_from_the_stage_declaration(monkeypatch):
    rng = np.random.default_rng(4)
    base = rng.uniform(20, 25, 20)
    den = scores_table("denoise", "R4", {("input", "psnr"): base, ("antsnlm", "psnr"): base + 1,
                                         ("dncnn", "psnr"): base + 3 + rng.normal(0, 0.1, 20)})
    pairs = set(zip(*[differences(den)[c] for c in ("method_a", "method_b", "kind_b")]))
    # the scorer-computed floor (input) is a floor; non-floors minus it, learned minus classical
    assert pairs == {("antsnlm", "input", "floor"), ("dncnn", "input", "floor"), ("dncnn", "antsnlm", "classical")}

    # a stage with two floors: each method's gain is over the stronger one on each metric
    real_kind = stages.kind
    monkeypatch.setattr(stages, "kind", lambda s, m: "floor" if (s, m) == ("register", "affine") else real_kind(s, m))
    ident = rng.uniform(0.6, 0.7, 20)
    reg = scores_table("register", "R4", {
        ("identity", "dice_mean"): ident, ("affine", "dice_mean"): ident + 0.1,
        ("antssyn", "dice_mean"): ident + 0.15 + rng.normal(0, 0.005, 20),
        ("voxelmorph", "dice_mean"): ident + 0.05 + rng.normal(0, 0.005, 20),
        ("affine", "seconds"): np.full(20, 2.0), ("antssyn", "seconds"): np.full(20, 10.0),
        ("voxelmorph", "seconds"): np.full(20, 1.0),
    })
    diffs = differences(reg, seed=0)
    assert {("voxelmorph", "identity"), ("voxelmorph", "affine"), ("antssyn", "affine"),
            ("voxelmorph", "antssyn")} <= set(zip(diffs.method_a, diffs.method_b))
    table = comparison(summarise(reg), "R4", diffs).set_index(["method", "metric"])
    assert table.loc[("affine", "dice_mean"), "kind"] == "floor" and pd.isna(table.loc[("affine", "dice_mean"), "gain"])
    assert pd.isna(table.loc[("identity", "dice_mean"), "floor"])
    syn, vxm = table.loc[("antssyn", "dice_mean")], table.loc[("voxelmorph", "dice_mean")]
    assert syn.floor == "affine" and syn.gain == pytest.approx(0.05, abs=0.005) and syn.beats_floor
    # beats identity (+0.05) but not the strongest floor, affine (-0.05): no gain claimed
    assert vxm.floor == "affine" and vxm.gain < 0 and not vxm.beats_floor
    assert table.loc[("voxelmorph", "seconds")].floor == "affine"  # the only floor with seconds
    secs = table.loc[("voxelmorph", "seconds")]
    assert secs.gain == secs.gain_ci_low == secs.gain_ci_high == -1.0  # 1 s < 2 s, all equal: degenerate interval
    # ... but below the strongest floor on Dice it did not learn, so it beats nothing, not even on seconds
    assert secs.learned is False and not secs.beats_floor and "does not beat the floor affine" in secs.learned_reason
    assert not row(diffs, method_a="voxelmorph", method_b="affine", metric="seconds").better
    assert table.loc[("antssyn", "dice_mean")].learned is None  # classical: no verdict


def test_summary_intervals_and_cohort_rows():
    t = _segment_scores()
    cohort = pd.DataFrame([dict(stage="segment", acq="R4", subject="cohort", split="all", method="unet",
                                metric="seconds", value=12.0)])
    other = scores_table("segment", "R4", {("unet", "dice_mean"): np.zeros(20)}, split="train")
    s = summarise(pd.concat([t, cohort, other]), seed=2).set_index(["method", "metric"])
    assert list(s.columns) == ["acq", "stage", "value", "n_test", "ci_low", "ci_high"]
    d = s.loc[("unet", "dice_mean")]
    assert d.n_test == 20 and d.ci_low < d.value < d.ci_high  # train rows are not in the mean
    assert s.loc[("unet", "seconds")].value == 12.0 and np.isnan(s.loc[("unet", "seconds")].ci_low)


def test_aggregate_writes_the_tables_and_leaves_metrics_json_alone(tmp_path):
    rng = np.random.default_rng(5)
    ref = rng.uniform(0.01, 0.02, 20)
    paths = []
    for acq, extra in (("R4", 0.0), ("R1", -0.005)):
        t = scores_table("reconstruct", acq, {("zerofilled", "nmse"): ref, ("cs", "nmse"): ref - 0.004 + extra,
                                              ("varnet", "nmse"): ref - 0.006 + rng.normal(0, 1e-4, 20)})
        paths.append(tmp_path / f"{acq}.tsv")
        t.to_csv(paths[-1], sep="\t", index=False)
    out = {k: tmp_path / k for k in ("metrics.json", "by_acq.json", "summary.tsv", "comparison.tsv", "diff.tsv")}

    def run(seed):
        args = build_parser().parse_args(
            ["aggregate", "--primary-acq", "R4", "--scores", *map(str, paths),
             "--out-metrics", str(out["metrics.json"]), "--out-by-acq", str(out["by_acq.json"]),
             "--out-summary", str(out["summary.tsv"]),
             "--out-comparison", str(out["comparison.tsv"]), "--out-differences", str(out["diff.tsv"]),
             "--seed", str(seed)])
        args.func(args)
        return {k: p.read_bytes() for k, p in out.items()}

    first = run(11)
    assert run(11) == first  # byte-identical with the same seed
    metrics = json.loads(first["metrics.json"])
    assert set(metrics["reconstruct"]["cs"]) == {"nmse", "n_test"}  # no interval keys in metrics.json
    comp = pd.read_csv(out["comparison.tsv"], sep="\t")
    assert list(comp.columns[:4]) == ["stage", "method", "kind", "metric"]
    assert {"ci_low", "ci_high", "floor", "gain", "gain_ci_low", "gain_ci_high"} <= set(comp.columns)
    cs = comp.set_index("method").loc["cs"]
    assert cs.floor == "zerofilled" and cs.gain == pytest.approx(-0.004) and cs.beats_floor  # lower nmse
    diffs = pd.read_csv(out["diff.tsv"], sep="\t")
    assert len(diffs) == 2 * 3 and set(diffs.acq) == {"R1", "R4"}
    assert row(diffs, acq="R4", method_a="varnet", method_b="cs").better
    assert run(12)["diff.tsv"] != first["diff.tsv"]  # the seed drives the resampling
