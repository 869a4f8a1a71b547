"""The motion branch through Snakemake on config/test.yaml plus a motion section: the moving heads
are acquired, corrected and scored, the corrected image goes down the chain, and changing one
motion level reruns only that level's jobs."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from dag import planned_jobs, snakemake
from test_motion_plan import motion_config

pytestmark = pytest.mark.integration

TARGETS = ["results/metrics/acq-severeR4_stage-motion.tsv", "results/metrics/acq-mildR4_stage-motion.tsv",
           "results/metrics/acq-severeR4_stage-segment.tsv"]


@pytest.fixture(scope="module")
def motion_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("motion")
    config = work / "motion.yaml"
    config.write_text(yaml.safe_dump(motion_config(), sort_keys=False))
    snakemake(work, *TARGETS, configfile=config)
    return work, config


def test_each_method_is_scored_against_the_still_head(motion_run):
    work, _ = motion_run
    t = pd.read_csv(work / TARGETS[0], sep="\t").pivot_table(index=["subject", "method"], columns="metric",
                                                              values="value")
    subjects = sorted(t.index.get_level_values("subject").unique())
    assert len(subjects) == 2 and set(t.index.get_level_values("method")) == {"none", "autofocus"}
    assert (t.xs("none", level="method")["auc"] == 0.5).all()  # never flags: no ranking
    assert t.xs("autofocus", level="method")["auc"].mean() > 0.5  # ranks the moved shots above the still ones
    assert t["ssim_truth"].between(0.3, 1.0).all()
    shots = pd.read_csv(work / f"results/motion/{subjects[0]}/{subjects[0]}_acq-severeR4_desc-autofocus_shots.tsv",
                        sep="\t")
    assert list(shots.columns) == ["shot", "lines", "score"] and len(shots) == 8 and (shots["lines"] > 0).all()


def test_the_corrected_image_goes_down_the_chain(motion_run):
    """At severeR4 the denoise feed read the motion feed's corrected image (Snakemake's log of the
    run names each job's input), and segmentation was scored there for both test subjects."""
    import re

    work, _ = motion_run
    seg = pd.read_csv(work / TARGETS[2], sep="\t")
    assert seg["subject"].nunique() == 2 and set(seg["acq"]) == {"severeR4"}
    log = "\n".join(p.read_text() for p in (work / ".snakemake" / "log").glob("*.snakemake.log"))
    inputs = re.findall(r"rule denoise:\n\s+input: (\S+)", log)
    assert len(inputs) == 2, inputs
    assert all(re.fullmatch(r"results/motion/(sub-\d+)/\1_acq-severeR4_desc-autofocus_T1w\.nii\.gz", i)
               for i in inputs), inputs


def test_changing_one_level_reruns_only_its_jobs(motion_run):
    work, config = motion_run
    cfg = yaml.safe_load(config.read_text())
    cfg["acquire"]["motion"]["levels"]["severe"]["rotation_deg"] = 2.0
    changed = config.with_name("changed.yaml")
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(work, *TARGETS, "-n", "--quiet", "rules", configfile=changed, cores="1")
    plan = planned_jobs(proc)
    assert plan.get("acquire_motion") == 2 and plan.get("motion") == 4, plan  # severe only: 2 subjects
    assert not {"acquire", "simulate_subject", "reconstruct", "train", "tune"} & set(plan), plan
    full = snakemake(work, *TARGETS, "-n", configfile=changed, cores="1").stdout
    assert "acq-severeR4" in full and "acq-mildR4" not in full
