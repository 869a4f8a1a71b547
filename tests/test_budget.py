"""Conditions, the error budget, the sweep and the acceleration limits on synthetic scores."""
import numpy as np
import pandas as pd
import pytest

from mrichain.scoring import budget
from mrichain.plan.conditions import ORACLE, conditions, label, parse

ACQS = {"R8": (8, 0.16), "R4": (4, 0.16), "R1": (1, 0.16)}


def test_condition_labels_round_trip():
    conds = conditions(ACQS, ["zerofilled", "cs", "varnet"], "zerofilled")
    assert list(conds)[:3] == ["R8", "R4", "R1"] and list(conds)[-1] == ORACLE
    # no sweep condition at R1: the fully sampled feed chain is the sweep's reference
    assert set(conds) == {"R8", "R4", "R1", "R8cs", "R8varnet", "R4cs", "R4varnet", ORACLE}
    assert conds["R4cs"].acq == "R4" and conds["R4cs"].recon == "cs" and conds["R4cs"].derived
    assert conds["R4"].recon == "zerofilled" and not conds["R4"].derived
    assert conds[ORACLE].acq == "R1" and conds[ORACLE].oracle and conds[ORACLE].derived
    assert parse("R2p5varnet") == ("R2p5", "varnet") and parse("R4") == ("R4", None) and parse(ORACLE) == (None, None)
    assert label("R4", "zerofilled", "zerofilled") == "R4"
    with pytest.raises(ValueError, match="not a condition"):
        parse("4cs")


def _scores(dice: dict[str, float], mae: dict[str, float], n: int = 12, noise: float = 0.004) -> pd.DataFrame:
    """Per-subject test scores: segment Dice (atropos) and age error (linear) at each condition,
    with a per-subject offset shared by all conditions (what pairing removes) and small noise."""
    rng = np.random.default_rng(0)
    subject_offset = rng.normal(0, 0.03, n)
    rows = []
    for cond, value in dice.items():
        for i in range(n):
            rows.append(dict(stage="segment", acq=cond, subject=f"sub-{i:03d}", split="test", method="atropos",
                             metric="dice_mean", value=value + subject_offset[i] + rng.normal(0, noise)))
    for cond, value in mae.items():
        for i in range(n):
            rows.append(dict(stage="predict", acq=cond, subject=f"sub-{i:03d}", split="test", method="linear",
                             metric="abs_error_years", value=value + 10 * subject_offset[i] + rng.normal(0, 0.1)))
    rows.append(dict(stage="segment", acq="R1", subject="sub-900", split="train", method="atropos",
                     metric="dice_mean", value=0.0))  # not test: ignored
    return pd.DataFrame(rows)


@pytest.fixture
def synthetic():
    conds = conditions(ACQS, ["zerofilled", "cs"], "zerofilled")
    # Dice: oracle 0.95, fully sampled 0.90; zero-filled drops 0.01 at R4 and 0.05 at R8, CS 0.005 / 0.015
    dice = {ORACLE: 0.95, "R1": 0.90, "R4": 0.89, "R4cs": 0.895, "R8": 0.85, "R8cs": 0.885}
    # MAE: 5 y oracle, 8 y fully sampled; zero-filled +3 y at R4, CS +0.5 y at R4 and +2 y at R8
    mae = {ORACLE: 5.0, "R1": 8.0, "R4": 11.0, "R4cs": 8.5, "R8": 14.0, "R8cs": 10.0}
    return _scores(dice, mae), conds


def test_error_budget_losses_and_intervals(synthetic):
    scores, conds = synthetic
    t = budget.error_budget(scores, conds, "zerofilled", seed=1)
    seg = t[t.stage == "segment"].set_index("condition")
    assert list(seg.index) == [ORACLE, "R1", "R4", "R4cs", "R8", "R8cs"]
    assert seg.loc[ORACLE, "vs"] == "" and np.isnan(seg.loc[ORACLE, "loss"])
    assert seg.loc["R1", "vs"] == ORACLE and seg.loc["R1", "loss"] == pytest.approx(-0.05, abs=0.005)
    assert seg.loc["R8", "vs"] == "R1" and seg.loc["R8", "loss"] == pytest.approx(-0.05, abs=0.005)
    # pairing removes the shared subject offset: the loss interval is far narrower than the value's
    assert (seg.loc["R8", "loss_ci_high"] - seg.loc["R8", "loss_ci_low"]) < 0.3 * (seg.loc["R8", "ci_high"] - seg.loc["R8", "ci_low"])
    assert seg.loc["R8", "loss_ci_low"] <= seg.loc["R8", "loss"] <= seg.loc["R8", "loss_ci_high"] < 0
    age = t[t.stage == "predict"].set_index("condition")
    assert age.loc["R1", "metric"] == "mae_years" and age.loc["R1", "loss"] == pytest.approx(3.0, abs=0.2)


def test_sweep_rows_per_acceleration_and_recon(synthetic):
    scores, conds = synthetic
    t = budget.sweep(scores, conds, "zerofilled", seed=1)
    assert set(t.columns) >= {"acceleration", "recon_method", "metric", "value", "ci_low", "ci_high"}
    seg = t[(t.stage == "segment") & (t.recon_method == "cs")].sort_values("acceleration")
    assert list(seg.acceleration) == [4.0, 8.0]  # CS runs on undersampled acquisitions only
    assert seg["value"].tolist() == pytest.approx([0.895, 0.885], abs=0.01)
    feed = t[(t.stage == "segment") & (t.recon_method == "zerofilled")].sort_values("acceleration")
    assert list(feed.acceleration) == [1.0, 4.0, 8.0]  # the fully sampled reference is the feed's R1
    assert (t.ci_low <= t["value"]).all() and (t["value"] <= t.ci_high).all()
    assert ORACLE not in set(t.recon_method)


def test_acceleration_limits(synthetic):
    scores, conds = synthetic
    t = budget.acceleration_limits(scores, conds, "zerofilled", seed=1).set_index(["stage", "recon_method"])
    # Dice: zero-filled drops 0.01 at R4 (within 0.02), 0.05 at R8 -> limit 4; CS stays within at R8
    assert t.loc[("segment", "zerofilled"), "max_acceleration"] == 4
    assert t.loc[("segment", "cs"), "max_acceleration"] == 8
    # age: zero-filled +3 y at R4 -> only fully sampled; CS +0.5 y at R4, +2 y at R8 -> 4
    assert t.loc[("predict", "zerofilled"), "max_acceleration"] == 1
    assert t.loc[("predict", "cs"), "max_acceleration"] == 4
    # the interval-based limit is never above the mean-based one
    assert (t.max_acceleration_ci.fillna(0) <= t.max_acceleration).all()


def test_below_the_minimum_n_the_budget_prints_no_interval(synthetic):
    """With fewer test subjects than aggregate.MIN_N (5 here) the means stay and every interval,
    and the interval-based limit, is empty; the fixture's 12 subjects get them."""
    scores, conds = synthetic
    few = scores[scores.subject.isin([f"sub-{i:03d}" for i in range(5)])]
    t = budget.error_budget(few, conds, "zerofilled", seed=1)
    assert t.value.notna().all() and t[["ci_low", "ci_high", "loss_ci_low", "loss_ci_high"]].isna().all().all()
    limits = budget.acceleration_limits(few, conds, "zerofilled", seed=1)
    assert limits.max_acceleration.notna().all() and limits.max_acceleration_ci.isna().all()
    assert "[" not in " ".join(limits.harm_by_acceleration)
    full = budget.error_budget(scores, conds, "zerofilled", seed=1)
    assert full.ci_low.notna().all()


def test_no_fully_sampled_acquisition_gives_no_limits():
    conds = conditions({"R4": (4, 0.16)}, ["zerofilled", "cs"], "zerofilled")
    scores = _scores({"R4": 0.9, "R4cs": 0.9, ORACLE: 0.95}, {"R4": 9.0})
    assert budget.acceleration_limits(scores, conds, "zerofilled").empty
    t = budget.error_budget(scores, conds, "zerofilled")
    assert set(t[t.stage == "segment"].vs) == {""}  # nothing to compare with but itself


def test_figures_written(synthetic, tmp_path):
    scores, conds = synthetic
    files = []
    for cond, g in scores.groupby("acq"):
        f = tmp_path / f"{cond}.tsv"
        g.to_csv(f, sep="\t", index=False)
        files.append(str(f))
    out = {k: tmp_path / k for k in ("b.tsv", "s.tsv", "l.tsv", "b.png", "s.png")}
    budget.write_budget(files, conds, "zerofilled", *out.values(), seed=1)
    for p in out.values():
        assert p.stat().st_size > 100
    assert pd.read_csv(out["l.tsv"], sep="\t").shape[0] == 4


def test_switched_off_conditions_still_write_every_output(tmp_path):
    """error_budget: {sweep: false, oracle: false}: no budget or sweep rows, the feed's limits, and
    figures that say why they are empty (the rule must not fail: the SLURM test runs this way)."""
    conds = conditions(ACQS, ["zerofilled", "cs"], "zerofilled", sweep=False, oracle=False)
    assert set(conds) == {"R8", "R4", "R1"}
    scores = _scores({"R1": 0.90, "R4": 0.89, "R8": 0.85}, {"R1": 8.0, "R4": 11.0, "R8": 14.0})
    f = tmp_path / "scores.tsv"
    scores.to_csv(f, sep="\t", index=False)
    out = {k: tmp_path / k for k in ("b.tsv", "s.tsv", "l.tsv", "b.png", "s.png")}
    tables = budget.write_budget([str(f)], conds, "zerofilled", *out.values(), seed=1)
    assert tables["budget"].empty and tables["sweep"].empty
    assert set(tables["limits"].recon_method) == {"zerofilled"}
    for p in out.values():
        assert p.stat().st_size > 0
