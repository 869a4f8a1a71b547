"""Real inputs in the DAG: the plan of a fastMRI directory, model-card domain checks,
the summary of scores with and without a reference."""
import copy
import json

import pandas as pd
import pytest
import yaml

from fastmri_files import write_fastmri_file
from mrichain import UserError
from mrichain.plan.manifests import Plan
from mrichain.realdata.domain import check_domain, domain_of_config
from mrichain.realdata.plan import RealPlan, fastmri_inputs, key_dir

from dag import ROOT


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load(open(ROOT / "config" / "test.yaml"))


@pytest.fixture(scope="module")
def fastmri_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fastmri")
    write_fastmri_file(d / "file_brain_AXT1POST_200_6002026.h5", n_slices=2, acquisition="AXT1POST")
    write_fastmri_file(d / "file_brain_AXFLAIR_201_6003001.h5", n_slices=2, seed=1, acquisition="AXFLAIR")
    return d


def test_fastmri_directory_gives_one_bids_subject_per_file(fastmri_dir):
    items = fastmri_inputs(fastmri_dir)
    assert [i.key for i in items] == ["sub-filebrainAXFLAIR2016003001", "sub-filebrainAXT1POST2006002026"]
    assert [i.suffix for i in items] == ["FLAIR", "T1w"]
    assert items[1].entities == {"subject": "filebrainAXT1POST2006002026"}
    (fastmri_dir / "unknown").mkdir(exist_ok=True)
    write_fastmri_file(fastmri_dir / "unknown" / "x.h5", n_slices=1, acquisition="SAGT1")
    with pytest.raises(UserError, match=r"x.h5: fastMRI acquisition 'SAGT1' has no BIDS suffix"):
        fastmri_inputs(fastmri_dir / "unknown")


def test_fastmri_directory_errors_name_the_key_or_files(tmp_path, fastmri_dir):
    with pytest.raises(UserError, match=r"config key 'input.dir': .*missing.* is not a directory"):
        fastmri_inputs(tmp_path / "missing")
    with pytest.raises(UserError, match=r"config key 'input.dir': .* holds no .h5 file"):
        fastmri_inputs(tmp_path)
    write_fastmri_file(tmp_path / "a_1.h5", n_slices=1)
    write_fastmri_file(tmp_path / "a1.h5", n_slices=1)
    with pytest.raises(UserError, match=r"a1.h5 and .*/a_1.h5 give the same BIDS subject label sub-a1"):
        fastmri_inputs(tmp_path)


def test_fastmri_plan_paths_and_targets(cfg, fastmri_dir):
    c = copy.deepcopy(cfg)
    c["input"] = {"kind": "fastmri", "dir": str(fastmri_dir), "accelerations": [4, 1], "center_fractions": [0.08, 0.08]}
    real = RealPlan(c, Plan(c))
    key = "sub-filebrainAXT1POST2006002026"
    assert list(real.acqs) == ["R4", "R1"]
    assert real.stage_output("reconstruct", key, "cs", "R4") == (
        f"results/derivatives/mrichain/{key}/anat/{key}_acq-R4_rec-cs_T1w.nii.gz")
    feed = c["reconstruct"]["feed"]
    assert real.stage_output("denoise", key, "dncnn", "R4").endswith(f"{key}_acq-R4_rec-{feed}_desc-dncnn_T1w.nii.gz")
    # every reconstruction and denoising method at every acceleration, scored once per (file, acceleration)
    n = len(c["reconstruct"]["methods"]) + len(c["denoise"]["methods"]) + 1
    assert len(real.outputs()) == 2 * 2 * n
    assert set(real.summary_files()) == {"description", "metrics", "table"}  # no brain age for k-space inputs
    m = real.summary_manifest()
    assert len(m["fastmri_scores"]) == 4 and set(m["stages"]) == {"reconstruct", "denoise"}


def test_key_dir_follows_bids_folders():
    assert key_dir("sub-01") == "sub-01/anat"
    assert key_dir("sub-01_ses-02_run-1") == "sub-01/ses-02/anat"


def test_domain_check_refuses_contrast_warns_geometry(cfg):
    card = {"domain": domain_of_config(cfg)}
    assert card["domain"] == {"contrast": "T1w", "voxel_mm": 4.0, "n_coils": 4, "snr": 15.0}
    with pytest.raises(UserError, match=r"model m.pt applied to x.nii.gz: the input is FLAIR, the model was trained on T1w"):
        check_domain(card, "m.pt", "x.nii.gz", contrast="FLAIR")
    assert check_domain(card, "m.pt", "x.nii.gz", contrast="T1w", voxel_mm=(4.1, 4.0, 3.9)) == []  # within 10 %
    msgs = check_domain(card, "m.pt", "x.h5", contrast="T1w", voxel_mm=(0.7, 0.7, 5.0), n_coils=16)
    assert len(msgs) == 2 and "voxel size 0.7, 0.7, 5 mm, trained at 4 mm" in msgs[0] and "16 coils, trained on 4" in msgs[1]
    with pytest.raises(UserError, match="has no 'domain'"):
        check_domain({}, "old.pt", "x.nii.gz", contrast="T1w")


def test_summary_scores_what_has_a_reference(tmp_path):
    from mrichain.realdata.derivatives import check_names
    from mrichain.realdata.run import NO_REFERENCE, summarise

    scores = tmp_path / "s.tsv"
    pd.DataFrame([dict(key="sub-a", acq="R4", method=m, metric=k, value=v, note="")
                  for m, k, v in [("cs", "ssim", 0.9), ("cs", "psnr", 30.0), ("zerofilled", "ssim", 0.7)]]
                 ).to_csv(scores, sep="\t", index=False)
    root = tmp_path / "deriv"
    preds, scans = {}, {}
    for key, folder, age, pred in (("sub-01_ses-01", "sub-01/ses-01", 40.0, 45.0), ("sub-02", "sub-02", None, 50.0)):
        p = tmp_path / f"{key}.tsv"
        pd.DataFrame([{"subject": "sub-001", "split": "train", "age": 30, "predicted_age": 31},
                      {"subject": key, "split": "real", "age": age, "predicted_age": pred}]).to_csv(p, sep="\t", index=False)
        preds[key] = {"linear": str(p)}
        image = root / folder / "anat" / f"{key}_desc-antsnlm_T1w.nii.gz"
        image.parent.mkdir(parents=True)
        image.write_bytes(b"")
        scans[key] = {"table": str(root / folder / f"{key}_scans.tsv"), "filename": f"anat/{image.name}"}
    manifest = {"kind": "bids", "source": None, "stages": {"denoise": ["antsnlm"], "segment": ["atropos"],
                                                           "predict": ["linear"]},
                "fastmri_scores": [str(scores)], "predictions": preds, "scans": scans,
                "entities": {"sub-01_ses-01": {"subject": "01", "session": "01"}, "sub-02": {"subject": "02"}}}
    out = {"metrics": tmp_path / "m.json", "table": tmp_path / "t.tsv", "brain_age": tmp_path / "b.tsv",
           "description": root / "dataset_description.json"}
    metrics = summarise(manifest, out, version="0.1.0")
    assert metrics["reconstruct"]["cs@R4"] == {"ssim": 0.9, "psnr": 30.0, "n": 1}
    assert metrics["denoise"] == {"antsnlm": NO_REFERENCE} and metrics["segment"] == {"atropos": NO_REFERENCE}
    assert metrics["predict"]["linear"] == {"mae_years": 5.0, "n": 1}  # only the subject with a known age
    ages = pd.read_csv(out["brain_age"], sep="\t")
    assert list(ages["participant_id"]) == ["sub-01", "sub-02"] and list(ages["session_id"].fillna("n/a")) == ["ses-01", "n/a"]
    scan = pd.read_csv(scans["sub-02"]["table"], sep="\t")
    assert list(scan.columns) == ["filename", "age", "brainage_linear"] and scan["brainage_linear"].iloc[0] == 50.0
    desc = json.loads(out["description"].read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "mrichain"
    assert (root / "dseg.tsv").exists() and check_names(root) == []


def test_rule_patterns_name_files_as_the_bids_path_builder_does(cfg, fastmri_dir):
    """RealPlan writes derivative names as Snakemake patterns (a folder wildcard per key); filled
    in, they are the names mrichain.realdata.derivatives.derivative_path builds from the schema."""
    from mrichain.realdata.derivatives import derivative_path

    c = copy.deepcopy(cfg)
    c["input"] = {"kind": "fastmri", "dir": str(fastmri_dir), "accelerations": [4], "center_fractions": [0.08]}
    real = RealPlan(c, Plan(c))
    key = "sub-filebrainAXT1POST2006002026"
    pattern = real.derivative(acq="R4", rec="cs", desc="dncnn")
    filled = pattern.format(realdir=key_dir(key), real=key, suffix="T1w")
    built = derivative_path(real.root, {"subject": key[4:], "acquisition": "R4", "reconstruction": "cs"},
                            desc="dncnn", suffix="T1w", extension=".nii.gz")
    assert filled == real.derivative(key, acq="R4", rec="cs", desc="dncnn") == str(built)
    bids_key = "sub-01_ses-02_run-1"
    filled = real.derivative(desc="atropos", suffix="dseg").format(realdir=key_dir(bids_key), real=bids_key)
    built = derivative_path(real.root, {"subject": "01", "session": "02", "run": "1"}, desc="atropos",
                            suffix="dseg", extension=".nii.gz")
    assert filled == str(built)


def test_models_dir_cards_are_checked_before_use(cfg, tmp_path):
    """input.models_dir: every learned method reads its weights there; a missing file, a card
    without its training domain or one trained on another contrast or voxel size is an error
    naming the file and the key."""
    from mrichain.realdata.domain import check_models_dir

    c = copy.deepcopy(cfg)
    c["input"] = {"kind": "simulated", "models_dir": str(tmp_path)}
    plan = Plan(c)
    assert plan.model("segment", "unet") == f"{tmp_path}/segment-unet.pt"
    learned = plan.learned_run()
    for s, m in learned:
        (tmp_path / f"{s}-{m}.pt").write_bytes(b"weights")
        (tmp_path / f"{s}-{m}.json").write_text(json.dumps({"domain": domain_of_config(c)}))
    check_models_dir(c, learned, tmp_path)  # all present and matching: no error
    s, m = learned[0]
    (tmp_path / f"{s}-{m}.json").write_text(json.dumps({"domain": {**domain_of_config(c), "contrast": "T2w"}}))
    (tmp_path / f"{learned[1][0]}-{learned[1][1]}.pt").unlink()
    with pytest.raises(UserError) as exc:
        check_models_dir(c, learned, tmp_path)
    msg = str(exc.value)
    assert msg.startswith("config key 'input.models_dir'")
    assert f"{s}-{m}.json: trained on T2w at 4 mm, this run's cohort is T1w at 4 mm" in msg
    assert f"{learned[1][0]}-{learned[1][1]}.pt: missing" in msg


def test_summary_flags_the_scan_whose_motion_score_stands_out(tmp_path):
    """Each input's EFC (from its info JSON) goes to scans.tsv and the table; the one far above the
    others is flagged, the rest are not; a run of fewer scans flags none (n/a)."""
    from mrichain.realdata.run import summarise

    root = tmp_path / "deriv"
    efcs = {"sub-01": 0.412, "sub-02": 0.405, "sub-03": 0.418, "sub-04": 0.409, "sub-05": 0.415, "sub-06": 0.52}

    def manifest(keys):
        preds, scans, info = {}, {}, {}
        for key in keys:
            p = tmp_path / f"{key}.tsv"
            pd.DataFrame([{"subject": "sub-001", "split": "train", "age": 30, "predicted_age": 31},
                          {"subject": key, "split": "real", "age": 50.0, "predicted_age": 52.0}]).to_csv(p, sep="\t", index=False)
            preds[key] = {"linear": str(p)}
            image = root / key / "anat" / f"{key}_desc-antsnlm_T1w.nii.gz"
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"")
            scans[key] = {"table": str(root / key / f"{key}_scans.tsv"), "filename": f"anat/{image.name}"}
            info[key] = tmp_path / f"{key}_info.json"
            info[key].write_text(json.dumps({"age": 50.0, "source": "x", "efc": efcs[key]}))
            info[key] = str(info[key])
        return {"kind": "bids", "source": None, "stages": {"predict": ["linear"]}, "predictions": preds,
                "scans": scans, "info": info, "entities": {k: {"subject": k[4:]} for k in keys}}

    out = {"metrics": tmp_path / "m.json", "table": tmp_path / "t.tsv", "brain_age": tmp_path / "b.tsv",
           "description": root / "dataset_description.json"}
    summarise(manifest(list(efcs)), out, version="0.1.0")
    flagged = {k: pd.read_csv(root / k / f"{k}_scans.tsv", sep="\t", dtype=str, keep_default_na=False).iloc[0]
               for k in efcs}
    assert [k for k, r in flagged.items() if r["motion_flagged"] == "true"] == ["sub-06"]
    assert all(r["motion_flagged"] == "false" for k, r in flagged.items() if k != "sub-06")
    assert float(flagged["sub-03"]["motion_efc"]) == pytest.approx(0.418)
    table = pd.read_csv(out["table"], sep="\t", keep_default_na=False)
    rows = table[table.metric == "motion_efc"]
    assert len(rows) == 6 and list(rows[rows.note == "flagged"]["key"]) == ["sub-06"]
    assert "motion_flagged" in json.loads((root / "scans.json").read_text())

    summarise(manifest(["sub-01", "sub-06"]), out, version="0.1.0")  # two scans: nothing to compare with
    again = pd.read_csv(root / "sub-06" / "sub-06_scans.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert again.iloc[0]["motion_flagged"] == "n/a"
