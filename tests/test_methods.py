"""Stage methods on small synthetic data: a nested-ellipsoid brain phantom at 3 mm and tiny
fastMRI-layout k-space files."""
import json
import os

# ITK reads its thread count once per process, at the first ANTs call; bit-identical ANTs reruns
# need 1 thread. Collection imports this module before any test calls ANTs.
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import nibabel as nib
import numpy as np
import pytest

from mrichain.scoring import metrics
from mrichain.fft import fft2c, ifft2c, rss
from mrichain.io import KSpaceFile, write_kspace


def phantom(shape=(48, 56, 48), voxel=3.0, shift_mm=(0, 0, 0), noise=0.0, seed=0, contrast="T1w"):
    """(image float32, labels uint8) nibabel images [X, Y, Z]: CSF shell + ventricles, GM, WM."""
    idx = np.indices(shape).astype(np.float64)
    c = (np.array(shape) - 1) / 2
    pos = [(idx[i] - c[i]) * voxel - shift_mm[i] for i in range(3)]

    def ell(r, off=(0, 0, 0)):
        return sum(((p - o) / ri) ** 2 for p, ri, o in zip(pos, r, off)) <= 1

    lab = np.zeros(shape, np.uint8)
    lab[ell((60, 72, 58))] = 1
    lab[ell((55, 67, 53))] = 2
    lab[ell((42, 52, 40))] = 3
    lab[ell((6, 22, 9), (10, 0, 5)) | ell((6, 22, 9), (-10, 0, 5))] = 1
    inten = {"T1w": (0.0, 0.25, 0.6, 0.9), "T2w": (0.0, 1.0, 0.6, 0.4)}[contrast]
    img = np.take(np.array(inten, np.float32), lab)
    if noise:
        rng = np.random.default_rng(seed)
        img = np.abs(img + noise * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)))
    aff = np.diag([voxel, voxel, voxel, 1.0])
    aff[:3, 3] = -c * voxel
    return nib.Nifti1Image(img.astype(np.float32), aff), nib.Nifti1Image(lab, aff)


# --- ANTs conversion -------------------------------------------------------------------------
def test_ants_conversion_keeps_affine():
    import ants

    from mrichain.antsbridge import from_ants, to_ants

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)  # oblique-ish: axes swapped, flipped
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([2.0, 3.0, 4.0])
    aff[:3, 3] = [10.0, -20.0, 30.0]
    img = nib.Nifti1Image(data, aff)
    a = to_ants(img)
    back = ants.to_nibabel_nifti(a)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(back.get_fdata(), data)
    # a voxel's physical point agrees (nibabel RAS vs ITK LPS)
    ras = aff @ [1, 2, 3, 1]
    lps = ants.transform_index_to_physical_point(a, (1, 2, 3))
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-5)
    np.testing.assert_array_equal(from_ants(a, aff).get_fdata(), data)


# --- recon -----------------------------------------------------------------------------------
def _kspace(s=3, c=4, h=32, w=24, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.random((s, 1, h, w)) * np.exp(1j * rng.random((1, c, h, w)))
    return fft2c(img).astype(np.complex64)


def test_zerofilled_fully_sampled_equals_rss():
    from mrichain.recon import METHODS

    k = _kspace()
    out = METHODS["zerofilled"](k, np.ones(k.shape[-1], np.float32))
    assert out.dtype == np.float32 and out.shape == (3, 32, 24)
    np.testing.assert_allclose(out, rss(ifft2c(k), coil_axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(METHODS["zerofilled"](k, None), out)
    mask = np.zeros(24, np.float32)
    mask[::2] = 1
    assert not np.allclose(METHODS["zerofilled"](k, mask), out)


def test_reconstruct_file_with_affine_and_without(tmp_path):
    import h5py

    from mrichain.recon import reconstruct_file

    k = _kspace()
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    p = write_kspace(tmp_path / "ours.h5", KSpaceFile(kspace=k, affine=aff))
    img = reconstruct_file(p, "zerofilled", {})
    assert img.shape == (32, 24, 3) and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, aff)
    np.testing.assert_allclose(img.get_fdata()[..., 1], rss(ifft2c(k[1]), coil_axis=0), rtol=1e-5, atol=1e-6)
    # a fastMRI-like multi-coil file with no affine attribute, and a single-coil [S, H, W] one
    for name, data in (("multi.h5", k), ("single.h5", k[:, 0])):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("kspace", data=data)
            f.attrs["acquisition"] = "CORPD_FBK"
        img = reconstruct_file(tmp_path / name, "zerofilled", {})
        assert img.shape == (32, 24, 3)
        np.testing.assert_allclose(img.affine, np.eye(4))
    np.testing.assert_allclose(img.get_fdata(), np.transpose(np.abs(ifft2c(k[:, 0])), (1, 2, 0)), rtol=1e-5, atol=1e-6)


# --- denoise ---------------------------------------------------------------------------------
def test_antsnlm_lowers_error():
    from mrichain.denoise import METHODS

    clean, _ = phantom()
    noisy, _ = phantom(noise=0.05, seed=1)
    out = METHODS["antsnlm"](noisy, threads=1)
    assert out.get_data_dtype() == np.float32 and out.shape == noisy.shape
    np.testing.assert_allclose(out.affine, noisy.affine)
    gt = clean.get_fdata()
    assert metrics.nmse(gt, out.get_fdata()) < 0.7 * metrics.nmse(gt, noisy.get_fdata())


# --- register --------------------------------------------------------------------------------
def test_antssyn_raises_dice_and_is_deterministic():
    from mrichain.register import METHODS, RegistrationResult

    fixed, flab = phantom(noise=0.02, seed=1)
    moving, mlab = phantom(noise=0.02, seed=2, shift_mm=(6, -4, 3))
    before = metrics.dice(np.asarray(mlab.dataobj), np.asarray(flab.dataobj))
    res = METHODS["antssyn"](moving, fixed, labels=mlab, threads=1)
    assert isinstance(res, RegistrationResult)
    after = metrics.dice(np.asarray(res.warped_labels.dataobj), np.asarray(flab.dataobj))
    assert all(after[k] > before[k] for k in (1, 2, 3)) and min(after.values()) > 0.85
    assert res.warped_labels.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(res.warped_labels.dataobj))) <= {0, 1, 2, 3}
    assert res.seconds > 0
    assert metrics.folding_percent(res.jacobian.get_fdata(), np.asarray(flab.dataobj) > 0) < 0.1
    np.testing.assert_allclose(res.warped.affine, fixed.affine)
    again = METHODS["antssyn"](moving, fixed, labels=mlab, threads=1)
    np.testing.assert_array_equal(again.warped.get_fdata(), res.warped.get_fdata())
    np.testing.assert_array_equal(again.jacobian.get_fdata(), res.jacobian.get_fdata())


# --- segment ---------------------------------------------------------------------------------
@pytest.mark.parametrize("contrast", ["T1w", "T2w"])
def test_atropos_dice(contrast):
    from mrichain.segment import METHODS, brain_mask

    img, lab = phantom(noise=0.02, seed=3, contrast=contrast)
    truth = np.asarray(lab.dataobj)
    mask = np.asarray(brain_mask(img).dataobj)
    assert metrics.dice(mask, (truth > 0).astype(np.uint8), labels=(1,))[1] > 0.97
    seg = METHODS["atropos"](img, contrast=contrast)
    assert seg.get_data_dtype() == np.uint8
    d = metrics.dice(np.asarray(seg.dataobj), truth)
    assert min(d.values()) > 0.8, d


# --- predict ---------------------------------------------------------------------------------
def test_tissue_volumes():
    from mrichain.predict import tissue_volumes

    _, lab = phantom()
    v = tissue_volumes(lab)
    n = np.bincount(np.asarray(lab.dataobj).ravel(), minlength=4)
    assert v["gm_ml"] == pytest.approx(n[2] * 27 / 1000)
    assert v["icv_ml"] == pytest.approx(v["csf_ml"] + v["gm_ml"] + v["wm_ml"])


def test_linear_recovers_age_relation():
    from mrichain.predict import METHODS

    rng = np.random.default_rng(0)
    ages = rng.uniform(20, 80, 40)
    vols = []
    for a in ages:  # fractions linear in age, sum to 1 (collinear with the intercept)
        csf = 0.10 + 0.002 * (a - 20)
        gm = 0.45 - 0.0015 * (a - 20)
        icv = rng.uniform(1200, 1600)
        vols.append({"csf_ml": csf * icv, "gm_ml": gm * icv, "wm_ml": (1 - csf - gm) * icv, "icv_ml": icv})
    m = METHODS["linear"]
    model = m.fit(vols[:30], list(ages[:30]))
    json.dumps(model)
    pred = m.predict(model, vols[30:])
    assert pred.shape == (10,)
    assert metrics.mae(ages[30:], pred) < 0.5
