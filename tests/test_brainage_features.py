"""Brain-age features from the segmentation feed: the brain mask, Atropos' bias/partial-volume
refinement, the ventricle volume and the linear model's diagnostics (unit tier, synthetic data).

The phantom is built on a 1 mm grid and averaged to 2 mm, so its voxels carry true partial volume
(the ground truth is the argmax of the tissue fractions, as in the simulator), and it is aged with
the simulator's own atrophy model.
"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from mrichain.scoring import metrics

VOXEL = 2.0
SHAPE = (44, 52, 44)
ATROPHY = {"age_range": [20, 80],
           "atrophy": {"ventricle_expansion_mm_at_max_age": 3.0, "cortical_gm_loss_at_max_age": 0.3}}


def _fractions():
    """Tissue fractions float32 [4, X, Y, Z] (BG, CSF, GM, WM) at 2 mm and the affine: a CSF
    shell, a GM ribbon cut by six CSF-filled sulci that reach the surface, a WM core and two
    ventricles."""
    f = 2
    hs = tuple(s * f for s in SHAPE)
    idx = np.indices(hs).astype(np.float32)
    c = (np.array(hs) - 1) / 2
    pos = [(idx[i] - c[i]) * (VOXEL / f) for i in range(3)]

    def ell(r, off=(0, 0, 0)):
        return sum(((p - o) / ri) ** 2 for p, ri, o in zip(pos, r, off)) <= 1

    lab = np.zeros(hs, np.uint8)
    lab[ell((38, 46, 36))] = 1
    lab[ell((36, 44, 34))] = 2
    lab[ell((28, 36, 26))] = 3
    for ang in np.linspace(0, np.pi, 7)[:-1]:  # sulci: 2 mm CSF slabs from the surface to the WM
        slab = np.abs(pos[0] * np.cos(ang) + pos[1] * np.sin(ang)) < 1.0
        lab[slab & ~ell((29, 37, 27)) & ell((38, 46, 36))] = 1
    lab[ell((7, 16, 7), (9, 0, 4)) | ell((7, 16, 7), (-9, 0, 4))] = 1
    onehot = np.stack([lab == k for k in range(4)]).astype(np.float32)
    probs = onehot.reshape(4, SHAPE[0], f, SHAPE[1], f, SHAPE[2], f).mean(axis=(2, 4, 6))
    aff = np.diag([VOXEL] * 3 + [1.0])
    aff[:3, 3] = -(np.array(SHAPE) - 1) / 2 * VOXEL
    return probs, aff


@pytest.fixture(scope="module")
def phantom():
    return _fractions()


def _aged(probs, aff, age):
    from mrichain.simulate.atrophy import apply_atrophy

    return apply_atrophy(probs, aff, age, ATROPHY)[0]


def _image(probs, aff, gm=0.75, bias=0.15, noise=0.02, seed=0):
    """T1w-like magnitude image: intensities BG 0, CSF 0.4, GM ``gm``, WM 1 mixed by the fractions,
    times a smooth bias field (amplitude ~``bias``), plus Rician noise."""
    img = np.tensordot(np.array([0.0, 0.4, gm, 1.0], np.float32), probs, axes=1)
    x = np.linspace(-1, 1, probs.shape[1])[:, None, None]
    z = np.linspace(-1, 1, probs.shape[3])[None, None, :]
    img = img * (1 + bias * (0.7 * x + 0.3 * z**2 - 0.1))
    rng = np.random.default_rng(seed)
    img = np.abs(img + noise * (rng.standard_normal(img.shape) + 1j * rng.standard_normal(img.shape)))
    return nib.Nifti1Image(img.astype(np.float32), aff)


def _truth(probs):
    return np.argmax(probs, axis=0).astype(np.uint8)


def _csf_fraction(lab):
    return float((lab == 1).sum() / (lab > 0).sum())


# --- brain mask ---------------------------------------------------------------------------------
def test_brain_mask_keeps_dark_sulcal_csf(phantom):
    """In T1w, CSF in the sulci and around the brain is dark like the background: the mask must
    keep it (it is part of the intracranial volume the fractions divide by) without spilling far
    outside the brain."""
    from mrichain.segment import brain_mask

    probs, aff = phantom
    truth = _truth(probs)
    mask = np.asarray(brain_mask(_image(probs, aff)).dataobj) > 0
    csf = truth == 1
    sulci = csf & (np.indices(truth.shape)[2] == truth.shape[2] // 2)  # mid slice: shell + sulci
    assert sulci.sum() > 100
    assert (mask & csf).sum() / csf.sum() > 0.99
    assert (mask & sulci).sum() / sulci.sum() > 0.99
    assert mask.sum() < 1.1 * (truth > 0).sum()


def test_brain_mask_of_a_noise_free_blurred_image(phantom):
    """The oracle input: a noise-free image whose edge is blurred (finite resolution) and whose
    background holds only FFT round-off. A noise floor estimated from that background is ~0 and
    took the whole blurred tail as brain (mask Dice 0.71 on the simulated noise-free images)."""
    from scipy import ndimage as ndi

    from mrichain.scoring import metrics
    from mrichain.segment import brain_mask

    probs, aff = phantom
    img = np.pad(np.asarray(_image(probs, aff, bias=0.0, noise=0.0).dataobj), 12)  # a field of view, as acquired
    blurred = ndi.gaussian_filter(img, 1.0)
    blurred += 1e-20 * np.random.default_rng(0).standard_normal(img.shape)  # round-off, not noise
    mask = np.asarray(brain_mask(nib.Nifti1Image(np.abs(blurred).astype(np.float32), aff)).dataobj)
    truth = np.pad(_truth(probs) > 0, 12).astype(np.uint8)
    assert metrics.dice(mask, truth, labels=(1,))[1] > 0.95


# --- Atropos refinement ---------------------------------------------------------------------------
def test_refined_labels_beat_plain_atropos_on_partial_volume(phantom):
    from mrichain.segment.atropos import atropos, refine_labels

    probs, aff = phantom
    probs = _aged(probs, aff, 50)
    truth = _truth(probs)
    img = _image(probs, aff)
    plain = np.asarray(atropos(img, partial_volume=False).dataobj)
    refined = refine_labels(np.asarray(img.dataobj), plain, plain > 0, voxel_mm=(VOXEL,) * 3)
    assert refined.dtype == np.uint8 and set(np.unique(refined)) <= {0, 1, 2, 3}
    assert not np.any(refined[plain == 0])  # never grows the mask
    d_plain = metrics.dice(truth, plain)
    d_ref = metrics.dice(truth, refined)
    assert min(d_ref.values()) > 0.9, d_ref
    assert np.mean(list(d_ref.values())) > np.mean(list(d_plain.values())) + 0.02, (d_ref, d_plain)
    # the default path is the refined one
    np.testing.assert_array_equal(np.asarray(atropos(img).dataobj), refined)


def test_refined_csf_fraction_does_not_depend_on_contrast_or_bias(phantom):
    """One anatomy, four scans (GM/WM contrast 0.70 or 0.85, bias field +-15 %): the refined CSF
    fraction must agree to within a quarter of what 60 years of atrophy change it by; Atropos'
    own class boundaries move with the contrast and bias."""
    from mrichain.segment.atropos import atropos, refine_labels

    probs, aff = phantom
    young, old = _aged(probs, aff, 20), _aged(probs, aff, 80)
    atrophy_effect = _csf_fraction(_truth(old)) - _csf_fraction(_truth(young))
    assert atrophy_effect > 0.02
    probs = _aged(probs, aff, 50)
    plain_f, refined_f = [], []
    for gm in (0.70, 0.85):
        for bias in (0.15, -0.15):
            img = _image(probs, aff, gm=gm, bias=bias)
            plain = np.asarray(atropos(img, partial_volume=False).dataobj)
            refined = refine_labels(np.asarray(img.dataobj), plain, plain > 0, voxel_mm=(VOXEL,) * 3)
            plain_f.append(_csf_fraction(plain))
            refined_f.append(_csf_fraction(refined))
    assert np.ptp(refined_f) < 0.25 * atrophy_effect, (refined_f, atrophy_effect)
    assert np.ptp(refined_f) < np.ptp(plain_f), (refined_f, plain_f)


def test_bias_field_recovers_a_smooth_field(phantom):
    from mrichain.segment.atropos import bias_field

    probs, aff = phantom
    truth = _truth(probs)
    flat = np.asarray(_image(probs, aff, bias=0.0, noise=0.0).dataobj, dtype=np.float64)
    biased = np.asarray(_image(probs, aff, bias=0.15, noise=0.0).dataobj, dtype=np.float64)
    brain = truth > 0
    true_log = np.log(biased[brain] / np.maximum(flat[brain], 1e-9))
    est = bias_field(biased, truth == 3, brain)
    err = np.log(est[brain]) - true_log
    assert np.std(err - err.mean()) < 0.25 * np.std(true_log)
    assert np.allclose(bias_field(flat, truth == 3, brain)[brain], 1.0, atol=1e-3)


# --- features -------------------------------------------------------------------------------------
def test_csf_and_ventricle_fractions_grow_with_simulated_atrophy(phantom):
    from mrichain.predict.volumes import tissue_volumes
    from mrichain.segment.atropos import atropos

    probs, aff = phantom
    csf, vent, true_csf = [], [], []
    for age in (20, 50, 80):
        p = _aged(probs, aff, age)
        v = tissue_volumes(atropos(_image(p, aff, seed=age)))
        csf.append(v["csf_ml"] / v["icv_ml"])
        vent.append(v["ventricle_ml"] / v["icv_ml"])
        true_csf.append(_csf_fraction(_truth(p)))
    assert np.all(np.diff(csf) > 0) and np.all(np.diff(vent) > 0), (csf, vent)
    assert csf[-1] - csf[0] > 0.5 * (true_csf[-1] - true_csf[0])


def test_ventricle_volume_is_the_deep_csf(phantom):
    from mrichain.predict.volumes import tissue_volumes, ventricle_mask

    probs, aff = phantom
    lab = _truth(probs)
    vox_ml = VOXEL**3 / 1000
    vent = ventricle_mask(lab, (VOXEL,) * 3)
    # the two ventricles, not the shell or the sulci that reach the surface
    assert vent.any() and not vent[lab != 1].any()
    _, n = ndi.label(vent)
    assert n == 2
    shell = (lab == 1) & ~ndi.binary_erosion(lab > 0, iterations=3)
    assert not (vent & shell).any()
    v = tissue_volumes(nib.Nifti1Image(lab, aff))
    assert v["ventricle_ml"] == pytest.approx(vent.sum() * vox_ml)
    assert 0 < v["ventricle_ml"] < v["csf_ml"]
    assert v["icv_ml"] == pytest.approx(v["csf_ml"] + v["gm_ml"] + v["wm_ml"])
    no_deep = np.where(lab == 1, 2, lab).astype(np.uint8)  # CSF relabelled GM: no ventricles
    assert tissue_volumes(nib.Nifti1Image(no_deep, aff))["ventricle_ml"] == 0.0


# --- linear model ---------------------------------------------------------------------------------
def _volumes(ages, rng, noise_csf=0.01, noise_vent=0.002):
    vols = []
    for a in ages:
        icv = rng.uniform(1300, 1600)
        vent = 0.02 + 0.0003 * (a - 20) + rng.normal(0, noise_vent)
        csf = 0.12 + 0.0008 * (a - 20) + rng.normal(0, noise_csf)
        gm = rng.uniform(0.35, 0.55)  # the GM/WM split carries no age signal here
        vols.append({"csf_ml": csf * icv, "gm_ml": gm * icv, "wm_ml": (1 - csf - gm) * icv,
                     "ventricle_ml": vent * icv, "icv_ml": icv})
    return vols


def test_linear_uses_the_ventricle_feature_and_reports_loo():
    from mrichain.predict import METHODS

    lin = METHODS["linear"]
    rng = np.random.default_rng(1)
    ages = rng.uniform(20, 80, 40)
    vols = _volumes(ages, rng)
    model = lin.fit(vols[:30], list(ages[:30]), features=["csf", "ventricle"])
    json.dumps(model)
    assert model["features"] == ["csf", "ventricle"] and len(model["coef"]) == 2
    pred = lin.predict(model, vols[30:])
    assert metrics.mae(ages[30:], pred) < 5.0
    assert model["beats_mean_loo"] and model["loo_mae_years"] < 0.5 * model["mean_loo_mae_years"]
    assert model["feature_age_correlation"]["ventricle"] > 0.9
    # a feature without signal: the model says it is no better than the mean
    noise = lin.fit(vols[:30], list(ages[:30]), features=["gm"])
    assert not noise["beats_mean_loo"] and abs(noise["feature_age_correlation"]["gm"]) < 0.4


def test_linear_names_a_missing_feature():
    from mrichain.predict import linear

    vols = [{"csf_ml": 100.0, "gm_ml": 600.0, "wm_ml": 500.0, "icv_ml": 1200.0}] * 3
    with pytest.raises(KeyError, match="ventricle_ml"):
        linear.fit(vols, [30.0, 40.0, 50.0], features=["csf", "ventricle"])
