"""Compressed sensing and the learned VarNet on a tiny synthetic multi-coil phantom."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mrichain.fft import fft2c, ifft2c, rss
from mrichain.io import KSpaceFile, write_kspace
from mrichain.scoring.metrics import nmse
from mrichain.recon import METHODS, TRAINERS
from mrichain.recon import varnet as vn
from mrichain.recon.cs import acs_lines, acs_sensitivities, cs
from mrichain.recon.zerofilled import zerofilled
from trainer_checks import assert_resumes_identically, fixed_batch_losses

S, C, H, W = 6, 8, 32, 32
TINY = {"cascades": 2, "channels": 4, "sens_channels": 2}


def _mask(width=W, accel=4, acs=4):
    m = np.zeros(width, np.float32)
    m[::accel] = 1
    m[width // 2 - acs // 2: width // 2 - acs // 2 + acs] = 1
    return m


def _volume(seed=0, slices=S, noise=1e-4):
    """Smooth phantom (blurred ellipses varying with slice) seen by C smooth complex coils."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:H * 1j, -1:1:W * 1j]
    imgs = []
    for s in range(slices):
        a = 0.75 + 0.1 * np.sin(s + seed)
        img = ((xx / a) ** 2 + (yy / 0.85) ** 2 < 1).astype(float)
        img -= 0.5 * (((xx - 0.2) / 0.25) ** 2 + ((yy + 0.1 * s / slices) / 0.35) ** 2 < 1)
        img += 0.3 * (((xx + 0.35) / 0.15) ** 2 + (yy / 0.2) ** 2 < 1)
        imgs.append(gaussian_filter(img, 0.8) * 0.05)
    imgs = np.stack(imgs)
    centres = [(1.3 * np.cos(a), 1.3 * np.sin(a)) for a in 2 * np.pi * np.arange(C) / C]
    coils = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 1.5) * np.exp(0.5j * (cx * xx + cy * yy))
                      for cx, cy in centres])
    coils /= np.sqrt((np.abs(coils) ** 2).sum(0, keepdims=True))
    k = fft2c(imgs[:, None] * coils[None])
    k = k + noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    return k.astype(np.complex64), rss(ifft2c(k), coil_axis=1).astype(np.float32)


def _write(path, seed, mask=None):
    """The k-space file of phantom ``seed`` (undersampled by ``mask``)."""
    k, target = _volume(seed)
    mask = _mask() if mask is None else mask
    kf = KSpaceFile(k * mask[None, None, None, :], mask, target, attrs={"acceleration": 4.0, "num_low_frequency": 4})
    return write_kspace(path, kf)


def _write_item(path, seed, mask=None):
    """The k-space file and, beside it, the noise-free target and a brain mask (NIfTI [X, Y, Z]):
    a VarNet training item."""
    from mrichain.io import save_image

    h5 = _write(path, seed, mask)
    truth = np.moveaxis(rss(ifft2c(_volume(seed, noise=0.0)[0]), coil_axis=1), 0, -1)  # [S,H,W] -> [X,Y,Z]
    nf = save_image(truth, np.eye(4), Path(str(path).replace(".h5", "_noisefree.nii.gz")))
    brain = save_image((truth > 0.1 * truth.max()).astype(np.float32), np.eye(4),
                       Path(str(path).replace(".h5", "_brain.nii.gz")))
    return {"kspace": str(h5), "target": str(nf), "mask": str(brain)}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("kspace")
    train = [_write_item(d / f"sub-00{i}_acq-R4_T1w.h5", i) for i in (1, 2)]
    full = _write_item(d / "sub-001_acq-R1_T1w.h5", 1, mask=np.ones(W, np.float32))
    val = [_write_item(d / "sub-003_acq-R4_T1w.h5", 3)]
    return {"train": train + [full], "val": val}


def _batch(n=2):
    k, target = _volume(5)
    mask = _mask()
    kt, mt = vn.to_tensors(k[:n] * mask[None, None, None, :] / 0.05, mask)
    return {"kspace": kt, "mask": mt.expand(n, W), "target": torch.from_numpy(target[:n] / 0.05),
            "maxval": torch.full((n,), float(target.max() / 0.05))}


def test_registries():
    assert METHODS["cs"] is cs and METHODS["varnet"] is vn.varnet and TRAINERS["varnet"] is vn.train


def test_varnet_forward_backward_shapes_and_finite_grads():
    torch.manual_seed(0)
    model = vn.build_model(**TINY)
    b = _batch()
    out = model(b["kspace"], vn._mask5(b["mask"]))
    assert out.shape == (2, H, W)
    loss = vn.make_loss_fn("ssim")(model, b, "cpu")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # odd sizes (81 x 99 at 2 mm) are padded and cropped back; a fully sampled mask works too
    k = torch.randn(1, 2, 21, 27, 2)
    assert model(k, vn._mask5(torch.ones(1, 27))).shape == (1, 21, 27)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    model = vn.build_model(**TINY)
    b = _batch()
    loss_fn = vn.make_loss_fn("ssim")
    losses = fixed_batch_losses(model, loss_fn, b, steps=8, lr=3e-3)
    assert losses[-1] < losses[0]


def test_train_writes_model_card_and_curve_and_inference_runs(manifest, tmp_path):
    out = tmp_path / "reconstruct-varnet.pt"
    res = vn.train(manifest, {**TINY, "epochs": 2, "batch_size": 4, "max_batches_per_epoch": 2}, str(out), 7,
                   progress=False)
    assert out.exists() and (tmp_path / "reconstruct-varnet_curve.tsv").exists()
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["hyper_parameters"] == {**vn.MODEL_DEFAULTS, **TINY}
    assert card["seed"] == 7 and card["epochs_run"] == 2 and len(card["training_data_hash"]) == 64
    assert card["n_train_slices"] == 3 * S  # the fully sampled file trains too (denoising) by default
    assert card["validation_score"]["value"] == pytest.approx(res.best_score)
    assert 0 < res.best_score <= 1

    k, target = _volume(3)
    mask = _mask()
    img = vn.varnet(k * mask[None, None, None, :], mask, model=str(out), batch_size=4)
    assert img.shape == (S, H, W) and img.dtype == np.float32 and np.isfinite(img).all()
    assert 0.1 < img.mean() / target.mean() < 10  # the input's scale
    assert vn.varnet(k, None, model=str(out)).shape == (S, H, W)


def test_interrupted_training_resumes_to_the_same_state(manifest, tmp_path):
    params = {**TINY, "epochs": 2, "batch_size": 4, "max_batches_per_epoch": 2}
    assert_resumes_identically(vn.train, manifest, params, tmp_path, 1)


def test_unknown_param_is_an_error(manifest, tmp_path):
    with pytest.raises(KeyError, match="cascade"):
        vn.train(manifest, {"cascade": 3}, str(tmp_path / "m.pt"), 0, progress=False)


def test_acs_sensitivities_are_normalised():
    k, _ = _volume(0)
    acs = acs_lines(_mask(), W)
    assert acs.sum() == 4 and acs[W // 2]
    maps = acs_sensitivities(k * _mask()[None, None, None, :], acs)
    assert np.allclose((np.abs(maps) ** 2).sum(1), 1, atol=1e-4)


def test_cs_beats_zero_filling_and_returns_rss_when_fully_sampled():
    k, target = _volume(4)
    mask = _mask()
    under = k * mask[None, None, None, :]
    img = cs(under, mask)
    assert img.shape == (S, H, W) and img.dtype == np.float32
    assert nmse(target, img) < 0.7 * nmse(target, zerofilled(under, mask))
    full = cs(k, None, lam=1e-4)
    assert nmse(target, full) < 0.01


def test_cs_repeats_exactly_and_leaves_the_global_generator_alone():
    """sigpy's step-size power iteration starts from NumPy's global generator: seeded inside."""
    k, _ = _volume(4)
    mask = _mask()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = cs(k * mask[None, None, None, :], mask, iterations=5)
    np.random.seed(7)  # a different global state must not change the image
    b = cs(k * mask[None, None, None, :], mask, iterations=5)
    np.testing.assert_array_equal(a, b)
    np.random.seed(123)
    cs(k * mask[None, None, None, :], mask, iterations=5)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
