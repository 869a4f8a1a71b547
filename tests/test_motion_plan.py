"""The motion branch in the plan (config ``motion`` with ``acquire.motion``): its conditions, what
each job reads there, and the config's checks. No job runs (tests/test_motion_workflow.py runs them)."""
from __future__ import annotations

import copy
import re

import pytest
import yaml

from mrichain.plan.conditions import MOTION_WILDCARD, WILDCARD, motion_conditions
from mrichain.plan.config import ConfigError, validate_config
from mrichain.plan.manifests import Plan

from dag import TEST_CONFIG, moving_config
from fresh_python import modules_imported

MOTION = {"shots": 8, "ordering": "interleaved",
          "levels": {"mild": {"rotation_deg": 1.5, "translation_mm": 1.0, "movements": 1},
                     "severe": {"rotation_deg": 5.0, "translation_mm": 3.0, "movements": 2}}}
BRANCH = {"methods": ["none", "autofocus"], "feed": "autofocus", "accelerations": [4]}


def motion_config(**branch) -> dict:
    cfg = moving_config(MOTION)
    cfg["motion"] = {**copy.deepcopy(BRANCH), **branch}
    return cfg


def test_motion_labels_are_conditions_of_their_own():
    conds = motion_conditions({"R4": (4, 0.16), "R1": (1, 0.16)}, ["mild", "severe"], [4], ["none", "autofocus"],
                              "autofocus")
    assert list(conds) == ["mildR4", "mildR4none", "severeR4", "severeR4none"]
    assert conds["severeR4"].acq == "R4" and conds["severeR4"].level == "severe" and conds["severeR4"].derived
    assert conds["severeR4none"].method == "none" and conds["severeR4none"].acquired == "severeR4"
    assert [(c.level, c.acq) for c in (conds["severeR4"], conds["severeR4none"])] == [("severe", "R4")] * 2
    assert re.fullmatch(MOTION_WILDCARD, "severeR4none") and not re.fullmatch(MOTION_WILDCARD, "R4cs")
    assert all(re.fullmatch(WILDCARD, x) for x in ("severeR4", "severeR4none", "mildR2p5", "R4cs", "oracle"))


def test_the_plan_runs_the_branch_on_the_test_split_and_feeds_the_chain():
    cfg = validate_config(motion_config())
    plan = Plan(cfg)
    sub = plan.test_subjects[0]
    assert plan.stage_conditions("motion") == ["mildR4", "severeR4"]
    assert plan.stage_conditions("segment")[-5:-1] == ["mildR4", "mildR4none", "severeR4", "severeR4none"]
    assert "severeR4" in plan.stage_conditions("segment") and "severeR4" not in plan.conditions  # not in the budget
    assert plan.methods_run("motion", sub, "severeR4") == ["none", "autofocus"]
    assert plan.methods_run("motion", plan.split_subjects("train")[0], "severeR4") == []
    assert plan.methods_run("denoise", sub, "severeR4") == [cfg["denoise"]["feed"]]
    inputs = plan.method_inputs("motion", "autofocus", sub, "severeR4")
    assert inputs["kspace"].endswith(f"{sub}_acq-severeR4_T1w.h5")
    # the corrected image stands in for the reconstruction; the truth is the still head's
    fed = plan.method_inputs("denoise", cfg["denoise"]["feed"], sub, "severeR4")["image"]
    assert fed == plan.outputs("motion", sub, "severeR4", "autofocus")["image"]
    # the floor's image goes down the chain too, at its own condition
    floor = plan.method_inputs("denoise", cfg["denoise"]["feed"], sub, "severeR4none")["image"]
    assert floor == plan.outputs("motion", sub, "severeR4", "none")["image"]
    score = plan.score_manifest("motion", "severeR4")["subjects"][sub]
    assert score["truth"].endswith(f"{sub}_acq-R4_desc-noisefree_T1w.nii.gz")
    assert plan.test_only("severeR4")


def test_without_the_branch_nothing_changes():
    cfg = validate_config(yaml.safe_load(TEST_CONFIG.read_text()))
    plan = Plan(cfg)
    assert plan.motion_conditions == {} and plan.stage_conditions("motion") == []
    assert not any(re.fullmatch(MOTION_WILDCARD, c) for s in ("denoise", "segment", "predict")
                   for c in plan.stage_conditions(s))


@pytest.mark.parametrize("change, key", [
    (lambda c: c["acquire"].pop("motion"), "config key 'motion': the motion branch needs acquire.motion"),
    (lambda c: c["motion"].update(accelerations=[2]), "config key 'motion.accelerations': 2 is not acquired"),
    (lambda c: c["motion"].update(feed="none", methods=["autofocus"]), "config key 'motion.feed'"),
    (lambda c: c["motion"].update(params={"none": {}}, methods=["autofocus"], feed="autofocus"),
     "config key 'motion.params.none'"),
    (lambda c: c["motion"].update(methods=["rotate"]), "motion.methods"),
    (lambda c: c["motion"].update(params={"autofocus": {"sweeps": 0}}), "motion.params.autofocus.sweeps"),
])
def test_config_refuses_a_bad_motion_branch(change, key):
    cfg = motion_config()
    validate_config(copy.deepcopy(cfg))
    change(cfg)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_real_inputs_run_beside_the_branch():
    """The branch moves the simulated heads: with real inputs it plans the same motion conditions
    (the real inputs' own jobs do not read them)."""
    cfg = motion_config()
    real = {**copy.deepcopy(cfg), "input": {"kind": "bids", "bids_dir": "/data/study"}}
    assert Plan(validate_config(real)).motion_conditions.keys() == Plan(validate_config(cfg)).motion_conditions.keys() != set()


def _scores(rows) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame([dict(stage=s, acq=a, subject=sub, split="test", method=m, metric=k, value=v)
                         for s, a, sub, m, k, v in rows])


def test_motion_budget_and_limits_from_scores(tmp_path):
    """Harm = the paired drop of Dice against the still acquisition, per level and correction; the
    limit is the last level (config order) within 0.02 at it and every milder one."""
    from mrichain.scoring.motion_budget import motion_budget, motion_limits

    conds = motion_conditions({"R4": (4, 0.16)}, ["mild", "severe"], [4], ["none", "autofocus"], "autofocus")
    still = {"sub-001": 0.80, "sub-002": 0.78}
    drop = {("mildR4", "autofocus"): 0.005, ("mildR4none", "none"): 0.015,
            ("severeR4", "autofocus"): 0.018, ("severeR4none", "none"): 0.06}
    rows = [("segment", "R4", sub, "atropos", "dice_mean", v) for sub, v in still.items()]
    for (label, _), d in drop.items():
        rows += [("segment", label, sub, "atropos", "dice_mean", v - d) for sub, v in still.items()]
    budget = motion_budget(_scores(rows), conds)
    harm = budget.set_index("condition")["harm"]
    for (label, _), d in drop.items():
        assert harm[label] == pytest.approx(d)
    assert set(budget["motion_method"]) == {"none", "autofocus"} and set(budget["acq"]) == {"R4"}
    limits = motion_limits(budget, ["mild", "severe"]).set_index("motion_method")
    from mrichain.scoring.motion_budget import plot_motion_budget

    import matplotlib.image

    png = plot_motion_budget(budget, tmp_path / "motion_budget.png")
    assert matplotlib.image.imread(png).shape[0] == 304  # a drawn panel (3.8 in at 80 dpi), not the 1.5 in notice
    assert limits.loc["autofocus", "max_level"] == "severe" and limits.loc["none", "max_level"] == "mild"
    assert limits.loc["none", "max_level_ci"] == ""  # 2 subjects: no interval, so no level is within it


def test_motion_budget_leaves_out_the_motion_stage_itself():
    """The motion stage runs only where the head moves: it has no still reference, no harm row."""
    from mrichain.scoring.motion_budget import motion_budget

    conds = motion_conditions({"R4": (4, 0.16)}, ["severe"], [4], ["none", "autofocus"], "autofocus")
    rows = [("motion", "severeR4", "sub-001", "autofocus", "ssim_truth", 0.8),
            ("segment", "R4", "sub-001", "atropos", "dice_mean", 0.8),
            ("segment", "severeR4", "sub-001", "atropos", "dice_mean", 0.7)]
    budget = motion_budget(_scores(rows), conds)
    assert list(budget["stage"]) == ["segment"] and budget["harm"].iloc[0] == pytest.approx(0.1)


def test_checking_a_motion_config_imports_no_simulator():
    """The motion levels are checked at parse time (every Snakefile parse, every cluster job) by
    the planning package alone: no scipy, nibabel or h5py."""
    import json

    code = ("import json; from mrichain.plan.config import validate_config; "
            f"validate_config(json.loads({json.dumps(json.dumps(motion_config()))}))")
    out = modules_imported(code, ["scipy", "nibabel", "h5py"])
    assert out == [], f"validating a motion config imports {out}"
