"""The motion branch through Snakemake on config/test.yaml plus a motion section: the moving heads
are acquired, corrected and scored, the corrected image goes down the chain, and changing one
motion level reruns only that level's jobs (and the learned corrector, which learns from every level)."""
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
    # the learned corrector on a test budget (trained by rule train on the train split's still R4 scans)
    unet = {"epochs": 2, "max_batches_per_epoch": 4, "batch_size": 4, "channels": 8, "val_slices": 4, "device": "cpu"}
    config.write_text(yaml.safe_dump(motion_config(methods=["none", "autofocus", "unet"], params={"unet": unet}),
                                     sort_keys=False))
    snakemake(work, *TARGETS, configfile=config)
    return work, config


def test_each_method_is_scored_against_the_still_head(motion_run):
    work, _ = motion_run
    t = pd.read_csv(work / TARGETS[0], sep="\t").pivot_table(index=["subject", "method"], columns="metric",
                                                              values="value")
    subjects = sorted(s for s in t.index.get_level_values("subject").unique() if s.startswith("sub-"))
    assert len(subjects) == 2 and set(t.index.get_level_values("method")) == {"none", "autofocus", "unet"}
    assert (t.xs("none", level="method")["auc"] == 0.5).all()  # never flags: no ranking
    assert t.xs("autofocus", level="method")["auc"].mean() > 0.5  # ranks the moved shots above the still ones
    assert t.loc[subjects, "ssim_truth"].between(0.3, 1.0).all()
    shots = pd.read_csv(work / f"results/motion/{subjects[0]}/{subjects[0]}_acq-severeR4_desc-autofocus_shots.tsv",
                        sep="\t")
    assert list(shots.columns) == ["shot", "lines", "score"] and len(shots) == 8 and (shots["lines"] > 0).all()


def test_the_learned_corrector_is_trained_once_and_read_by_its_jobs(motion_run):
    """Rule train fitted the motion U-Net on the train split's still acquisitions (its card says
    what it learned from), and each of its motion jobs was given that model."""
    import json
    import re

    work, _ = motion_run
    card = json.loads((work / "models" / "motion-unet.json").read_text())
    assert card["stage"] == "motion" and card["n_volumes"]["train"] == 4 and card["optimiser_steps"] == 8
    assert card["motion"]["levels"] == motion_config()["acquire"]["motion"]["levels"]
    log = "\n".join(p.read_text() for p in (work / ".snakemake" / "log").glob("*.snakemake.log"))
    jobs = re.findall(r"rule motion:\n(?:\s+\w+: .*\n)*?\s+wildcards: .*method=unet", log)
    assert len(jobs) == 4, jobs  # 2 test subjects x 2 levels


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
    import re

    work, config = motion_run
    cfg = yaml.safe_load(config.read_text())
    cfg["acquire"]["motion"]["levels"]["severe"]["rotation_deg"] = 2.0
    changed = config.with_name("changed.yaml")
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(work, *TARGETS, "-n", "--quiet", "rules", configfile=changed, cores="1")
    plan = planned_jobs(proc)
    # severe acquired again for the 2 test subjects and corrected by the 3 methods; the U-Net, which
    # learns from every level's movement, retrained and rerun at mild too
    assert plan.get("acquire_motion") == 2 and plan.get("train") == 1 and plan.get("motion") == 8, plan
    assert not {"acquire", "simulate_subject", "reconstruct", "tune"} & set(plan), plan
    full = snakemake(work, *TARGETS, "-n", configfile=changed, cores="1").stdout
    jobs = re.findall(r"rule motion:\n(?:\s+\w+: .*\n)*?\s+wildcards: (.*)", full)
    assert sorted(re.search(r"method=(\w+)", w)[1] for w in jobs if "acq=mildR4" in w) == ["unet", "unet"], jobs
    assert len([w for w in jobs if "acq=severeR4" in w]) == 6, jobs
