"""VarNet trained as fastMRI's E2E-VarNet: identity start, noise-free target, step-decayed Adam."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mrichain.plan import layout
from mrichain.fft import fft2c, ifft2c, rss
from mrichain.io import KSpaceFile, save_image, write_kspace
from mrichain.scoring.metrics import nmse, ssim
from mrichain.recon import varnet as vn
from mrichain.recon.zerofilled import zerofilled

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S, C, H, W = 4, 4, 32, 32
TINY = {"cascades": 2, "channels": 4, "sens_channels": 2}
SIGMA = 2e-3  # complex noise per k-space sample: ~SNR 20 in the phantom


def _mask(accel=4, acs=4):
    m = np.zeros(W, np.float32)
    m[1::accel] = 1
    m[W // 2 - acs // 2: W // 2 + acs // 2] = 1
    return m


def _subject(seed):
    """Noise-free phantom [S,H,W] (blurred ellipses, ~0.05), its noisy C-coil k-space [S,C,H,W]
    and the noisy fully sampled RSS (the fastMRI ``reconstruction_rss``)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:H * 1j, -1:1:W * 1j]
    imgs = []
    for s in range(S):
        a = 0.7 + 0.1 * np.sin(s + seed)
        img = ((xx / a) ** 2 + (yy / 0.8) ** 2 < 1).astype(float)
        img -= 0.5 * (((xx - 0.2) / 0.25) ** 2 + ((yy + 0.1 * s / S) / 0.35) ** 2 < 1)
        img += 0.4 * (((xx + 0.3 + 0.05 * seed) / 0.12) ** 2 + (yy / 0.18) ** 2 < 1)
        imgs.append(gaussian_filter(img, 0.7) * 0.05)
    truth = np.stack(imgs).astype(np.float32)
    centres = [(1.3 * np.cos(t), 1.3 * np.sin(t)) for t in 2 * np.pi * np.arange(C) / C]
    coils = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 1.5) * np.exp(0.5j * (cx * xx + cy * yy))
                      for cx, cy in centres])
    coils /= np.sqrt((np.abs(coils) ** 2).sum(0, keepdims=True))
    k = fft2c(truth[:, None] * coils[None])
    k = (k + SIGMA * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))).astype(np.complex64)
    return truth, k, rss(ifft2c(k), coil_axis=1).astype(np.float32)


def _write(d: Path, sub: str, seed: int) -> dict:
    """One training item as the plan writes it: k-space file, noise-free NIfTI, brain mask ([X,Y,Z])."""
    truth, k, target = _subject(seed)
    mask = _mask()
    h5 = write_kspace(d / f"{sub}_acq-R4_T1w.h5",
                      KSpaceFile(k * mask[None, None, None, :], mask, target, attrs={"acceleration": 4.0}))
    nf = save_image(np.moveaxis(truth, 0, -1), np.eye(4), d / f"{sub}_noisefree.nii.gz")
    brain = save_image(np.moveaxis(truth > 0.01, 0, -1).astype(np.float32), np.eye(4), d / f"{sub}_brain.nii.gz")
    return {"kspace": str(h5), "target": str(nf), "mask": str(brain)}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("varnet")
    return {"train": [_write(d, f"sub-00{i}", i) for i in (1, 2, 3)], "val": [_write(d, "sub-004", 4)]}


def test_untrained_varnet_is_the_zero_filled_image():
    """Gates at 0: the output is the RSS of the sampled k-space, the floor's image and score; MONAI's
    own VarNet with the same parts (the refinement subtracted at full weight) is far from it."""
    from monai.apps.reconstruction.networks.nets.varnet import VariationalNetworkModel

    truth, k, _ = _subject(7)
    mask = _mask()
    brain = truth > 0.01
    torch.manual_seed(0)
    model = vn.build_model(**TINY)
    gates = [c.gate for c in model.cascades]
    assert len(gates) == TINY["cascades"] and all(float(g.detach()) == 0.0 for g in gates)
    pred, zf = vn.predict(model, k, mask), zerofilled(k, mask)
    np.testing.assert_allclose(pred, zf, rtol=1e-4, atol=1e-5 * zf.max())
    assert ssim(truth, pred, mask=brain) == pytest.approx(ssim(truth, zf, mask=brain), abs=1e-5)

    plain = VariationalNetworkModel(model.coil_sensitivity_model, model.cascades[0].model, num_cascades=2)
    assert nmse(zf, vn.predict(plain, k, mask)) > 1e-3  # what the gates remove


def test_the_first_step_moves_the_gates_then_the_refinement_learns():
    truth, k, _ = _subject(5)
    mask = _mask()
    scale = vn.volume_scale(k * mask[None, None, None, :])
    kt, mt = vn.to_tensors(k * mask[None, None, None, :] / scale, mask)
    batch = {"kspace": kt, "mask": mt.expand(S, W), "target": torch.from_numpy(truth / scale),
             "maxval": torch.full((S,), float(truth.max() / scale))}
    torch.manual_seed(0)
    model = vn.build_model(**TINY)
    loss = vn.make_loss_fn("ssim")(model, batch, "cpu")
    loss.backward()
    assert all(float(c.gate.grad.abs()) > 0 for c in model.cascades)
    assert all(float(p.grad.abs().max()) == 0 for p in model.cascades[0].model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    opt.step()
    opt.zero_grad()
    assert all(float(c.gate.detach()) != 0 for c in model.cascades)
    vn.make_loss_fn("ssim")(model, batch, "cpu").backward()
    assert any(float(p.grad.abs().max()) > 0 for p in model.cascades[0].model.parameters())


def test_the_plan_gives_varnet_the_noise_free_target_and_brain_mask():
    from dag import TEST_CONFIG
    from mrichain.plan.manifests import Plan

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    man = Plan(cfg).train_manifest("reconstruct", "varnet")
    contrast = cfg["acquire"]["contrast"]
    for item in man["train"] + man["val"]:
        sub = item["kspace"].split("/")[-2]
        acq = item["kspace"].split("_acq-")[1].split("_")[0]
        assert item["target"] == layout.noisefree(contrast, sub, acq)
        assert item["mask"] == layout.groundtruth("brain_mask", sub)


def test_noisefree_target_is_what_the_items_and_the_loss_carry(manifest):
    item = manifest["train"][0]
    truth, k, noisy = _subject(1)
    scale = vn.volume_scale(k * _mask()[None, None, None, :])
    clean = vn.SliceDataset([item])
    rss_ds = vn.SliceDataset([item], target="rss")
    assert vn.TRAIN_DEFAULTS["target"] == "noisefree" and len(clean) == S
    np.testing.assert_allclose(clean[2]["target"].numpy(), truth[2] / scale, rtol=1e-5)
    np.testing.assert_allclose(rss_ds[2]["target"].numpy(), noisy[2] / scale, rtol=1e-5)
    assert float(clean[0]["maxval"]) == pytest.approx(truth.max() / scale, rel=1e-5)

    torch.manual_seed(0)
    model = vn.build_model(**TINY)
    batch = torch.utils.data.default_collate([clean[i] for i in range(S)])
    loss = vn.make_loss_fn("ssim")(model, batch, "cpu")
    pred = model(batch["kspace"], vn._mask5(batch["mask"]))
    expect = vn._ssim_loss(pred, torch.from_numpy(truth / scale), batch["maxval"])
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    rss_batch = torch.utils.data.default_collate([rss_ds[i] for i in range(S)])
    assert abs(vn.make_loss_fn("ssim")(model, rss_batch, "cpu").item() - loss.item()) > 1e-3

    with pytest.raises(ValueError, match="names no noise-free image"):
        vn.SliceDataset([{"kspace": item["kspace"]}])
    bad = Path(item["target"]).with_name("bad.nii.gz")
    save_image(np.zeros((H, W, S + 1), np.float32), np.eye(4), bad)
    with pytest.raises(ValueError, match="bad.nii.gz.*does not match"):
        vn.SliceDataset([{**item, "target": str(bad)}])


def test_validation_is_scored_as_the_primary_score(manifest):
    """The untrained network's val score (epoch 0) is the floor's ssim_truth: SSIM against the
    noise-free image inside the brain mask."""
    truth, k, _ = _subject(4)
    zf = zerofilled(k, _mask())
    torch.manual_seed(0)
    score = vn.make_score_fn()(vn.build_model(**TINY), vn.SliceDataset(manifest["val"]), "cpu")
    assert score == pytest.approx(ssim(truth, zf, mask=truth > 0.01), abs=1e-5)
    assert score != pytest.approx(ssim(truth, zf), abs=1e-3)  # the mask is used


def test_the_step_decay_falls_at_80_percent_of_the_epochs():
    assert vn._resolve_step_epochs({"epochs": 50})["step_epochs"] == 40  # fastMRI: epoch 40 of 50
    assert vn._resolve_step_epochs(None)["step_epochs"] == round(0.8 * vn.TRAIN_DEFAULTS["epochs"])
    assert vn._resolve_step_epochs({"epochs": 10, "step_epochs": 3})["step_epochs"] == 3
    assert "step_epochs" not in vn._resolve_step_epochs({"schedule": "cosine"})
    recipe = {k: vn.TRAIN_DEFAULTS[k] for k in ("lr", "weight_decay", "optimiser", "schedule", "step_gamma")}
    assert recipe == {"lr": 3e-3, "weight_decay": 0.0, "optimiser": "adamw", "schedule": "step", "step_gamma": 0.1}


def test_a_few_steps_beat_the_zero_filled_start(manifest, tmp_path):
    """Epoch 0 is the zero-filled score; a few steps against the noise-free target beat it, and the
    learning rate drops x0.1 for the last epoch (round(0.8 x 5) = 4)."""
    out = tmp_path / "reconstruct-varnet.pt"
    params = {**TINY, "epochs": 5, "batch_size": 4, "max_batches_per_epoch": 3, "val_max_slices": None}
    res = vn.train(manifest, params, str(out), 0, progress=False)
    truth, k, _ = _subject(4)
    floor = ssim(truth, zerofilled(k, _mask()), mask=truth > 0.01)
    assert res.curve[0]["epoch"] == 0 and res.curve[0]["val_ssim"] == pytest.approx(floor, abs=1e-5)
    assert res.beats_start and res.best_score > floor + 0.005
    assert [r["lr"] for r in res.curve[1:]] == pytest.approx([3e-3] * 4 + [3e-4])
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["target"] == "noisefree" and "brain mask" in card["selection"] and card["beats_start"] is True
