"""The learned motion corrector (mrichain.motion.unet): motion synthesised on a still file is the
simulator's, the untrained network is the floor, training beats it on val, inference writes an
image and shot scores; the plan trains it on the train split's still acquisitions."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mrichain.io import save_image, write_kspace
from mrichain.motion.unet import MotionVolumes, build, correct, moved_slice, train
from mrichain.plan.config import train_params
from mrichain.plan.manifests import Plan
from mrichain.simulate import build_template, simulate_subject, write_subject
from mrichain.simulate.acquire import simulate_acquisition
from mrichain.simulate.motion import subject_trajectory

from dag import moving_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MOTION = {"shots": 8, "ordering": "interleaved",
          "levels": {"severe": {"rotation_deg": 5.0, "translation_mm": 3.0, "through_plane_mm": 1.0, "movements": 2}}}
SUBJECTS = ("sub-001", "sub-002", "sub-003", "sub-004")


@pytest.fixture(scope="module")
def cfg():
    return moving_config(MOTION)


@pytest.fixture(scope="module")
def cohort(cfg, tmp_path_factory):
    """Four simulated subjects of the test cohort: each one's ground truth folder and still R4
    acquisition written as the workflow writes them: ``{sub: {"kspace", "truth", "mask", "gt"}}``."""
    root = tmp_path_factory.mktemp("motion_unet")
    template = build_template(cfg["cohort"]["resolution_mm"])
    out = {}
    for sub in SUBJECTS:
        gt = root / sub
        write_subject(simulate_subject(template, sub, cfg), gt)
        kf, nf = simulate_acquisition(gt, sub, cfg, 4.0, 0.16)
        kpath = write_kspace(root / f"{sub}_acq-R4_T1w.h5", kf)
        tpath = root / f"{sub}_acq-R4_desc-noisefree_T1w.nii.gz"
        save_image(nf.get_fdata(dtype="float32"), nf.affine, tpath)
        out[sub] = {"kspace": str(kpath), "truth": str(tpath), "mask": str(gt / f"{sub}_desc-brain_mask.nii.gz"),
                    "gt": gt}
    return out


def test_motion_synthesised_on_the_still_file_is_the_simulators(cfg, cohort):
    """The moving head's k-space rebuilt from the still file (its noise kept) equals the simulator's
    motion acquisition of the same subject and trajectory, slice by slice."""
    sub = "sub-001"
    moving, _ = simulate_acquisition(cohort[sub]["gt"], sub, cfg, 4.0, 0.16, motion_level="severe")
    data = MotionVolumes([{k: cohort[sub][k] for k in ("kspace", "truth", "mask")}])
    v = data.volumes[0]
    traj = subject_trajectory(cfg, sub, "severe", v["kspace"].shape[-1], acquired=v["mask"] > 0)
    assert np.any(traj.poses[:, 3] != 0)  # a through-plane shift is part of it
    nz = v["kspace"].shape[0]
    for z in range(nz // 4, 3 * nz // 4):
        ours = moved_slice(v["kspace"], v["mask"], v["noisefree"], v["maps"], z, traj, v["voxel_mm"], slab=nz)
        theirs = moving.kspace[z]
        scale = np.abs(theirs).max()
        assert np.abs(ours - theirs).max() < 1e-4 * scale, z
        # and the moved lines do differ from the still file's
        assert np.abs(theirs - v["kspace"][z]).max() > 1e-2 * scale


def test_the_untrained_network_is_the_identity():
    net = build({"channels": 8}).eval()
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(net(x), x)


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    manifest = {"train": [{k: cohort[s][k] for k in ("kspace", "truth", "mask")} for s in SUBJECTS[:3]],
                "val": [{k: cohort[s][k] for k in ("kspace", "truth", "mask")} for s in SUBJECTS[3:]]}
    out = tmp_path_factory.mktemp("model") / "motion-unet.pt"
    params = {"epochs": 6, "batch_size": 8, "max_batches_per_epoch": 12, "channels": 8, "lr": 2e-3,
              "device": "cpu", "motion": MOTION, "val_slices": 12}
    result = train(manifest, params, str(out), seed=0, progress=False)
    return out, result


def test_training_beats_the_uncorrected_image_on_val(trained):
    """Epoch 0 is the untrained network, i.e. no correction; the chosen epoch scores higher on the
    val subject's synthesised motion (SSIM against the still head in the brain)."""
    import json

    out, _ = trained
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["beats_start"] is True
    score = card["validation_score"]
    assert score["name"] == "ssim_truth" and score["epoch"] > 0
    assert score["value"] > score["start"] + 0.005, score
    assert card["motion"]["levels"] == MOTION["levels"]


def test_the_corrector_sharpens_a_moving_scan_it_never_saw(cfg, cohort, trained):
    """On the held-out subject's own motion acquisition: the image is closer to the still head than
    the uncorrected one, and every shot gets a finite score."""
    from mrichain.motion.correct import none
    from mrichain.scoring.metrics import ssim

    out, _ = trained
    sub = "sub-004"
    moving, nf = simulate_acquisition(cohort[sub]["gt"], sub, cfg, 4.0, 0.16, motion_level="severe")
    image, scores = correct(moving.kspace, moving.mask, moving.motion_shot, model=str(out), device="cpu")
    floor, _ = none(moving.kspace, moving.mask, moving.motion_shot)
    assert image.shape == floor.shape and image.dtype == np.float32 and image.min() >= 0
    truth = np.moveaxis(nf.get_fdata(dtype="float32"), -1, 0)
    brain = np.moveaxis(np.asarray(__import__("nibabel").load(cohort[sub]["mask"]).dataobj) > 0, -1, 0)
    assert ssim(truth, image, mask=brain) > ssim(truth, floor, mask=brain)
    moved = np.any(moving.motion_poses != 0, axis=1)
    assert scores.shape == (len(moved),) and np.all(np.isfinite(scores))


def test_the_plan_trains_it_on_the_still_acquisitions_of_the_train_split(cfg):
    c = copy.deepcopy(cfg)
    c["motion"] = {"methods": ["none", "autofocus", "unet"], "feed": "autofocus", "accelerations": [4]}
    c["motion"]["params"] = {"unet": {"epochs": 2}}
    plan = Plan(c)
    m = plan.train_manifest("motion", "unet")
    train_subjects = plan.split_subjects("train")
    assert [it["kspace"] for it in m["train"]] == [f"results/kspace/{s}/{s}_acq-R4_T1w.h5" for s in train_subjects]
    assert all(it["truth"].endswith("_acq-R4_desc-noisefree_T1w.nii.gz") for it in m["train"] + m["val"])
    assert "motion" in plan.trained_stages
    assert train_params(c, "motion", "unet") == {"epochs": 2, "motion": MOTION}
    assert plan.fitted("motion", "unet") == {"model": "models/motion-unet.pt"}
