"""The motion branch in the plan (config ``motion`` with ``acquire.motion``): its conditions, what
each job reads there, and the config's checks. No job runs (tests/test_motion_workflow.py runs them)."""
from __future__ import annotations

import copy

import pytest
import yaml

from mrichain.plan.conditions import WILDCARD, motion_conditions, motion_parts
from mrichain.plan.config import ConfigError, validate_config
from mrichain.plan.manifests import Plan

from dag import TEST_CONFIG

MOTION = {"shots": 8, "ordering": "interleaved",
          "levels": {"mild": {"rotation_deg": 1.5, "translation_mm": 1.0, "movements": 1},
                     "severe": {"rotation_deg": 5.0, "translation_mm": 3.0, "movements": 2}}}
BRANCH = {"methods": ["none", "autofocus"], "feed": "autofocus", "accelerations": [4]}


def motion_config(**branch) -> dict:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["acquire"]["motion"] = copy.deepcopy(MOTION)
    cfg["motion"] = {**copy.deepcopy(BRANCH), **branch}
    return cfg


def test_motion_labels_are_conditions_of_their_own():
    import re

    conds = motion_conditions({"R4": (4, 0.16), "R1": (1, 0.16)}, ["mild", "severe"], [4])
    assert list(conds) == ["mildR4", "severeR4"]
    assert conds["severeR4"].acq == "R4" and conds["severeR4"].level == "severe" and conds["severeR4"].derived
    assert motion_parts("severeR4") == ("severe", "R4") and motion_parts("R4cs") is None
    assert all(re.fullmatch(WILDCARD, x) for x in ("severeR4", "mildR2p5", "R4cs", "oracle"))


def test_the_plan_runs_the_branch_on_the_test_split_and_feeds_the_chain():
    cfg = validate_config(motion_config())
    plan = Plan(cfg)
    sub = plan.test_subjects[0]
    assert plan.stage_conditions("motion") == ["mildR4", "severeR4"]
    assert "severeR4" in plan.stage_conditions("segment") and "severeR4" not in plan.conditions  # not in the budget
    assert plan.methods_run("motion", sub, "severeR4") == ["none", "autofocus"]
    assert plan.methods_run("motion", plan.split_subjects("train")[0], "severeR4") == []
    assert plan.methods_run("denoise", sub, "severeR4") == [cfg["denoise"]["feed"]]
    inputs = plan.method_inputs("motion", "autofocus", sub, "severeR4")
    assert inputs["kspace"].endswith(f"{sub}_acq-severeR4_T1w.h5")
    # the corrected image stands in for the reconstruction; the truth is the still head's
    fed = plan.method_inputs("denoise", cfg["denoise"]["feed"], sub, "severeR4")["image"]
    assert fed == plan.outputs("motion", sub, "severeR4", "autofocus")["image"]
    score = plan.score_manifest("motion", "severeR4")["subjects"][sub]
    assert score["truth"].endswith(f"{sub}_acq-R4_desc-noisefree_T1w.nii.gz")
    assert plan.test_only("severeR4")


def test_without_the_branch_nothing_changes():
    cfg = validate_config(yaml.safe_load(TEST_CONFIG.read_text()))
    plan = Plan(cfg)
    assert plan.motion_conditions == {} and plan.stage_conditions("motion") == []
    assert not any(motion_parts(c) for s in ("denoise", "segment", "predict") for c in plan.stage_conditions(s))


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
