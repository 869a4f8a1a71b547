"""Paths: one builder for every file name, wildcards kept where arguments are left out."""
from mrichain.plan import layout
from mrichain.plan.stages import stage


def test_bids_names():
    assert (layout.bids("results/denoise", sub="sub-003", acq="R4", desc="antsnlm", suffix="T1w")
            == "results/denoise/sub-003/sub-003_acq-R4_desc-antsnlm_T1w.nii.gz")
    assert layout.bids("results/predict", acq="R1", desc="linear", suffix="model", ext=".json") == \
        "results/predict/acq-R1_desc-linear_model.json"
    # BIDS entity order whatever the keyword order
    assert layout.bids("r", desc="x", space="S", acq="R2", rec="y", sub="sub-1", suffix="T1w", ext="") == \
        "r/sub-1/sub-1_acq-R2_space-S_rec-y_desc-x_T1w"


def test_stage_outputs_are_patterns_or_paths():
    pattern = layout.stage_outputs(stage("reconstruct"), "T2w")
    assert pattern == {"image": "results/recon/{sub}/{sub}_acq-{acq}_rec-{method}_T2w.nii.gz"}
    reg = layout.stage_outputs(stage("register"), "T1w", "sub-002", "R4", "antssyn")
    assert reg["labels"] == "results/register/sub-002/sub-002_acq-R4_space-MNI152NLin2009aSym_desc-antssyn_dseg.nii.gz"
    assert reg["timing"].endswith("_desc-antssyn_reg.json") and set(reg) == {"image", "labels", "jacobian", "timing"}
    pred = layout.stage_outputs(stage("predict"), "T1w", None, "R4", "sfcn")
    assert pred == {"predictions": "results/predict/acq-R4_desc-sfcn_predictions.tsv",
                    "model": "results/predict/acq-R4_desc-sfcn_model.json"}


def test_cohort_files():
    assert layout.template("brain_mask") == "results/template/tpl-MNI152NLin2009aSym_desc-brain_mask.nii.gz"
    assert layout.groundtruth("warp", "sub-004") == "results/groundtruth/sub-004/sub-004_desc-warp_xfm.nii.gz"
    assert layout.groundtruth_files()["info"] == "results/groundtruth/{sub}/{sub}_info.json"
    assert layout.kspace("T1w", "sub-001", "R4") == "results/kspace/sub-001/sub-001_acq-R4_T1w.h5"
    assert layout.noisefree("T1w") == "results/groundtruth/{sub}/{sub}_acq-{acq}_desc-noisefree_T1w.nii.gz"
    assert layout.model("segment", "unet", "_curve.tsv") == "models/segment-unet_curve.tsv"
    assert layout.job_name(stage("denoise"), "sub-001", "R1", "dncnn") == "sub-001_acq-R1_dncnn"
    assert layout.job_name(stage("predict"), None, "R1", "sfcn") == "acq-R1_sfcn"


def test_simulator_writes_the_layout_names(tmp_path):
    """The simulator's file names are the layout's (one definition, used by both)."""
    from mrichain.simulate.cohort import subject_files
    from mrichain.simulate.template import FILES

    files = subject_files("sub-007", tmp_path / "sub-007")
    for key, path in files.items():
        assert str(path) == layout.groundtruth(key, "sub-007", root=str(tmp_path)), key
    for key, name in FILES.items():
        assert layout.template(key).endswith("/" + name)
