"""Tests for FFT, coils, masks, signal and the simulated acquisition (4 mm grid, few coils)."""
from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from mrichain.fft import fft2c, ifft2c, rss
from mrichain.io import read_kspace, write_kspace
from mrichain.simulate import build_template, simulate_subject, write_subject
from mrichain.plan.conditions import acq_label
from mrichain.simulate.acquire import measure_acquisition, simulate_acquisition
from mrichain.simulate.coils import sensitivity_maps
from mrichain.simulate.sampling import cartesian_mask, fastmri_mask, measured_acceleration, num_low_frequencies
from mrichain.simulate.signal import noise_free_image, spin_echo, spoiled_gradient_echo

from dag import ROOT
SUB = "sub-001"


@pytest.fixture(scope="module")
def cfg():
    with open(ROOT / "config" / "test.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def gt_dir(cfg, tmp_path_factory):
    t = build_template(cfg["cohort"]["resolution_mm"])
    d = tmp_path_factory.mktemp("gt") / SUB
    write_subject(simulate_subject(t, SUB, cfg), d)
    return d


def test_fft_round_trip_and_parseval():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 17, 24)) + 1j * rng.standard_normal((3, 2, 17, 24))
    k = fft2c(x)
    np.testing.assert_allclose(ifft2c(k), x, atol=1e-12)
    np.testing.assert_allclose(np.sum(np.abs(k) ** 2), np.sum(np.abs(x) ** 2), rtol=1e-12)
    # DC of a constant image sits at the centre
    k1 = fft2c(np.ones((8, 10)))
    assert np.unravel_index(np.argmax(np.abs(k1)), k1.shape) == (4, 5)


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("acc,cf", [(4, 0.08), (8, 0.04)])
@pytest.mark.parametrize("width", [99, 368])
def test_mask_acceleration_and_centre(kind, acc, cf, width):
    m = cartesian_mask(width, acc, cf, kind, seed=1234)
    assert m.shape == (width,) and m.dtype == np.float32
    assert measured_acceleration(m) == pytest.approx(acc, rel=0.10)
    n = num_low_frequencies(width, cf)
    pad = (width - n + 1) // 2
    assert m[pad:pad + n].all() and m[width // 2] == 1
    np.testing.assert_array_equal(m, cartesian_mask(width, acc, cf, kind, seed=1234))


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_masks_are_monais_draw_for_draw(kind):
    """fastmri_mask restates MONAI's mask transforms in numpy (3.4 s of imports saved per job):
    the same seed gives MONAI's mask, for widths, accelerations and centres around the configs'."""
    import torch
    from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask

    cls = {"random": RandomKspaceMask, "equispaced": EquispacedKspaceMask}[kind]
    checked = 0
    for width in (64, 81, 99, 100, 368):
        for acc, cf in ((2, 0.16), (4, 0.08), (4, 0.16), (6, 0.1), (8, 0.04), (3.5, 0.12)):
            for seed in (0, 1, 20261126, 2**32 + 7):
                t = cls(center_fractions=[cf], accelerations=[acc], spatial_dims=1, is_complex=True)
                t.set_random_state(seed=seed % (2**32))
                t(torch.zeros((1, 1, width), dtype=torch.complex64))
                monai = np.asarray(t.mask, dtype=np.float32).reshape(-1)
                np.testing.assert_array_equal(fastmri_mask(width, acc, cf, kind, seed), monai,
                                              err_msg=f"{kind} W={width} R={acc} cf={cf} seed={seed}")
                checked += 1
    assert checked == 5 * 6 * 4


def test_sensitivity_maps_normalised():
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    s = sensitivity_maps((20, 24, 10), 6, aff)
    assert s.shape == (6, 20, 24, 10) and s.dtype == np.complex64
    np.testing.assert_allclose((np.abs(s) ** 2).sum(0), 1.0, rtol=1e-5)
    # coils differ and vary smoothly
    assert not np.allclose(np.abs(s[0]), np.abs(s[3]))
    assert np.abs(np.diff(np.abs(s), axis=1)).max() < 0.3


def test_signal_contrast_order(gt_dir, cfg):
    t1w = cfg["acquire"]["sequence"]["T1w"]
    t2w = cfg["acquire"]["sequence"]["T2w"]
    # nominal 3 T tissues: T1w WM > GM > CSF, T2w CSF > GM > WM
    s1 = [spoiled_gradient_echo(pd, t1, t2, **t1w) for pd, t1, t2 in ((1, 4000, 2000), (.8, 1330, 110), (.7, 830, 80))]
    s2 = [spin_echo(pd, t1, t2, **t2w) for pd, t1, t2 in ((1, 4000, 2000), (.8, 1330, 110), (.7, 830, 80))]
    assert s1[2] > s1[1] > s1[0]
    assert s2[0] > s2[1] > s2[2]
    img = noise_free_image(gt_dir, "T1w", t1w)
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() > 0


def _acquire(gt_dir, cfg, out: Path, acc=4.0, cf=0.08):
    kf, nf = simulate_acquisition(gt_dir, SUB, cfg, acc, cf)
    out.mkdir(parents=True, exist_ok=True)
    h5 = write_kspace(out / f"{SUB}_acq-{acq_label(acc)}_T1w.h5", kf)
    nfp = out / f"{SUB}_desc-noisefree_T1w.nii.gz"
    nib.save(nf, nfp)
    return kf, h5, nfp


@pytest.mark.parametrize("snr", [20.0, 40.0])
def test_measured_snr_and_acceleration(gt_dir, cfg, tmp_path, snr):
    c = copy.deepcopy(cfg)
    c["acquire"]["snr"] = snr
    kf, h5, nfp = _acquire(gt_dir, c, tmp_path)
    m = measure_acquisition(h5, nfp, gt_dir / f"{SUB}_desc-brain_mask.nii.gz")
    assert m["snr"] == pytest.approx(snr, rel=0.10)
    assert m["snr_residual"] == pytest.approx(snr, rel=0.10)
    assert m["acceleration"] == pytest.approx(4.0, rel=0.15)  # small W at 4 mm
    assert m["acceleration"] == pytest.approx(kf.attrs["acceleration_measured"])


def test_kspace_layout_and_attrs(gt_dir, cfg, tmp_path):
    kf, h5, nfp = _acquire(gt_dir, cfg, tmp_path)
    nf = nib.load(nfp)
    X, Y, Z = nf.shape
    back = read_kspace(h5)
    C = cfg["acquire"]["n_coils"]
    assert back.kspace.shape == (Z, C, X, Y) and back.kspace.dtype == np.complex64
    assert back.reconstruction_rss.shape == (Z, X, Y)
    np.testing.assert_allclose(back.affine, nf.affine)
    unsampled = back.mask == 0
    assert np.all(back.kspace[..., unsampled] == 0) and np.all(back.kspace[..., ~unsampled] != 0)
    a = back.attrs
    assert a["acquisition"] == "AXT1" and a["patient_id"] == SUB and a["acceleration"] == 4.0
    assert a["max"] == pytest.approx(float(back.reconstruction_rss.max()))
    assert a["num_low_frequency"] == num_low_frequencies(Y, 0.08)
    # the RSS of the sampled data's full version approximates the noise-free image
    img = np.asarray(nf.dataobj).transpose(2, 0, 1)
    err = np.abs(back.reconstruction_rss - img)[img > 0.5 * img.max()].mean()
    assert err < 0.1 * img.max()
    # acceleration changes the mask only, never the fully sampled measurement
    kf8, _, _ = _acquire(gt_dir, cfg, tmp_path / "r8", acc=8.0, cf=0.04)
    np.testing.assert_array_equal(kf8.reconstruction_rss, back.reconstruction_rss)
    both = (kf8.mask > 0) & (back.mask > 0)
    np.testing.assert_array_equal(kf8.kspace[..., both], back.kspace[..., both])
    assert acq_label(4.0) == "R4" and acq_label(2.5) == "R2p5"
    assert rss(ifft2c(back.kspace)).shape == (Z, X, Y)


def test_acquisition_files_byte_identical(gt_dir, cfg, tmp_path):
    _, h5a, nfa = _acquire(gt_dir, cfg, tmp_path / "a")
    _, h5b, nfb = _acquire(gt_dir, cfg, tmp_path / "b")
    assert h5a.read_bytes() == h5b.read_bytes()
    np.testing.assert_array_equal(np.asarray(nib.load(nfa).dataobj), np.asarray(nib.load(nfb).dataobj))
