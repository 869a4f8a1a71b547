"""The run's plan: which methods run where and what each job reads, as manifests (files)."""
import copy
import json

import pytest
import yaml

from dag import TEST_CONFIG
from mrichain.plan.manifests import MANIFEST_NAMES, Plan, manifest_files, manifest_path, write_manifest
from mrichain.plan.stages import stage


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load(TEST_CONFIG.read_text())


@pytest.fixture(scope="module")
def plan(cfg):
    return Plan(cfg)


def test_cohort(plan, cfg):
    assert plan.subjects == [f"sub-{i:03d}" for i in range(1, cfg["cohort"]["n_subjects"] + 1)]
    assert set(plan.splits.values()) == {"train", "val", "test"}
    assert list(plan.acqs) == ["R4", "R1"] and plan.acqs["R4"] == (4, 0.08)


def test_methods_run_all_on_test_feed_elsewhere(plan, cfg):
    test, train = plan.test_subjects[0], plan.split_subjects("train")[0]
    assert plan.methods_run("denoise", test) == cfg["denoise"]["methods"]
    assert plan.methods_run("denoise", train) == [cfg["denoise"]["feed"]]
    assert plan.methods_run("register", test) == cfg["register"]["methods"]
    assert plan.methods_run("register", train) == []  # scored on the test split only, run only there


def test_method_inputs_follow_the_feed(cfg):
    c = copy.deepcopy(cfg)
    c["reconstruct"]["feed"] = "varnet"
    plan = Plan(c)
    inputs = plan.method_inputs("denoise", "dncnn", "sub-003", "R4")
    assert inputs == {"image": "results/recon/sub-003/sub-003_acq-R4_rec-varnet_T1w.nii.gz",
                      "model": "models/denoise-dncnn.pt"}
    reg = plan.method_inputs("register", "antssyn", "sub-003", "R1")
    assert reg["moving"] == "results/denoise/sub-003/sub-003_acq-R1_desc-antsnlm_T1w.nii.gz"
    assert reg["fixed"].endswith("tpl-MNI152NLin2009aSym_T1w.nii.gz") and "model" not in reg


def test_training_reads_what_the_stage_declares(plan):
    dn = plan.train_manifest("denoise", "dncnn")  # noise-only pairs: fully sampled acquisitions
    assert all("_acq-R1_" in item["input"] and "_acq-R1_" in item["target"] for item in dn["train"] + dn["val"])
    assert len(dn["train"]) == len(plan.split_subjects("train")) and len(dn["val"]) == len(plan.split_subjects("val"))
    vn = plan.train_manifest("reconstruct", "varnet")  # every acquisition: de-aliasing and denoising
    acqs = [item["kspace"].split("_acq-")[1].split("_")[0] for item in vn["train"]]
    assert sorted(acqs) == sorted(["R4", "R1"] * len(plan.split_subjects("train")))
    vxm = plan.train_manifest("register", "voxelmorph")  # every acquisition, plus the template
    assert len(vxm["train"]) == 2 * len(plan.split_subjects("train")) and vxm["fixed"].endswith("_T1w.nii.gz")
    sf = plan.train_manifest("predict", "sfcn")
    assert all(isinstance(item["age"], float) for item in sf["train"])
    test = set(plan.test_subjects)
    assert not any(s in json.dumps(m) for m in (dn, vn, vxm, sf) for s in test)  # no test subject trains


def test_drone_trains_on_the_dictionary_alone(plan, cfg):
    """The MRF branch's learned method trains through the same manifest as the chain's: its
    stage declares no training items, only the cohort-level dictionary; its params are
    ``mrf.params.drone`` and its card gets no imaging domain (it sees no cohort image)."""
    from mrichain.plan.config import train_params

    assert plan.train_manifest("mrf", "drone") == {"dictionary": "models/mrf-dictionary.h5"}
    assert plan.manifest("train", "mrf-drone") == plan.train_manifest("mrf", "drone")
    assert manifest_files(plan.train_manifest("mrf", "drone")) == ["models/mrf-dictionary.h5"]
    assert train_params(cfg, "mrf", "drone") == cfg["mrf"]["params"]["drone"]
    full = copy.deepcopy(cfg)
    full["mrf"]["params"]["drone"]["noise_snr_range"] = [20, 50]  # no coil count joins DRONE's (dncnn's would)
    assert train_params(full, "mrf", "drone") == full["mrf"]["params"]["drone"]
    assert plan.train_domain("mrf", "drone") is None
    assert plan.train_domain("segment", "unet")["contrast"] == cfg["acquire"]["contrast"]
    assert "mrf" in plan.trained_stages and "acquire" not in plan.trained_stages
    no_mrf = copy.deepcopy(cfg)
    del no_mrf["mrf"]
    assert Plan(no_mrf).trained_stages == ["reconstruct", "denoise", "register", "segment", "predict"]


def test_score_manifest(plan):
    seg = plan.score_manifest("segment", "R4")
    assert set(seg["subjects"]) == set(plan.subjects)
    test, train = plan.test_subjects[0], plan.split_subjects("train")[0]
    assert set(seg["subjects"][test]["methods"]) == {"kmeans", "atropos", "unet"}
    assert set(seg["subjects"][train]["methods"]) == {"atropos"}
    assert seg["subjects"][test]["reference"] == f"results/groundtruth/{test}/{test}_dseg.nii.gz"
    reg = plan.score_manifest("register", "R1")
    assert set(reg["subjects"]) == set(plan.test_subjects)
    pred = plan.score_manifest("predict", "R4")
    assert pred["methods"]["linear"]["predictions"] == "results/predict/acq-R4_desc-linear_predictions.tsv"
    files = manifest_files(seg)
    assert seg["cards"] == {"unet": "models/segment-unet.json"}  # whether the learned method beat its start
    assert all(f.startswith("results/") for f in files if f not in seg["cards"].values())
    assert f"results/segment/{train}/{train}_acq-R4_desc-atropos_dseg.nii.gz" in files


def test_job_manifest_of_a_cohort_level_stage(plan):
    job = plan.job_manifest("predict", "linear", "R4")
    cohort = plan.subjects + plan.age_subjects
    assert job["subjects"] == cohort and len(job["labels"]) == len(cohort) == len(job["info"])
    assert "images" not in job and job["labels"][0].startswith("results/segment/")
    inputs = plan.method_inputs("predict", "sfcn", None, "R1")
    assert inputs["manifest"] == "results/manifests/job/predict_acq-R1_sfcn.json"
    assert inputs["model"] == "models/predict-sfcn.pt"
    assert len(inputs["files"]) == 2 * len(cohort)  # one image and one info file per subject
    assert not any(s in inputs["files"] for s in plan.subjects)  # ids are not files


@pytest.mark.parametrize("kind,names", [("score", dict(acq="R4", stage="denoise")),
                                        ("train", dict(stage="segment", method="unet")),
                                        ("train", dict(stage="mrf", method="drone")),
                                        ("job", dict(stage="predict", acq="R1", method="linear")),
                                        ("tune", dict(stage="register", method="antssyn"))])
def test_manifest_names_round_trip(plan, kind, names, tmp_path):
    path = manifest_path(kind, **names)
    assert path == f"results/manifests/{kind}/{MANIFEST_NAMES[kind].format(**names)}.json"
    name = path.rsplit("/", 1)[1][: -len(".json")]
    m = plan.manifest(kind, name)
    write_manifest(m, tmp_path / "m.json", tmp_path / "m.log")
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads(json.dumps(m))
    with pytest.raises(ValueError, match="no manifest"):
        plan.manifest(kind, "nonsense")


def untuned(cfg):
    c = copy.deepcopy(cfg)
    for section in c.values():
        if isinstance(section, dict):
            section.pop("tune", None)
    return c


def test_which_jobs_wait_for_a_trained_model(cfg):
    plan = Plan(untuned(cfg))  # feeds are classical and untuned: only the learned methods' own jobs wait
    assert plan.reads_model("denoise", "dncnn") and not plan.reads_model("denoise", "antsnlm")
    assert not plan.reads_model("segment", "atropos") and not plan.reads_model("acquire")
    c = untuned(cfg)
    c["reconstruct"]["feed"] = "varnet"  # a learned feed: everything downstream waits for VarNet
    plan = Plan(c)
    assert plan.reads_model("denoise", "antsnlm") and plan.reads_model("register", "antssyn")
    assert plan.reads_model("segment", "atropos") and not plan.reads_model("reconstruct", "zerofilled")


def test_tuned_methods_read_their_card_and_wait_for_it(cfg):
    c = copy.deepcopy(cfg)
    c["denoise"]["tune"] = {"antsnlm": {"search_radius": [1, 2]}}
    plan = Plan(c)  # a tuned denoise feed (antsnlm): its jobs and everything after wait for its card
    assert ("denoise", "antsnlm") in plan.tuned_run() and ("reconstruct", "zerofilled") not in plan.tuned_run()
    assert plan.reads_model("denoise", "antsnlm") and plan.reads_model("segment", "kmeans")
    assert not plan.reads_model("reconstruct", "zerofilled")
    sub = plan.test_subjects[0]
    assert plan.method_inputs("denoise", "antsnlm", sub, "R1")["tuning"] == "results/tuning/denoise-antsnlm.json"
    assert "tuning" not in plan.method_inputs("segment", "kmeans", sub, "R1")


def test_tune_manifest_reads_the_val_split_at_the_training_acquisition(plan):
    cs = plan.tune_manifest("reconstruct", "cs")
    assert cs["acq"] == "R4"  # CS is tuned on undersampled data (VarNet trains on every acquisition)
    assert set(cs["subjects"]) == set(plan.split_subjects("val"))
    sub = next(iter(cs["subjects"]))
    assert cs["subjects"][sub]["inputs"] == {"kspace": f"results/kspace/{sub}/{sub}_acq-R4_T1w.h5"}
    assert set(cs["subjects"][sub]["score"]) == {"reference", "truth", "mask"}
    assert plan.tune_acq(stage("denoise")) == "R1"  # the denoiser trains (and tunes) on fully sampled pairs
    lin = plan.tune_manifest("predict", "linear")["job"]
    assert set(lin["splits"].values()) == {"train", "val"} and len(lin["labels"]) == len(lin["subjects"])


def test_age_subjects_train_only_the_age_models(plan, cfg):
    extra = plan.age_subjects
    assert extra == [f"sub-{i:03d}" for i in range(len(plan.subjects) + 1, len(plan.subjects) + 1 + len(extra))]
    assert extra and all(plan.splits[s] == "train" for s in extra)
    assert not set(extra) & set(plan.split_subjects("train", "val", "test"))
    job = plan.job_manifest("predict", "linear", "R4")
    assert job["subjects"][-len(extra):] == extra
    by_sub = dict(zip(job["subjects"], job["labels"]))
    test, train = plan.test_subjects[0], plan.split_subjects("train")[0]
    assert "acq-R4" in by_sub[test] and "acq-R1" in by_sub[train] and "acq-R1" in by_sub[extra[0]]
    sfcn = plan.train_manifest("predict", "sfcn")
    assert {i["image"].split("/")[2] for i in sfcn["train"]} == set(plan.split_subjects("train")) | set(extra)
    for s, m in (("segment", "unet"), ("denoise", "dncnn")):  # image stages never see them
        assert not any(e in json.dumps(plan.train_manifest(s, m)) for e in extra)
    for s in ("reconstruct", "segment", "register"):
        assert not set(extra) & set(plan.score_manifest(s, "R4").get("subjects", {}))
    assert not any(e in json.dumps(plan.tune_manifest("segment", "atropos")) for e in extra)
    assert set(extra) <= set(plan.tune_manifest("predict", "linear")["job"]["subjects"])


def test_conditions_of_each_stage(plan):
    """Acquisitions everywhere; the sweep after reconstruction; the oracle where every feed read
    has an ideal (denoising reads the reconstruction, whose ideal is denoising's own target)."""
    sweep = ["R4cs", "R4varnet"]  # not at R1: the fully sampled feed chain is the reference
    assert plan.stage_conditions("acquire") == plan.stage_conditions("reconstruct") == ["R4", "R1"]
    assert plan.stage_conditions("denoise") == ["R4", "R1"] + sweep
    for s in ("segment", "register", "predict"):
        assert plan.stage_conditions(s) == ["R4", "R1"] + sweep + ["oracle"], s


def test_sweep_and_oracle_run_feed_methods_on_the_test_split(plan, cfg):
    test, train = plan.test_subjects[0], plan.split_subjects("train")[0]
    assert plan.methods_run("denoise", test, "R4cs") == [cfg["denoise"]["feed"]]
    assert plan.methods_run("segment", test, "R4varnet") == [cfg["segment"]["feed"]]
    assert plan.methods_run("register", test, "R4cs") == cfg["register"]["methods"]  # no feed: all
    assert plan.methods_run("segment", test, "oracle") == cfg["segment"]["methods"]
    assert plan.methods_run("denoise", train, "R4cs") == [] and plan.methods_run("segment", train, "oracle") == []
    m = plan.score_manifest("segment", "R4cs")
    assert set(m["subjects"]) == set(plan.test_subjects)


def test_sweep_methods_of_stages_without_a_feed(cfg):
    """error_budget.sweep_methods: a feedless stage runs only those at the sweep's conditions (its
    jobs and score manifests), all its methods at the acquisitions and the oracle."""
    c = copy.deepcopy(cfg)
    c["error_budget"]["sweep_methods"] = {"register": ["antssyn"], "predict": ["linear"]}
    p = Plan(c)
    test = p.test_subjects[0]
    assert p.methods_run("register", test, "R4cs") == ["antssyn"]
    assert p.methods_run("register", test, "R4") == p.methods_run("register", test, "oracle") == cfg["register"]["methods"]
    assert set(p.score_manifest("register", "R4varnet")["subjects"][test]["methods"]) == {"antssyn"}
    assert set(p.score_manifest("predict", "R4cs")["methods"]) == {"linear"}
    assert set(p.score_manifest("predict", "oracle")["methods"]) == set(cfg["predict"]["methods"])


def test_sweep_methods_of_reconstruction_choose_the_sweep_conditions(cfg):
    """error_budget.sweep_methods.reconstruct: only those reconstructions are swept downstream (one
    condition each at the undersampled acquisition); their jobs at the acquisitions are unchanged."""
    c = copy.deepcopy(cfg)
    c["error_budget"]["sweep_methods"] = {"reconstruct": ["varnet"]}
    p = Plan(c)
    assert list(p.conditions) == ["R4", "R1", "R4varnet", "oracle"]  # test.yaml sweeps R4cs and R4varnet
    assert p.stage_conditions("segment") == ["R4", "R1", "R4varnet", "oracle"]
    test = p.test_subjects[0]
    assert p.methods_run("reconstruct", test, "R4") == cfg["reconstruct"]["methods"]
    c["error_budget"]["sweep_methods"] = {"reconstruct": [cfg["reconstruct"]["feed"]]}  # the feed: no sweep
    assert list(Plan(c).conditions) == ["R4", "R1", "oracle"]


def test_sweep_and_oracle_inputs(plan):
    sub = plan.test_subjects[0]
    # R4cs: denoising reads CS's reconstruction at R4; later stages read their feed at R4cs
    assert plan.method_inputs("denoise", "antsnlm", sub, "R4cs")["image"].endswith(f"{sub}_acq-R4_rec-cs_T1w.nii.gz")
    assert plan.method_inputs("segment", "atropos", sub, "R4cs")["image"].endswith(f"{sub}_acq-R4cs_desc-antsnlm_T1w.nii.gz")
    assert plan.score_manifest("denoise", "R4cs")["subjects"][sub]["input"].endswith("_acq-R4_rec-cs_T1w.nii.gz")
    # oracle: the noise-free fully sampled image for segmentation, the true labels for the volume age model
    assert plan.method_inputs("segment", "unet", sub, "oracle")["image"] == plan.resolve("noisefree", sub, "R1")
    job = plan.job_manifest("predict", "linear", "oracle")
    assert all(p.endswith("_dseg.nii.gz") and "groundtruth" in p for p in job["labels"])  # fit and applied on truth
    assert set(job["splits"].values()) == {"train", "test"}
    with pytest.raises(ValueError, match="no ideal"):
        plan.resolve("feed.reconstruct", sub, "oracle")
    # a sweep condition: the model fits at its training acquisition, the test split is read at R4cs
    job = plan.job_manifest("predict", "linear", "R4cs")
    for s, path in zip(job["subjects"], job["labels"]):
        assert ("_acq-R1_" in path) if job["splits"][s] == "train" else ("_acq-R4cs_" in path)
    assert "val" not in set(job["splits"].values())


@pytest.mark.parametrize("sweep, oracle", [(False, True), (True, False), (False, False)])
def test_error_budget_switches(cfg, sweep, oracle):
    """error_budget.sweep / .oracle off: no derived condition of that kind is planned, anywhere."""
    cfg = {**cfg, "error_budget": {"sweep": sweep, "oracle": oracle}}
    plan = Plan(cfg)
    sweep_labels = ["R4cs", "R4varnet"] if sweep else []
    assert plan.stage_conditions("segment") == ["R4", "R1"] + sweep_labels + (["oracle"] if oracle else [])
    assert plan.stage_conditions("denoise") == ["R4", "R1"] + sweep_labels


def test_age_subjects_give_the_age_models_a_val_split(cfg):
    """With enough age subjects a share of them (the cohort's train:val ratio) validate the age
    models: in their training manifests' val items and in the linear model's tuning, read at the
    training acquisition (the only one they are acquired at), never in the image stages."""
    c = copy.deepcopy(cfg)
    c["cohort"]["n_age_train_subjects"] = 8
    c["cohort"]["split"] = {"train": 0.6, "val": 0.2, "test": 0.2}
    plan = Plan(c)
    age_val = [s for s in plan.age_subjects if plan.splits[s] == "val"]
    assert len(age_val) == 2 and len(plan.age_subjects) == 8  # round(8 * 0.2 / 0.8)
    mlp = plan.train_manifest("predict", "mlp")
    val_subjects = {i["labels"].split("/")[2] for i in mlp["val"]}
    assert val_subjects == set(plan.split_subjects("val")) | set(age_val)
    assert all("acq-R1" in i["labels"] for i in mlp["val"])
    assert set(mlp["train"][0]) == {"labels", "age"}  # the method's own training reads
    job = plan.job_manifest("predict", "mlp", "R4")
    by_sub = dict(zip(job["subjects"], job["labels"]))
    assert all(job["splits"][s] == "val" and "acq-R1" in by_sub[s] for s in age_val)
    assert set(age_val) <= set(plan.tune_manifest("predict", "linear")["job"]["subjects"])
    assert not any(e in json.dumps(plan.train_manifest("segment", "unet")) for e in plan.age_subjects)
    swept = plan.job_manifest("predict", "linear", "R4cs")  # no val split at a sweep condition
    assert not set(age_val) & set(swept["subjects"])
