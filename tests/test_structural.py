"""Structural T1w preparation on a small simulated skull-on BIDS dataset (tests/bids_dataset.py).

The dataset: 3 subjects (sub-01 with two sessions) simulated at 4 mm, written at 2 mm with scalp
and skull, stored sagittally ('PIL'); the chain's models here work at 4 mm (config/test.yaml).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from bids_dataset import LAYERS_MM, write_bids_dataset
from mrichain.plan.config import load_config
from mrichain.io import save_image
from mrichain.scoring.metrics import dice
from mrichain.realdata import structural as st
from mrichain.segment import METHODS
from mrichain.segment import unet as un

from dag import ROOT
TARGET_MM = 4.0


def _arr(img, dtype=None):
    a = np.asarray(img.dataobj)
    return a if dtype is None else a.astype(dtype)


def _reoriented(img, codes: str) -> nib.Nifti1Image:
    """``img`` stored in voxel order ``codes`` (same voxels and positions)."""
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.axcodes2ornt(tuple(codes)))
    out = img.as_reoriented(ornt)
    res = nib.Nifti1Image(np.asarray(out.dataobj), out.affine)
    res.set_data_dtype(img.get_data_dtype())
    return res


def _dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    t0 = time.perf_counter()
    records = write_bids_dataset(root, load_config(ROOT / "config" / "test.yaml"))
    print(f"\nBIDS test dataset written in {time.perf_counter() - t0:.1f} s")
    return root, records


# ------------------------------------------------------------------ the dataset itself


def test_dataset_is_bids_shaped(dataset):
    root, records = dataset
    names = sorted(str(Path(r["T1w"]).relative_to(root)) for r in records)
    assert names == ["sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz", "sub-01/ses-02/anat/sub-01_ses-02_T1w.nii.gz",
                     "sub-02/anat/sub-02_T1w.nii.gz", "sub-03/anat/sub-03_T1w.nii.gz"]
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["Name"] and desc["BIDSVersion"]
    rows = [line.split("\t") for line in (root / "participants.tsv").read_text().splitlines()]
    assert rows[0] == ["participant_id", "age"] and [r[0] for r in rows[1:]] == ["sub-01", "sub-02", "sub-03"]
    assert all(20 <= float(r[1]) <= 80 for r in rows[1:])
    img = nib.load(records[0]["T1w"])
    assert nib.aff2axcodes(img.affine) == ("P", "I", "L")  # sagittal: slices along x, last axis
    assert np.allclose(img.header.get_zooms()[:3], 2.0)
    # the head is there: the scalp is brighter than the brain's 99th percentile, the skull darker
    # than its 5th (sessions differ in bias and noise, not in anatomy)
    data, brain = _arr(img, np.float32), _arr(nib.load(records[0]["brain_mask"])) > 0
    head = _arr(nib.load(records[0]["head_mask"])) > 0
    d = ndi.distance_transform_edt(~brain, sampling=2.0)
    skull = head & (d > LAYERS_MM["csf"] + 1.5) & (d < LAYERS_MM["csf"] + LAYERS_MM["skull"] - 1.5)
    scalp = head & (d > LAYERS_MM["csf"] + LAYERS_MM["skull"] + 1.5)
    assert np.median(data[scalp]) > np.percentile(data[brain], 99)
    assert np.median(data[skull]) < np.percentile(data[brain], 5)
    assert not np.array_equal(data, _arr(nib.load(records[1]["T1w"]), np.float32))
    assert np.array_equal(_arr(nib.load(records[0]["dseg"])), _arr(nib.load(records[1]["dseg"])))


# ------------------------------------------------------------------ orientation and resampling


@pytest.mark.parametrize("codes", ["PIL", "LPS", "RAS", "ASR", "LIP"])
def test_reorientation_round_trip_is_exact(dataset, codes):
    img = _reoriented(nib.load(dataset[1][0]["T1w"]), codes)
    ras = st.to_ras(img)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    # every voxel keeps its position in mm: the centre of mass in world space is unchanged
    com = lambda im: im.affine[:3, :3] @ np.array(ndi.center_of_mass(_arr(im, np.float64))) + im.affine[:3, 3]  # noqa: E731
    assert np.allclose(com(ras), com(img), atol=1e-6)
    back = st.from_ras(ras, img)
    assert back.shape == img.shape and np.array_equal(back.affine, img.affine)
    assert np.array_equal(_arr(back), _arr(img)) and _arr(back).dtype == _arr(img).dtype
    # by geometry only (what restore uses)
    assert np.array_equal(_arr(st.from_ras(ras, (img.shape, img.affine))), _arr(img))


def test_from_ras_refuses_a_foreign_grid(dataset):
    img = nib.load(dataset[1][0]["T1w"])
    ras = st.to_ras(img)
    with pytest.raises(ValueError, match="shape"):
        st.from_ras(nib.Nifti1Image(_arr(ras)[1:], ras.affine), img)
    shifted = ras.affine.copy()
    shifted[:3, 3] += 2.0
    with pytest.raises(ValueError, match="affine"):
        st.from_ras(nib.Nifti1Image(_arr(ras), shifted), img)


def test_resampling_round_trip_error_is_bounded(dataset):
    rec = dataset[1][2]
    img = st.to_ras(nib.load(rec["T1w"]))
    img = nib.Nifti1Image(_arr(img, np.float32), img.affine)
    brain = _arr(st.to_ras(nib.load(rec["brain_mask"]))) > 0
    # 2 mm -> 1 mm -> 2 mm (linear): the samples of the coarse grid come back (on the fine grid's
    # nodes, up to float round-off)
    fine = st.resample_to_resolution(img, 1.0, order=1)
    assert np.allclose(fine.header.get_zooms()[:3], 1.0) and nib.aff2axcodes(fine.affine) == ("R", "A", "S")
    back = st.resample_like(fine, img, order=1)
    x, y = _arr(img, np.float64), _arr(back, np.float64)
    assert back.shape == img.shape and np.allclose(back.affine, img.affine)
    assert np.abs(y - x)[brain].max() < 1e-4 * x[brain].max()
    # 2 mm -> 4 mm -> 2 mm: information is lost; the error in the brain stays a fraction of the
    # signal (measured 0.041 relative RMS; linear interpolation of a 2 mm noisy image)
    coarse = st.resample_to_resolution(img, 4.0, order=1)
    back = st.resample_like(coarse, img, order=1)
    y = _arr(back, np.float64)
    rel_rms = float(np.sqrt(np.mean((y - x)[brain] ** 2)) / np.mean(x[brain]))
    print(f"\n2->4->2 mm relative RMS error in the brain: {rel_rms:.3f}")
    assert rel_rms < 0.08
    # labels with order 0 stay labels; the volume of the brain mask is kept within 3 %
    mask = nib.Nifti1Image(brain.astype(np.uint8), img.affine)
    m4 = st.resample_to_resolution(mask, 4.0, order=0)
    assert _arr(m4).dtype == np.uint8 and set(np.unique(_arr(m4))) <= {0, 1}
    vol = lambda im: float(_arr(im).sum() * np.prod(im.header.get_zooms()[:3]))  # noqa: E731
    assert abs(vol(m4) / vol(mask) - 1) < 0.03
    m2 = st.resample_like(m4, mask, order=0)
    assert _dice(_arr(m2), brain) > 0.95


# ------------------------------------------------------------------ N4 and skull stripping


def test_n4_removes_a_known_multiplicative_bias(dataset):
    """A smooth field (+-35 %) laid over the stored image (which carries the simulation's own
    +-20 %-peak field): N4's field correlates with the known one and the WM intensity CV drops."""
    rec = dataset[1][2]
    img = st.to_ras(nib.load(rec["T1w"]))
    data = _arr(img, np.float64)
    labels = _arr(st.to_ras(nib.load(rec["dseg"])))
    brain = labels > 0
    wm = ndi.binary_erosion(labels == 3)
    ii = np.meshgrid(*[np.arange(n) - c for n, c in zip(data.shape, np.argwhere(brain).mean(0))], indexing="ij")
    logf = 0.25 * ii[0] / 40 - 0.2 * ii[2] / 40 + 0.15 * (ii[1] / 50) ** 2
    field = np.exp(logf - logf[brain].mean())
    biased = nib.Nifti1Image((data * field).astype(np.float32), img.affine)
    t0 = time.perf_counter()
    corrected, est = st.n4_bias_correction(biased, return_field=True)
    seconds = time.perf_counter() - t0
    cv = lambda x: float(x[wm].std() / x[wm].mean())  # noqa: E731
    est = _arr(est, np.float64)
    corr = float(np.corrcoef(np.log(est[brain]), np.log(field[brain]))[0, 1])
    print(f"\nN4: WM CV {cv(data * field):.3f} -> {cv(_arr(corrected)):.3f} (stored image {cv(data):.3f}); "
          f"log-field correlation {corr:.3f}; {seconds:.1f} s")
    assert cv(_arr(corrected)) < 0.6 * cv(data * field)
    assert corr > 0.7
    assert np.allclose(_arr(corrected) * est, data * field, rtol=1e-4, atol=1e-6)


def test_skull_strip_recovers_the_brain_and_drops_the_scalp(dataset):
    rec = dataset[1][2]
    img = st.to_ras(nib.load(rec["T1w"]))
    truth = _arr(st.to_ras(nib.load(rec["brain_mask"]))) > 0
    head = _arr(st.to_ras(nib.load(rec["head_mask"]))) > 0
    t0 = time.perf_counter()
    brain_img, mask = st.skull_strip(img)
    seconds = time.perf_counter() - t0
    m = _arr(mask) > 0
    d = ndi.distance_transform_edt(~truth, sampling=2.0)
    scalp = head & (d > LAYERS_MM["csf"] + LAYERS_MM["skull"])
    dsc = _dice(m, truth)
    print(f"\nBET skull strip: Dice {dsc:.3f}, volume {m.sum() / truth.sum():.3f} x truth, "
          f"scalp voxels kept {(m & scalp).sum()} of {scalp.sum()}; {seconds:.1f} s")
    assert dsc >= 0.95  # measured 0.969 on this image
    assert (m & scalp).sum() <= 0.001 * scalp.sum()
    assert np.all(_arr(brain_img)[~m] == 0) and np.array_equal(_arr(brain_img)[m], _arr(img, np.float32)[m])


def test_a_user_mask_takes_precedence(dataset):
    rec = dataset[1][2]
    img = nib.load(rec["T1w"])
    user = nib.load(rec["brain_mask"])  # stored like the image (PIL), at 2 mm
    # an eroded mask, so that it cannot be mistaken for what BET would find
    eroded = nib.Nifti1Image(ndi.binary_erosion(_arr(user) > 0, iterations=2).astype(np.uint8), user.affine)
    _, m = st.skull_strip(img, eroded)
    assert np.array_equal(_arr(m) > 0, _arr(eroded) > 0)
    prep, pmask, info = st.prepare_t1w(img, target_mm=TARGET_MM, mask=eroded, n4=False)
    assert info.mask_source == "user" and info.orientation == "PIL" and not info.n4
    expect = st.resample_like(st.to_ras(eroded), prep, order=0)
    assert np.array_equal(_arr(pmask), _arr(expect))
    assert np.all(_arr(prep)[_arr(pmask) == 0] == 0)
    assert _dice(_arr(st.restore(pmask, info, 0)), _arr(eroded)) > 0.9
    # the way back survives JSON (a later job restores without the input image)
    info2 = st.PrepInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert np.array_equal(_arr(st.restore(pmask, info2, 0)), _arr(st.restore(pmask, info, 0)))


# ------------------------------------------------------------------ orientation does not change the labels


@pytest.fixture(scope="module")
def unet_model(dataset, tmp_path_factory):
    """A tiny 2-D U-Net trained at TARGET_MM on sub-02 (train) and sub-03 (val), prepared with
    their true masks (the test is about orientation, not about the model's quality)."""
    out = tmp_path_factory.mktemp("unet")
    items = []
    for rec in dataset[1][2:]:
        prep, _, _ = st.prepare_t1w(nib.load(rec["T1w"]), target_mm=TARGET_MM,
                                    mask=nib.load(rec["brain_mask"]), n4=False)
        lab = st.resample_like(st.to_ras(nib.load(rec["dseg"])), prep, order=0)
        p = {"input": out / f"{rec['participant_id']}_T1w.nii.gz", "target": out / f"{rec['participant_id']}_dseg.nii.gz"}
        save_image(_arr(prep), prep.affine, p["input"])
        save_image(_arr(lab), prep.affine, p["target"], dtype=np.uint8)
        items.append({k: str(v) for k, v in p.items()})
    model = out / "segment-unet.pt"
    un.train({"train": items[:1], "val": items[1:]},
             {"epochs": 2, "batch_size": 4, "max_batches_per_epoch": 4, "channels": [8, 16], "num_res_units": 0,
              "lr": 1e-2, "threads": 1}, str(model), seed=0, progress=False)
    return str(model)


@pytest.fixture(scope="module")
def prepared_copies(dataset):
    """sub-01 ses-01 stored PIL (as written), RAS and LPS: each prepared (N4 + BET, 4 mm)."""
    img = nib.load(dataset[1][0]["T1w"])
    out = {}
    for codes in ("RAS", "LPS", "PIL"):
        copy = _reoriented(img, codes)
        t0 = time.perf_counter()
        out[codes] = (copy, *st.prepare_t1w(copy, target_mm=TARGET_MM))
        print(f"\nprepare_t1w ({codes}): {time.perf_counter() - t0:.1f} s")
    return out


@pytest.mark.integration
@pytest.mark.parametrize("method", ["kmeans", "atropos", "unet"])
def test_stored_orientation_does_not_change_the_labels(method, prepared_copies, dataset, request):
    params = {"model": request.getfixturevalue("unet_model")} if method == "unet" else {}
    labels = {}
    for codes, (copy, prep, _mask, info) in prepared_copies.items():
        assert nib.aff2axcodes(prep.affine) == ("R", "A", "S") and np.allclose(prep.header.get_zooms()[:3], TARGET_MM)
        lab = st.restore(METHODS[method](prep, **params), info, 0)
        assert lab.shape == copy.shape and np.array_equal(lab.affine, copy.affine)
        labels[codes] = _arr(st.to_ras(lab))  # compared voxel by voxel on one grid
    truth = _arr(st.to_ras(nib.load(dataset[1][0]["dseg"])))
    ref = labels["RAS"]
    for codes in ("LPS", "PIL"):
        agree = float(np.mean(labels[codes] == ref))
        print(f"\n{method}: {codes} vs RAS label agreement {agree:.5f}")
        assert agree >= 0.999
    d = dice(truth, ref, labels=(1, 2, 3))
    print(f"{method}: tissue Dice vs truth on the original grid {d}")
    if method == "unet":
        # the control: without reorientation the 2-D U-Net sees other slices, and its labels move
        prep = prepared_copies["RAS"][1]
        direct = _arr(METHODS[method](prep, **params))
        flipped = _arr(st.to_ras(METHODS[method](_reoriented(prep, "LPS"), **params)))
        control = float(np.mean(flipped == direct))
        print(f"unet on an LPS-stored prepared image, not reoriented: agreement {control:.4f}")
        assert control < 0.999
