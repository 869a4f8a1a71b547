"""Learned registration (VoxelMorph) and learned brain age (SFCN + MC dropout) on tiny 3-D phantoms."""
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from mrichain.io import save_image
from mrichain.register import METHODS as REG_METHODS
from mrichain.register import TRAINERS as REG_TRAINERS
from mrichain.register import RegistrationResult
from mrichain.register import voxelmorph as vxm
from mrichain.predict import LEARNED_METHODS, METHODS as PRED_METHODS, TRAINERS as PRED_TRAINERS
from mrichain.predict import sfcn
from mrichain.train import seed_everything
from trainer_checks import assert_resumes_identically, fixed_batch_losses

N = 24
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -N


def _phantom(shift=(0.0, 0.0, 0.0), scale=1.0, atrophy=0.0, noise=0.0, seed=0):
    """Labels (WM core, GM shell, CSF ventricle + rim) and a T1w-like image on an N^3 grid."""
    g = np.stack(np.meshgrid(*[np.arange(N, dtype=np.float64)] * 3, indexing="ij"))
    c = (N - 1) / 2 + np.asarray(shift)[:, None, None, None]
    r = np.sqrt((((g - c) / np.array([1.0, 1.15, 0.95])[:, None, None, None]) ** 2).sum(0)) / scale
    lab = np.zeros((N,) * 3, np.uint8)
    lab[r < 9.5] = 1
    lab[r < 8.5 - atrophy] = 2
    lab[r < 6.0 - atrophy] = 3
    lab[r < 2.0 + atrophy] = 1
    img = np.choose(lab, [0.0, 0.3, 0.6, 1.0]).astype(np.float32)
    img += noise * np.random.default_rng(seed).standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0, None), lab


@pytest.fixture(scope="module")
def reg_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("reg")
    img, lab = _phantom()
    save_image(img, AFFINE, d / "tpl_T1w.nii.gz")
    save_image(lab, AFFINE, d / "tpl_dseg.nii.gz", dtype=np.uint8)
    items = []
    for i, (sh, sc) in enumerate([((1, 0, -1), 1.05), ((-1, 1, 0), 0.95), ((0, -1, 1), 1.1), ((1, 1, 0), 0.9)]):
        im, lb = _phantom(sh, sc, noise=0.02, seed=i)
        save_image(im, AFFINE, d / f"m{i}_T1w.nii.gz")
        save_image(lb, AFFINE, d / f"m{i}_dseg.nii.gz", dtype=np.uint8)
        items.append({"moving": str(d / f"m{i}_T1w.nii.gz"), "labels": str(d / f"m{i}_dseg.nii.gz")})
    return {"fixed": str(d / "tpl_T1w.nii.gz"), "fixed_labels": str(d / "tpl_dseg.nii.gz"),
            "train": items[:3], "val": items[3:]}


REG_PARAMS = {"epochs": 2, "lr": 2e-3, "channels": [4, 8, 8, 8], "final_conv_channels": [8], "int_steps": 4,
              "lambda": 0.5, "ncc_kernel": 5}


def test_voxelmorph_registered_and_shapes(reg_data):
    assert REG_METHODS["voxelmorph"] is vxm.voxelmorph and REG_TRAINERS["voxelmorph"] is vxm.train
    seed_everything(0)
    net = vxm.build_model({**vxm.DEFAULT_HYPER, **REG_PARAMS})
    m = torch.rand(2, 1, 22, 26, 20, requires_grad=True)  # sizes not divisible by 8: padded inside
    f = torch.rand(2, 1, 22, 26, 20)
    warped, ddf, ddf_half = net(m, f)
    assert warped.shape == m.shape and ddf.shape == (2, 3, 22, 26, 20) and ddf_half.shape[1] == 3
    assert float(ddf.abs().max()) < 1e-2  # near-identity at initialisation
    loss = vxm.RegistrationLoss(0.5, 5)(net, {"moving": m, "fixed": f}, torch.device("cpu"))
    loss.backward()
    assert loss.ndim == 0 and all(p.grad is not None for p in net.parameters() if p.requires_grad)
    # semi-supervised variant: + soft Dice of warped one-hot labels (lambda_dice > 0)
    lab = torch.randint(0, 4, (2, 1, 22, 26, 20))
    sup = vxm.RegistrationLoss(0.5, 5, lambda_dice=1.0)(
        net, {"moving": m, "fixed": f, "labels": lab, "fixed_labels": lab}, torch.device("cpu"))
    assert torch.isfinite(sup) and float(sup) >= float(loss) - 1e-5  # Dice loss >= 0 on top


def test_voxelmorph_loss_falls_on_a_fixed_batch(reg_data):
    ds = vxm.PairDataset(reg_data["train"][:1], vxm._load(reg_data["fixed"]), None)
    batch = {k: v[None] for k, v in ds[0].items()}
    seed_everything(0)
    net = vxm.build_model({**vxm.DEFAULT_HYPER, **REG_PARAMS})
    loss_fn = vxm.RegistrationLoss(0.5, 5)
    losses = fixed_batch_losses(net, loss_fn, batch, steps=12, lr=3e-3)
    assert losses[-1] < losses[0] - 0.01


def test_voxelmorph_train_resume_and_inference(reg_data, tmp_path):
    assert_resumes_identically(vxm.train, reg_data, {**REG_PARAMS, "epochs": 3}, tmp_path, 1,
                                      name="register-voxelmorph.pt")
    out = tmp_path / "b" / "register-voxelmorph.pt"

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["architecture"] == vxm.ARCHITECTURE and card["hyper_parameters"]["channels"] == [4, 8, 8, 8]
    assert card["validation_score"]["name"] == "dice" and 0.0 <= card["validation_score"]["value"] <= 1.0
    assert len(card["training_data_hash"]) == 64
    assert (out.parent / "register-voxelmorph_curve.tsv").exists()

    # inference, with the moving image on another grid (3 mm, shifted): resampled onto the fixed grid
    fixed = nib.load(reg_data["fixed"])
    mov_img, mov_lab = _phantom((1, 0, 0), 1.05)
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = -N
    res = REG_METHODS["voxelmorph"](nib.Nifti1Image(mov_img[:16, :16, :16], aff), fixed, model=str(out),
                                    labels=nib.Nifti1Image(mov_lab[:16, :16, :16], aff))
    assert isinstance(res, RegistrationResult) and res.seconds > 0
    assert res.warped.shape == fixed.shape and np.allclose(res.warped.affine, fixed.affine)
    assert res.warped.get_data_dtype() == np.float32 and res.jacobian.get_data_dtype() == np.float32
    assert res.warped_labels.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(res.warped_labels.dataobj))) <= {0, 1, 2, 3}
    jac = np.asarray(res.jacobian.dataobj)
    assert jac.shape == fixed.shape and np.all(np.isfinite(jac)) and np.median(jac) > 0


def test_jacobian_determinant_of_known_fields():
    g = np.stack(np.meshgrid(*[np.arange(10.0)] * 3, indexing="ij"))
    assert np.allclose(vxm.jacobian_determinant(np.zeros((3, 10, 10, 10))), 1.0)
    assert np.allclose(vxm.jacobian_determinant(0.1 * g), 1.1 ** 3)  # uniform scaling
    assert np.allclose(vxm.jacobian_determinant(-2.0 * g), -1.0)  # point reflection: folded


# ------------------------------------------------------------------------------------------- SFCN
SFCN_PARAMS = {"epochs": 2, "batch_size": 4, "lr": 3e-3, "channels": [4, 8, 8], "input_shape": [16, 16, 16],
               "voxel_mm": 2.0, "dropout": 0.3, "bin_range": [10.0, 90.0]}


@pytest.fixture(scope="module")
def age_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("age")
    items = []
    for i in range(10):
        age = 20.0 + 6.0 * i
        img, _ = _phantom(scale=1.0 - 0.004 * i, atrophy=0.12 * i, noise=0.02, seed=i)
        save_image(img, AFFINE, d / f"s{i}_T1w.nii.gz")
        items.append({"image": str(d / f"s{i}_T1w.nii.gz"), "age": age})
    return {"train": items[::2] + items[1:6:2], "val": items[7::2]}


def test_sfcn_registered_shapes_and_backward():
    assert LEARNED_METHODS["sfcn"] is sfcn.predict_images and PRED_TRAINERS["sfcn"] is sfcn.train
    assert "linear" in PRED_METHODS  # the volume-based predictors still work
    seed_everything(0)
    net = sfcn.build_model({**sfcn.DEFAULT_HYPER, **SFCN_PARAMS})
    x = torch.rand(3, 1, 16, 16, 16)
    out = net(x)
    assert out.shape == (3, 80) and torch.allclose(out.exp().sum(1), torch.ones(3))  # log-probabilities over bins
    loss = sfcn.AgeLoss({**sfcn.DEFAULT_HYPER, **SFCN_PARAMS})(net, (x, torch.tensor([25.0, 50.0, 75.0])),
                                                              torch.device("cpu"))
    loss.backward()
    assert loss.ndim == 0 and all(p.grad is not None for p in net.parameters())


def test_sfcn_loss_falls_on_a_fixed_batch(age_data):
    hyper = {**sfcn.DEFAULT_HYPER, **SFCN_PARAMS}
    ds = sfcn.AgeDataset(age_data["train"], hyper, augment=False)
    x, y = torch.stack(ds.x), ds.age
    seed_everything(0)
    net = sfcn.build_model(hyper)
    net.dropout.p = 0.0
    losses = fixed_batch_losses(net, sfcn.AgeLoss(hyper), (x, y), steps=15, lr=3e-3)
    assert losses[-1] < losses[0]


def test_sfcn_train_resume_and_mc_interval(age_data, tmp_path):
    assert_resumes_identically(sfcn.train, age_data, {**SFCN_PARAMS, "epochs": 3}, tmp_path, 2, name="predict-sfcn.pt")
    out = tmp_path / "b" / "predict-sfcn.pt"

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["architecture"] == sfcn.ARCHITECTURE
    # the card's score is the selection score (years) of the saved weights' val and train MAE, recomputed here
    net, _ = sfcn.load_model(str(out))
    hyper = {**sfcn.DEFAULT_HYPER, **card["hyper_parameters"]}
    centres = sfcn.bin_centres(hyper["bin_range"], hyper["bin_width"])
    maes = {}
    for split in ("train", "val"):
        ds = sfcn.AgeDataset(age_data[split], hyper, augment=False)
        pred = sfcn.predict_ages(net, torch.stack(ds.x), centres)
        maes[split] = float(np.mean(np.abs(pred - [it["age"] for it in age_data[split]])))
    constant = sfcn.best_constant_mae([it["age"] for it in age_data["val"]])
    assert card["validation_score"]["value"] == pytest.approx(
        sfcn.selection_score(maes["val"], constant, maes["train"]), abs=1e-3)
    assert card["target"]["bins"] == 80 and (out.parent / "predict-sfcn_curve.tsv").exists()

    paths = [it["image"] for it in age_data["val"]]
    df = LEARNED_METHODS["sfcn"](str(out), paths, mc_samples=8, interval=0.9, seed=0)
    assert isinstance(df, pd.DataFrame) and len(df) == len(paths)
    assert {"predicted_age", "predicted_lower", "predicted_upper"} <= set(df.columns)
    assert np.all(np.isfinite(df[["predicted_age", "predicted_lower", "predicted_upper"]].to_numpy()))
    assert np.all(df.predicted_lower < df.predicted_upper)
    assert np.all((df.predicted_lower <= df.predicted_age) & (df.predicted_age <= df.predicted_upper))
    again = LEARNED_METHODS["sfcn"](str(out), paths, mc_samples=8, interval=0.9, seed=0)
    pd.testing.assert_frame_equal(df, again)  # seeded MC passes: reproducible
