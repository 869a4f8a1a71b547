"""The MRF branch's jobs (mrichain.mrf.run: dictionary file, maps per method, scores) and its plan
(mrichain.mrf.plan: what the DAG runs), and its rows in metrics.json / comparison.tsv."""
import copy
import json

import numpy as np
import pandas as pd
import pytest

from mrichain.plan import layout
from mrichain.scoring.aggregate import aggregate
from mrichain.plan.config import ConfigError, load_config, validate_config
from mrichain.io import load_image, save_image
from mrichain.plan.manifests import Plan
from mrichain.mrf import run
from mrichain.mrf.plan import MrfPlan
from mrichain.plan.stages import MRF_STAGE
from mrichain.simulate.cohort import Subject, write_subject
from mrichain.simulate.tissue import TISSUE_PARAMS_3T

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MRF = {
    "sequence": {"n_timepoints": 150, "n_lobes": 2, "seed": 0},
    "dictionary": {"t1_range_ms": [200, 5000], "t1_steps": 40, "t2_range_ms": [20, 2500], "t2_steps": 40,
                   "svd_rank": 10, "n_states": 24},
    "acquire": {"snr_db": 40, "n_slices": 2, "b1_amplitude": 0},
    "methods": ["constant", "matching", "matchingsvd", "drone"],
}
T1W = {"tr_ms": 20.0, "te_ms": 4.0, "flip_deg": 25.0}


def _subject() -> Subject:
    """10 x 6 x 6 voxels: blocks of pure CSF, GM, WM along x in slices z = 1..4, background elsewhere."""
    shape = (10, 6, 6)
    probs = np.zeros((4,) + shape, np.float32)
    probs[0] = 1.0
    for x0, tissue in ((1, 1), (4, 2), (7, 3)):
        probs[:, x0:x0 + 3, 1:5, 1:5] = 0.0
        probs[tissue, x0:x0 + 3, 1:5, 1:5] = 1.0
    labels = np.argmax(probs, 0).astype(np.uint8)
    table = [0.0] + [TISSUE_PARAMS_3T[t] for t in ("CSF", "GM", "WM")]
    maps = {k: np.tensordot(np.array([0.0] + [p[k] for p in table[1:]]), probs, 1).astype(np.float32)
            for k in ("T1", "T2", "PD")}
    info = {"age": 40.0, "split": "test", "tissue_params": TISSUE_PARAMS_3T}
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return Subject("sub-001", 40.0, "test", probs, labels, (labels > 0).astype(np.uint8), maps["T1"], maps["T2"],
                   maps["PD"], np.ones(shape, np.float32), np.zeros(shape + (3,), np.float32), affine,
                   TISSUE_PARAMS_3T, info)


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """Every method's maps of one subject, as the rules write them."""
    from mrichain.mrf import drone

    root = tmp_path_factory.mktemp("mrf")
    subj = _subject()
    write_subject(subj, root / "sub-001")
    info = run.write_dictionary(MRF, root / "dictionary.h5")
    drone.train({"dictionary": str(root / "dictionary.h5")}, {"epochs": 3, "batch_size": 64, "n_val": 64},
                str(root / "drone.pt"), 0, progress=False)
    outs = {}
    for method in MRF["methods"]:
        files = {k: str(root / f"{method}_{k}.{'json' if k == 'timing' else 'nii.gz'}") for k in MRF_STAGE.outputs}
        run.map_subject(method, root / "sub-001", root / "dictionary.h5", MRF, 3, files, contrast="T1w",
                        seq_params=T1W, model=str(root / "drone.pt") if method == "drone" else None)
        outs[method] = files
    return root, subj, info, outs


def test_drone_trains_through_the_trainer_registry(mapped, tmp_path):
    """``mrichain train --stage mrf --method drone`` (rule ``train``) on the manifest that names the
    dictionary file trains the network the trainer writes, byte for byte; its card records no
    imaging domain (``--domain null``: it learned from the dictionary, not the cohort)."""
    from mrichain import cli
    from mrichain.mrf import drone
    from mrichain.plan.stages import trainer_registry

    root = mapped[0]
    manifest = tmp_path / "mrf-drone.json"
    manifest.write_text(json.dumps({"dictionary": str(root / "dictionary.h5")}))
    params = {"epochs": 3, "batch_size": 64, "n_val": 64}
    assert cli.main(["train", "--stage", "mrf", "--method", "drone", "--manifest", str(manifest), "--params",
                     json.dumps(params), "--seed", "0", "--out", str(tmp_path / "drone.pt"), "--domain", "null"]) == 0
    # the fixture's network (same manifest, params and seed; torch.save names the archive after the file)
    assert (tmp_path / "drone.pt").read_bytes() == (root / "drone.pt").read_bytes()
    assert "domain" not in json.loads((tmp_path / "drone.json").read_text())
    assert trainer_registry("mrf")["drone"] is drone.train


def test_central_slices_sit_in_the_middle_of_the_brain():
    mask = np.zeros((3, 3, 12), bool)
    mask[1, 1, 2:10] = True
    assert run.central_slices(mask, 4) == [4, 5, 6, 7]
    assert run.central_slices(mask, 1) == [5]  # of 8 slices, the lower middle one
    assert run.central_slices(mask, 50) == list(range(2, 10))  # never outside the brain
    with pytest.raises(ValueError, match="empty"):
        run.central_slices(np.zeros((2, 2, 2)), 2)


def test_dictionary_file_reports_its_size(mapped):
    _, _, info, _ = mapped
    assert info["atoms"] > 500 and info["rank"] == 10
    assert info["quantisation_error"] == pytest.approx(np.sqrt(125 ** (1 / 39)) - 1)  # T2: 40 log steps over 125x


def test_maps_of_every_method_on_the_mapped_slices(mapped):
    _, subj, _, outs = mapped
    slices = json.loads(open(outs["matching"]["timing"]).read())["slices"]
    assert slices == [2, 3]
    inside = np.zeros(subj.labels.shape, bool)
    inside[:, :, slices] = subj.brain_mask[:, :, slices] > 0
    for method, files in outs.items():
        t1 = np.asarray(load_image(files["T1map"]).dataobj)
        assert (t1[~inside] == 0).all() and (t1[inside] > 0).all(), method
        np.testing.assert_array_equal(load_image(files["T1map"]).affine, subj.affine)
    t1c = np.asarray(load_image(outs["constant"]["T1map"]).dataobj)
    assert np.unique(t1c[inside]).tolist() == [TISSUE_PARAMS_3T["WM"]["T1"]]
    # matching at 40 dB on pure-tissue voxels: the grid point next to the truth (4-5 % steps)
    for method in ("matching", "matchingsvd"):
        t1 = np.asarray(load_image(outs[method]["T1map"]).dataobj)[inside]
        assert np.median(np.abs(t1 / subj.t1map[inside] - 1)) < 0.06, method
    synth = np.asarray(load_image(outs["matching"]["T1w"]).dataobj)
    assert (synth[~inside] == 0).all()
    csf, wm = synth[2, 2, 2], synth[8, 2, 2]
    assert wm > csf > 0  # T1w contrast: short-T1 white matter brighter than CSF


def test_scores_rows_speedup_and_downstream_dice(mapped, tmp_path):
    root, subj, _, outs = mapped
    gt = layout.groundtruth_files("sub-001", root=str(root))
    truth = subj.labels.copy()
    acquired = truth.copy()
    acquired[:, :, [0, 1, 4, 5]] = 0  # wrong outside the mapped slices: the Dice must not see it
    save_image(acquired, subj.affine, tmp_path / "acquired_dseg.nii.gz", dtype=np.uint8)
    drone_seg = truth.copy()
    drone_seg[drone_seg == 3] = 2  # WM called GM on every slice
    save_image(drone_seg, subj.affine, tmp_path / "drone_dseg.nii.gz", dtype=np.uint8)
    methods = {m: dict(f) for m, f in outs.items()}
    methods["drone"]["dseg"] = str(tmp_path / "drone_dseg.nii.gz")
    manifest = {"stage": "mrf", "acq": "MRF", "subjects": {"sub-001": {
        "groundtruth": gt, "acq": "R1", "acquired_dseg": str(tmp_path / "acquired_dseg.nii.gz"), "methods": methods}}}
    run.score(manifest, tmp_path / "s.tsv", tmp_path / "down.tsv", tmp_path / "fig")
    s = pd.read_csv(tmp_path / "s.tsv", sep="\t")
    assert set(s["stage"]) == {"mrf"} and set(s["acq"]) == {"MRF"} and set(s["split"]) == {"test"}
    v = s.set_index(["method", "metric"])["value"]
    assert v[("matching", "t1_mape")] < 10 < v[("constant", "t1_mape")]
    assert v[("constant", "t1_mape_WM")] == pytest.approx(0.0)
    assert v[("matching", "t1_mape_pure")] == pytest.approx(v[("matching", "t1_mape")])  # every voxel is pure here
    assert v[("matching", "speedup_vs_matching")] == pytest.approx(1.0)
    assert ("constant", "speedup_vs_matching") not in v.index  # the floor reads no fingerprint
    # CSF right (1); GM: 2|A∩B| / (|A| + |B|) = 2n / 3n; WM: 0 (equal blocks of each tissue)
    assert v[("drone", "t1w_dice_mean")] == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-6)
    down = pd.read_csv(tmp_path / "down.tsv", sep="\t").set_index("source")
    assert down.loc["acquired R1 (whole volume)", "dice_mean"] == pytest.approx(1.0)
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["downstream.png", "montage.png"]


def test_slab_keeps_only_the_mapped_voxels(mapped, tmp_path):
    root, subj, _, outs = mapped
    image = np.full(subj.labels.shape, 3.0, np.float32)
    save_image(image, subj.affine, tmp_path / "acquired.nii.gz")
    run.write_slab(tmp_path / "acquired.nii.gz", root / "sub-001", MRF, tmp_path / "slab.nii.gz")
    slab = np.asarray(load_image(tmp_path / "slab.nii.gz").dataobj)
    synthetic = np.asarray(load_image(outs["matching"]["T1w"]).dataobj)
    np.testing.assert_array_equal(slab > 0, synthetic > 0)  # the same field of view as the synthetic T1w
    assert set(np.unique(slab)) == {0.0, 3.0}


def test_plan_of_the_branch():
    cfg = load_config("config/test.yaml")
    plan = Plan(cfg)
    mrf = plan.mrf
    assert isinstance(mrf, MrfPlan) and mrf.subjects == plan.test_subjects
    assert "model" in mrf.map_inputs(plan.test_subjects[0], "drone")
    assert "model" not in mrf.map_inputs(plan.test_subjects[0], "matching")
    m = plan.manifest("score", mrf.manifest_name)
    sub = m["subjects"][plan.test_subjects[0]]
    assert sub["acq"] == "R1" and "desc-atropos" in sub["acquired_dseg"] and "_acq-R1_" in sub["acquired_dseg"]
    assert "dseg" in sub["methods"]["drone"] and "dseg" not in sub["methods"]["matching"]
    assert mrf.segmented == ["acquired", "drone"]
    # the segment feed's labels of the MRF-derived T1w: rule segment at the MRF conditions, on the branch's T1w
    test = plan.test_subjects[0]
    feed = cfg["segment"]["feed"]
    assert sub["reference_dseg"] == f"results/segment/{test}/{test}_acq-MRFacquired_desc-{feed}_dseg.nii.gz"
    assert sub["methods"]["drone"]["dseg"] == plan.outputs("segment", test, "MRFdrone", feed)["labels"]
    for label in mrf.segmented:
        inputs = plan.method_inputs("segment", feed, test, f"MRF{label}")
        assert inputs["image"] == mrf.maps(test, label)["T1w"] == f"results/mrf/{test}/{test}_acq-MRF_desc-{label}_T1w.nii.gz"
        assert plan.test_only(f"MRF{label}")
    assert not plan.test_only("R4") and plan.test_only("R4cs") and plan.test_only("oracle")
    with pytest.raises(ValueError, match="does not exist at MRFdrone"):
        plan.resolve("feed.reconstruct", test, "MRFdrone")  # the branch stands in for the denoised image only
    assert plan.resolve("gt.dseg", test, "MRFdrone") == layout.groundtruth("dseg", test)
    assert all("MRF" not in c for c in plan.conditions)  # not a condition the chain's stages run or score at
    assert mrf.slab_inputs(plan.test_subjects[0])["image"].endswith("_acq-R1_desc-antsnlm_T1w.nii.gz")
    assert sub["methods"]["matchingsvd"]["T1map"].endswith("_acq-MRF_desc-matchingsvd_T1map.nii.gz")
    no_mrf = copy.deepcopy(cfg)
    del no_mrf["mrf"]
    assert Plan(no_mrf).mrf is None


@pytest.mark.parametrize("change, key", [
    (lambda m: m["dictionary"].update(t2_range_ms=[6000, 8000]), "mrf.dictionary.t2_range_ms"),
    (lambda m: m["dictionary"].update(t1_steps=0), "mrf.dictionary.t1_steps"),
    (lambda m: m["dictionary"].update(svd_rank=500), "mrf.dictionary.svd_rank"),
    (lambda m: m["sequence"].update(n_lobse=3), "mrf.sequence.n_lobse"),
    (lambda m: m.update(methods=["constant", "drone"], segment_from=["matching"]), "mrf.segment_from"),
    (lambda m: m.update(methods=["fancy"]), "mrf.methods"),
])
def test_bad_mrf_config_names_the_key(change, key):
    cfg = load_config("config/test.yaml")
    change(cfg["mrf"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert key in str(err.value)


def test_mrf_rows_reach_metrics_json_and_the_comparison(tmp_path):
    rows = []
    for i, sub in enumerate(("sub-001", "sub-002", "sub-003")):
        for method, t1 in (("constant", 40.0), ("matching", 5.0 + i), ("drone", 6.0 + i)):
            rows.append(dict(stage="mrf", acq="MRF", subject=sub, split="test", method=method, metric="t1_mape", value=t1))
        for method, d in (("kmeans", 0.7), ("atropos", 0.8 + 0.01 * i)):
            rows.append(dict(stage="segment", acq="R4", subject=sub, split="test", method=method, metric="dice_mean", value=d))
    pd.DataFrame(rows).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    out = {k: tmp_path / f"{k}.out" for k in ("metrics", "by_acq", "summary", "comparison", "differences")}
    metrics = aggregate([str(tmp_path / "s.tsv")], "R4", out["metrics"], out["by_acq"], out["summary"],
                        out["comparison"], out["differences"])
    assert metrics["mrf"]["matching"]["t1_mape"] == pytest.approx(6.0)
    assert set(metrics) == {"mrf", "segment"}
    comp = pd.read_csv(out["comparison"], sep="\t").set_index(["stage", "method"])
    assert comp.loc[("mrf", "drone"), "kind"] == "learned" and comp.loc[("mrf", "drone"), "floor"] == "constant"
    # 3 test subjects: below the bootstrap's minimum n, so no "beats" is claimed either way
    assert comp.loc[("mrf", "drone"), "gain"] == pytest.approx(-33.0) and pd.isna(comp.loc[("mrf", "drone"), "beats_floor"])
    diffs = pd.read_csv(out["differences"], sep="\t")
    assert ((diffs["stage"] == "mrf") & (diffs["method_a"] == "drone") & (diffs["method_b"] == "matching")).any()
