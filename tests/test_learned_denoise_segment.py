"""Learned denoising (DnCNN) and segmentation (2-D U-Net) on tiny synthetic phantoms."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from mrichain.denoise import dncnn as dn
from mrichain.io import save_image
from mrichain.segment import unet as un
from mrichain.slices import SliceDataset, predict_volume
from trainer_checks import assert_resumes_identically, fixed_batch_losses

SHAPE = (15, 19, 6)  # odd in-plane sizes: exercises padding to the U-Net's multiple and back
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
AFFINE[:3, 3] = [-30.0, -40.0, -10.0]

DN_PARAMS = {"epochs": 2, "batch_size": 4, "max_batches_per_epoch": 3, "depth": 3, "channels": 8, "lr": 1e-2}
UN_PARAMS = {"epochs": 2, "batch_size": 4, "max_batches_per_epoch": 3, "channels": [4, 8], "num_res_units": 0,
             "lr": 1e-2}


def _phantom(seed):
    """Labels (nested ellipsoids WM in GM in CSF), noise-free T1w-like image, Rician-noisy copy."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    r = np.sqrt((x / 0.85) ** 2 + (y / 0.85) ** 2 + (z / 1.2) ** 2) * rng.uniform(0.9, 1.1)
    labels = np.zeros(SHAPE, np.uint8)
    labels[r < 0.95] = 1
    labels[r < 0.75] = 2
    labels[r < 0.45] = 3
    labels[:, :, 0] = 0  # one empty slice: must be skipped
    clean = np.array([0.0, 0.02, 0.05, 0.07], np.float32)[labels]
    sigma = 0.006
    noisy = np.abs(clean + sigma * rng.standard_normal(SHAPE) + 1j * sigma * rng.standard_normal(SHAPE))
    return labels, clean, noisy.astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    items = []
    for i in range(3):
        labels, clean, noisy = _phantom(i)
        p = {k: root / f"sub-{i}_{k}.nii.gz" for k in ("noisy", "clean", "dseg", "mask")}
        save_image(noisy, AFFINE, p["noisy"])
        save_image(clean, AFFINE, p["clean"])
        save_image(labels, AFFINE, p["dseg"], dtype=np.uint8)
        save_image(labels > 0, AFFINE, p["mask"], dtype=np.uint8)
        items.append({k: str(v) for k, v in p.items()})
    dn_manifest = {
        split: [{"input": it["noisy"], "target": it["clean"], "mask": it["mask"]} for it in sel]
        for split, sel in (("train", items[:2]), ("val", items[2:]))
    }
    un_manifest = {
        split: [{"input": it["noisy"], "target": it["dseg"]} for it in sel]
        for split, sel in (("train", items[:2]), ("val", items[2:]))
    }
    return {"items": items, "dncnn": dn_manifest, "unet": un_manifest}


# ---------------------------------------------------------------- the shared slice helpers


def test_slice_dataset_skips_empty_slices_pads_and_flips(cohort):
    ds = SliceDataset(cohort["dncnn"]["train"], dn._load_item, mask_key="mask", multiple=8)
    assert len(ds) == 2 * (SHAPE[2] - 1)  # slice 0 of each volume holds no brain
    s = ds[0]
    assert set(s) == {"input", "target", "mask"} and s["input"].shape == (1, 16, 24)
    assert s["input"].dtype == torch.float32 and float(s["input"][:, SHAPE[0]:].abs().sum()) == 0
    flipped = SliceDataset(cohort["dncnn"]["train"], dn._load_item, mask_key="mask", flip_axes=(0,))
    torch.manual_seed(0)
    draws = [flipped[0]["mask"] for _ in range(16)]
    plain = ds[0]["mask"][:, :SHAPE[0], :SHAPE[1]]
    assert any(torch.equal(d, plain) for d in draws) and any(torch.equal(d, plain.flip(1)) for d in draws)


def test_predict_volume_slicewise_roundtrip():
    vol = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    out = predict_volume(torch.nn.Identity(), vol, batch_size=4, multiple=8)
    assert out.shape == (1,) + SHAPE
    np.testing.assert_array_equal(out[0], vol)


def test_unknown_training_parameter_is_named(cohort, tmp_path):
    with pytest.raises(ValueError, match="epoch"):
        dn.train(cohort["dncnn"], {"epoch": 2}, str(tmp_path / "m.pt"), seed=0)


# ---------------------------------------------------------------- networks

CASES = {
    # lr: of the fixed-batch test; at 1e-2 the 8-channel He-initialised DnCNN's ReLUs die within 30 steps
    "dncnn": dict(mod=dn, hp={"depth": 3, "channels": 8, "in_channels": 1}, out_ch=1, params=DN_PARAMS, lr=2e-3),
    "unet": dict(mod=un, hp={"channels": [4, 8], "num_res_units": 0}, out_ch=4, params=UN_PARAMS, lr=1e-2),
}


def _batch(name, cohort):
    mod = CASES[name]["mod"]
    ds = SliceDataset(cohort[name]["train"], mod._load_item, mask_key="target" if name == "unet" else "mask",
                      multiple=8)
    return torch.utils.data.default_collate([ds[i] for i in range(4)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward_shapes(name, cohort):
    c = CASES[name]
    torch.manual_seed(0)
    net = c["mod"].build(c["hp"])
    batch = _batch(name, cohort)
    out = net(batch["input"])
    assert out.shape == (4, c["out_ch"], 16, 24)
    loss = (c["mod"].make_loss() if name == "unet" else c["mod"].make_loss("l1"))(net, batch, "cpu")
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(name, cohort):
    c = CASES[name]
    torch.manual_seed(0)
    net = c["mod"].build(c["hp"])
    batch = _batch(name, cohort)
    loss_fn = c["mod"].make_loss() if name == "unet" else c["mod"].make_loss("mse")
    losses = fixed_batch_losses(net, loss_fn, batch, steps=30, lr=c["lr"])
    assert losses[-1] < 0.7 * losses[0]


def test_default_dncnn_keeps_the_signal_through_its_depth_and_learns(cohort):
    """Regression: with PyTorch's default init and no norm layers the default-size DnCNN's last
    hidden layer saw ~1/75 of the first layer's spatial spread, and training stayed at the identity's
    loss. With the defaults' optimiser settings, a fixed noisy batch must now fall well below it."""
    d = dn.DEFAULTS
    torch.manual_seed(0)
    net = dn.build({"depth": d["depth"], "channels": d["channels"], "norm": d["norm"]})
    batch = _batch("dncnn", cohort)
    with torch.no_grad():
        h, spread = batch["input"], []
        for block in net.body[:-1]:
            h = block(h)
            spread.append(float(h.std(dim=(2, 3)).mean()))
    assert spread[-1] > 0.2 * spread[0]
    loss_fn = dn.make_loss(d["loss"])
    with torch.no_grad():
        identity = float(loss_fn(torch.nn.Identity(), batch, "cpu"))
        assert float(loss_fn(net, batch, "cpu")) == pytest.approx(identity)  # zero residual head at init
    opt = torch.optim.AdamW(net.parameters(), lr=d["lr"], weight_decay=d["weight_decay"])
    for _ in range(40):
        opt.zero_grad()
        loss_fn(net, batch, "cpu").backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), d["grad_clip"])
        opt.step()
    with torch.no_grad():
        assert float(loss_fn(net, batch, "cpu")) < 0.6 * identity


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_writes_model_card_curve_and_infers(name, cohort, tmp_path):
    c = CASES[name]
    out = tmp_path / f"{name}.pt"
    res = c["mod"].train(cohort[name], c["params"], str(out), seed=1, progress=False)
    assert res.epochs_run == 2 and np.isfinite(res.best_score)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["method"] == name and len(card["training_data_hash"]) == 64
    assert card["seed"] == 1 and card["training"]["max_batches_per_epoch"] == 3
    assert card["validation_score"]["value"] == pytest.approx(res.best_score)
    assert (tmp_path / f"{name}_curve.tsv").exists() and (tmp_path / f"{name}_curve.png").exists()

    image = nib.load(cohort["items"][2]["noisy"])
    method = {"dncnn": dn.dncnn, "unet": un.unet}[name]
    result = method(image, model=str(out), threads=1)
    assert result.shape == SHAPE and np.allclose(result.affine, AFFINE)
    data = np.asarray(result.dataobj)
    if name == "dncnn":
        assert data.dtype == np.float32 and np.all(np.isfinite(data)) and data.min() >= 0
        assert result.get_data_dtype() == np.float32
    else:
        assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1, 2, 3}
        assert result.get_data_dtype() == np.uint8
        with pytest.raises(ValueError, match="T1w"):
            un.unet(image, model=str(out), contrast="T2w")


def test_registries_hold_the_learned_methods():
    from mrichain import denoise, segment

    assert denoise.METHODS["dncnn"] is dn.dncnn and denoise.TRAINERS["dncnn"] is dn.train
    assert segment.METHODS["unet"] is un.unet and segment.TRAINERS["unet"] is un.train


@pytest.mark.parametrize("name", sorted(CASES))
def test_interrupted_training_resumes_to_the_same_state(name, cohort, tmp_path):
    c = CASES[name]
    params = {**c["params"], "epochs": 3}
    assert_resumes_identically(c["mod"].train, cohort[name], params, tmp_path, 2)
