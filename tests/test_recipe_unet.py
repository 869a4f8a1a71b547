"""The U-Net's nnU-Net-style recipe: z-score in the foreground, foreground oversampling, 2.5-D
input, and a short poly-schedule training on a tiny synthetic 3-class volume that learns."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from mrichain.io import save_image
from mrichain.segment import unet as un
from mrichain.segment.brainmask import brain_mask_array
from mrichain.slices import SliceDataset, neighbour_stack, zscore_scale

SHAPE = (24, 28, 12)
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


def _phantom(seed, shape=SHAPE):
    """Nested ellipsoids (WM in GM in CSF) on a noisy zero background, a per-subject intensity
    scale (what z-score removes) and a smooth bias; returns (labels uint8, image float32)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    cx, cy = rng.uniform(-0.08, 0.08, 2)
    r = np.sqrt(((x - cx) / 0.8) ** 2 + ((y - cy) / 0.85) ** 2 + (z / 0.9) ** 2) * rng.uniform(0.92, 1.08)
    labels = np.zeros(shape, np.uint8)
    labels[r < 0.95] = 1
    labels[r < 0.75] = 2
    labels[r < 0.45] = 3
    scale = rng.uniform(0.5, 2.0)
    clean = np.array([0.0, 0.3, 0.6, 0.9])[labels] * scale * (1 + 0.1 * x)
    sigma = 0.04 * scale
    noisy = np.abs(clean + sigma * rng.standard_normal(shape) + 1j * sigma * rng.standard_normal(shape))
    return labels, noisy.astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("unet_recipe")
    items = []
    for i in range(4):
        labels, image = _phantom(i)
        img, seg = root / f"sub-{i}_T1w.nii.gz", root / f"sub-{i}_dseg.nii.gz"
        save_image(image, AFFINE, img)
        save_image(labels, AFFINE, seg, dtype=np.uint8)
        items.append({"input": str(img), "target": str(seg)})
    return {"train": items[:3], "val": items[3:]}


def test_zscore_gives_mean_0_sd_1_in_the_foreground():
    labels, image = _phantom(7)
    out = un.normalise(image, (4.0, 4.0, 4.0), "zscore")
    mask = brain_mask_array(image, (4.0, 4.0, 4.0))
    assert np.mean(mask == (labels > 0)) > 0.95  # the image's own mask is the brain
    assert out.shape == image.shape and out.dtype == np.float32
    assert float(out[mask].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(out[mask].std()) == pytest.approx(1.0, abs=1e-4)
    assert float(out[~mask].mean()) < -1.0  # background: transformed, not zeroed
    # the per-subject intensity scale is gone: the same anatomy at twice the signal normalises alike
    assert np.allclose(un.normalise(2 * image, (4.0, 4.0, 4.0), "zscore"), out, atol=1e-4)
    assert zscore_scale(np.ones((3, 3, 3)), np.zeros((3, 3, 3), bool)) == (1.0, 1.0)  # degenerate: no division by 0


def test_oversampling_draws_the_requested_fraction_of_foreground_slices():
    nz = 40
    vol = {"input": np.zeros((8, 8, nz), np.float32), "target": np.zeros((8, 8, nz), np.int64)}
    vol["input"][:, :, :] = np.arange(nz, dtype=np.float32)  # a slice's value is its z
    vol["target"][2:4, 2:4, :4] = 1  # 4 of 40 slices hold the class: f0 = 0.1
    ds = SliceDataset([vol], lambda v: v, mask_key=None)
    rarest, fg = un.rarest_class_slices(ds.volumes)
    assert rarest == 1 and list(np.flatnonzero(fg(vol))) == [0, 1, 2, 3]
    ds.set_oversampling(0.33, fg)
    torch.manual_seed(0)
    n = 3000
    drawn = np.array([float(ds[i % nz]["input"][0, 0, 0]) for i in range(n)])
    share = float(np.mean(drawn < 4))
    assert share == pytest.approx(0.33 + 0.67 * 0.1, abs=0.03)  # forced + those drawn anyway
    off = SliceDataset([vol], lambda v: v, mask_key=None)  # default: no draw, no oversampling
    assert float(np.mean([float(off[i % nz]["input"][0, 0, 0]) < 4 for i in range(400)])) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="foreground"):
        ds.set_oversampling(0.33, lambda v: np.zeros(nz, bool))


def test_two_and_a_half_d_stacks_neighbours_as_channels():
    vol = np.broadcast_to(np.arange(5, dtype=np.float32), (3, 4, 5)).copy()
    stack = neighbour_stack(vol, 1)
    assert stack.shape == (3, 3, 4, 5)
    assert list(stack[:, 0, 0, 0]) == [0, 0, 1] and list(stack[:, 0, 0, 4]) == [3, 4, 4]  # clamped edges
    ds = SliceDataset([{"input": vol, "target": np.ones((3, 4, 5), np.int64)}], lambda v: v,
                      mask_key="target", context=1, multiple=4)
    s = ds[2]
    assert s["input"].shape == (3, 4, 4) and s["target"].shape == (1, 4, 4)
    assert [float(c) for c in s["input"][:, 0, 0]] == [1, 2, 3]


@pytest.mark.parametrize("context", [0, 1])
def test_short_poly_training_learns_well_above_chance_and_its_start(cohort, tmp_path, context):
    """A few dozen poly-schedule AdamW steps on three phantoms: val Dice well above its epoch 0 and
    above chance (a random labelling of the brain scores ~1/3 per tissue); inference on an unseen
    volume at another intensity scale agrees with the truth (z-score at inference as in training)."""
    torch.set_num_threads(1)
    params = {"epochs": 15, "batch_size": 8, "max_batches_per_epoch": 6, "lr": 1e-2, "channels": [8, 16, 32],
              "num_res_units": 0, "patience": 10, "context": context, "threads": 1, "device": "cpu"}
    out = tmp_path / "unet.pt"
    res = un.train(cohort, params, str(out), seed=0, progress=False)
    start = res.curve[0]["val_dice_mean"]
    assert res.curve[0]["epoch"] == 0 and res.beats_start
    assert res.best_score > 0.75 and res.best_score > start + 0.3
    lrs = [r["lr"] for r in res.curve[1:]]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.3 * 1e-2  # poly: decays to ~0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["hyper_parameters"]["normalisation"] == "zscore"
    assert card["hyper_parameters"]["in_channels"] == 2 * context + 1
    # the phantoms' WM core is their smallest class; every slice is kept, empty ones included
    assert card["sampling"]["foreground_class"] == 3 and card["n_slices"]["train"] == 3 * SHAPE[2]

    labels, image = _phantom(11)
    seg = np.asarray(un.unet(nib.Nifti1Image(3.0 * image, AFFINE), model=str(out)).dataobj)
    from mrichain.scoring.metrics import dice

    assert np.nanmean(list(dice(labels, seg, labels=(1, 2, 3)).values())) > 0.7


def test_a_card_without_normalisation_is_read_as_percentile(cohort, tmp_path):
    """Cards written before z-score existed were trained on 99th-percentile scaling: inference
    must keep using it for them (and build a 1-channel net)."""
    params = {"epochs": 1, "batch_size": 4, "max_batches_per_epoch": 1, "channels": [4, 8], "num_res_units": 0,
              "normalisation": "percentile", "threads": 1, "device": "cpu"}
    out = tmp_path / "old.pt"
    un.train(cohort, params, str(out), seed=0, progress=False)
    card_path = out.with_suffix(".json")
    card = json.loads(card_path.read_text())
    for key in ("normalisation", "context"):
        card["hyper_parameters"].pop(key)
    card_path.write_text(json.dumps(card))
    net, card = un.load_model(str(out))
    assert next(w for w in net.parameters() if w.ndim == 4).shape[1] == 1  # first conv: 1 input channel
    image = nib.load(cohort["val"][0]["input"])
    x = np.asarray(image.dataobj, dtype=np.float32)
    expected = un._segment(net, un.normalise(x, (4.0, 4.0, 4.0), "percentile"), "cpu", 2)
    assert np.array_equal(np.asarray(un.unet(image, model=str(out)).dataobj), expected)
