"""SFCN trained as Peng et al. train it: soft-label KL over age bins, expectation and interval from
the bin distribution, average-pool downsampling, normalised pooled features, and a selection that
a constant predictor cannot win; on a synthetic cohort whose age is carried by a blob's size."""
import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch

from mrichain.io import save_image
from mrichain.predict import sfcn
from mrichain.train import seed_everything
from mrichain.train.params import CardError

N = 32
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -N
TINY = {"channels": [4, 8, 8], "input_shape": [16, 16, 16], "voxel_mm": 4.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------ soft labels and bins
def test_soft_labels_are_gaussian_bin_masses_that_sum_to_one():
    centres = sfcn.bin_centres([20.0, 80.0], 1.0)
    assert len(centres) == 60 and float(centres[0]) == 20.5 and float(centres[-1]) == 79.5
    q = sfcn.soft_labels(torch.tensor([50.5, 20.0]), centres, 1.0, 1.0)
    assert q.shape == (2, 60) and torch.allclose(q.sum(1), torch.ones(2, dtype=q.dtype))
    # at a bin centre: the centre bin holds P(|z| < 0.5), its neighbours P(0.5 < z < 1.5), symmetric
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    assert float(q[0, 30]) == pytest.approx(phi(0.5) - phi(-0.5), abs=1e-9)
    assert float(q[0, 29]) == pytest.approx(float(q[0, 31])) == pytest.approx(phi(1.5) - phi(0.5), abs=1e-9)
    assert sfcn.expected_age(q[:1], centres)[0] == pytest.approx(50.5, abs=1e-9)
    # at the range's edge the lost half is renormalised onto the bins that remain
    assert float(q[1, 0]) == pytest.approx((phi(1) - phi(0)) / 0.5, abs=1e-9)
    # sigma 0: a one-hot label in the bin holding the age
    hard = sfcn.soft_labels(torch.tensor([33.2, 99.0]), centres, 1.0, 0.0)
    assert int(hard[0].argmax()) == 13 and float(hard[0].sum()) == 1.0 and int(hard[1].argmax()) == 59


def test_kl_loss_and_expectation_on_hand_made_distributions():
    centres = torch.tensor([10.0, 20.0], dtype=torch.float64)
    # an age halfway between two bins of width 10 with a wide sigma: label [0.5, 0.5] by symmetry
    q = sfcn.soft_labels(torch.tensor([15.0]), centres, 10.0, 3.0)
    assert torch.allclose(q, torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    p = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    kl = sfcn.soft_label_kl(p.log(), torch.tensor([15.0]), centres, 10.0, 3.0)
    assert float(kl) == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), abs=1e-12)
    assert float(sfcn.soft_label_kl(q.log(), torch.tensor([15.0]), centres, 10.0, 3.0)) == pytest.approx(0, abs=1e-12)
    assert sfcn.expected_age(p, centres)[0] == pytest.approx(17.5)
    # quantiles: each bin's mass spread evenly over its width
    c4 = np.array([0.5, 1.5, 2.5, 3.5])
    lo, med, hi = sfcn.bin_quantiles(np.full((1, 4), 0.25), c4, 1.0, [0.25, 0.5, 0.95])[:, 0]
    assert (lo, med, hi) == pytest.approx((1.0, 2.0, 3.8))
    lo, hi = sfcn.bin_quantiles(np.array([[0.0, 1.0, 0.0, 0.0]]), c4, 1.0, [0.05, 0.95])[:, 0]
    assert (lo, hi) == pytest.approx((1.05, 1.95))


def test_bins_reach_past_the_training_ages():
    lo, hi = sfcn.resolve_bin_range([21.3, 40.0, 78.9], label_sigma=1.0, bin_width=1.0)
    assert lo <= 21.3 - 5.7 and hi >= 78.9 + 5.7 and lo == int(lo) and hi == int(hi)
    assert sfcn.resolve_bin_range([30.0, 31.0], 2.0, 1.0) == [24.0, 37.0]  # 3 sigma when the range is narrow
    assert sfcn.resolve_bin_range([1.0, 2.0], 1.0, 1.0)[0] == 0.0  # no negative ages


# ------------------------------------------------------------------------------- downsampling
def test_downsampling_is_block_averaging_not_decimation():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((8, 6, 4)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    out = sfcn.downsample(img, 4.0)
    blocks = data.reshape(4, 2, 3, 2, 2, 2).mean(axis=(1, 3, 5))
    assert out.shape == (4, 3, 2) and np.allclose(out, blocks, atol=1e-6)
    assert not np.allclose(out, data[::2, ::2, ::2])
    # white noise: the mean of 8 voxels has SD 1/sqrt(8) of one voxel's
    noise = rng.standard_normal((64, 64, 64)).astype(np.float32)
    sd = sfcn.downsample(nib.Nifti1Image(noise, np.diag([2.0, 2.0, 2.0, 1.0])), 4.0).std()
    assert sd == pytest.approx(1 / math.sqrt(8), rel=0.05)
    # a trailing voxel that fills no block is dropped; the native voxel size is a no-op
    assert sfcn.block_mean(np.ones((5, 4, 4)), (2, 2, 2)).shape == (2, 2, 2)
    assert np.array_equal(sfcn.downsample(img, 2.0), data)


def test_a_non_integer_ratio_is_smoothed_before_resampling():
    noise = np.random.default_rng(1).standard_normal((40, 40, 40)).astype(np.float32)
    out = sfcn.downsample(nib.Nifti1Image(noise, np.diag([2.0, 2.0, 2.0, 1.0])), 3.0)
    assert out.shape[0] in (26, 27) and out.std() < 0.6  # decimation-like linear resampling keeps SD ~0.8


# ------------------------------------------------------------------ normalised pooled features
def test_recalibrated_norms_give_the_pooled_features_unit_spread_across_subjects():
    """A tiny between-subject difference of the pooled features (here: brightness +- 1 %) comes out
    of the norm layer with SD ~1 across subjects in eval mode, after the precise-BN pass."""
    seed_everything(0)
    net = sfcn.SFCN(channels=(4, 8), n_bins=10)
    base = torch.rand(1, 1, 12, 12, 12)
    x = torch.cat([base * (1 + 0.01 * k) for k in range(-3, 4)])
    with torch.no_grad():
        net.eval()
        raw = net.features(x).mean(dim=(2, 3, 4))
        before = net.norm(raw)
        sfcn.recalibrate_norms(net, x)
        after = net.pooled(x)
    assert float((raw.std(0) / raw.mean(0).abs()).max()) < 0.05  # the raw features barely differ
    assert float(before.std(0).max()) < 0.05  # untouched running stats (mean 0, var 1) keep them flat
    assert float(after.std(0).min()) > 0.8  # (running_var is the unbiased estimate: SD 1 up to eps)
    assert torch.allclose(after.mean(0), torch.zeros(8), atol=1e-4)
    assert not net.training


def test_a_batch_of_one_trains_without_failing():
    net = sfcn.SFCN(channels=(4, 8), n_bins=10).train()
    assert net(torch.rand(1, 1, 12, 12, 12)).shape == (1, 10)


# ---------------------------------------------------------------------------------- selection
def test_no_constant_beats_the_val_median_and_the_score_ranks_any_beater_first():
    ages = np.array([21.0, 35.0, 56.0, 57.0, 79.0])
    best = sfcn.best_constant_mae(ages)
    assert all(np.mean(np.abs(ages - c)) >= best - 1e-12 for c in np.linspace(0, 100, 1001))
    beats = sfcn.selection_score(best - 0.01, best, train_mae=30.0)
    fits = [sfcn.selection_score(best + d, best, train_mae=t) for d, t in ((0.0, 0.0), (5.0, 0.1), (0.0, 3.0))]
    assert beats == pytest.approx(-(best - 0.01)) and all(beats > f for f in fits)
    assert fits[0] > fits[1] > fits[2]  # not beating the constant: ordered by the train fit


def _blob_image(age: float, rng) -> np.ndarray:
    """A bright ball with a dark core whose radius grows with age (as the ventricles do), plus noise."""
    g = np.stack(np.meshgrid(*[np.arange(N)] * 3, indexing="ij")).astype(np.float64)
    c = (N - 1) / 2 + rng.uniform(-1, 1, 3)[:, None, None, None]
    r = np.sqrt(((g - c) ** 2).sum(0))
    img = np.where(r < 12, 0.8, 0.0)
    img[r < 2.0 + 6.0 * (age - 20.0) / 60.0] = 0.2
    return np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, None).astype(np.float32)


@pytest.fixture(scope="module")
def blob_cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    items = []
    for i, age in enumerate(np.linspace(20, 80, 30) + rng.uniform(-1, 1, 30)):
        save_image(_blob_image(age, rng), AFFINE, d / f"s{i}_T1w.nii.gz")
        items.append({"image": str(d / f"s{i}_T1w.nii.gz"), "age": float(age)})
    # ages spread evenly over every split: 15 train, 7 val, 8 test
    return {"train": [it for i, it in enumerate(items) if i % 4 in (0, 2)],
            "val": [it for i, it in enumerate(items) if i % 4 == 3],
            "test": [it for i, it in enumerate(items) if i % 4 == 1]}


@pytest.fixture(scope="module")
def trained(blob_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("sfcn") / "predict-sfcn.pt"
    params = {**TINY, "epochs": 40, "lr": 2e-2, "batch_size": 4}
    result = sfcn.train({"train": blob_cohort["train"], "val": blob_cohort["val"]}, params, str(out), 0,
                        progress=False)
    return out, result


def test_sfcn_learns_age_from_a_blob_and_does_not_collapse(blob_cohort, trained):
    """Held-out subjects: predictions spread at least half as widely as the ages, correlate with
    them (r > 0.8) and beat the train mean's MAE (the floor)."""
    out, result = trained
    test = blob_cohort["test"]
    ages = np.array([it["age"] for it in test])
    df = sfcn.predict_images(str(out), [it["image"] for it in test], interval=0.9)
    pred = df.predicted_age.to_numpy()
    train_mean = np.mean([it["age"] for it in blob_cohort["train"]])
    assert pred.std() > 0.5 * ages.std(), (pred.round(1), ages.round(1))
    assert np.corrcoef(pred, ages)[0, 1] > 0.8
    assert np.mean(np.abs(pred - ages)) < np.mean(np.abs(train_mean - ages))
    assert np.all((df.predicted_lower <= df.predicted_age) & (df.predicted_age <= df.predicted_upper))
    assert np.all(df.epistemic_sd == 0) and np.all(df.aleatoric_sd > 0)  # no dropout: one pass
    card = json.loads(out.with_suffix(".json").read_text())
    assert result.best_epoch > 0 and card["beats_start"]
    assert card["selected"]["selected_by"] == "val_mae"
    assert card["validation_score"]["value"] == pytest.approx(-card["selected"]["val_mae_years"], abs=1e-6)
    assert card["selected"]["val_mae_years"] < card["selected"]["val_best_constant_mae_years"]
    lo, hi = card["hyper_parameters"]["bin_range"]
    assert card["target"]["bins"] == round(hi - lo) and lo < min(card["training_ages"])


def test_a_val_split_no_model_can_beat_selects_by_the_train_fit(blob_cohort, tmp_path):
    """Two val subjects one year apart (as the default's 56 and 57): a constant at their median
    is within 0.5 y, so selection falls to the train MAE; the card says so."""
    val = [dict(blob_cohort["val"][0], age=56.0), dict(blob_cohort["val"][1], age=57.0)]
    out = tmp_path / "m.pt"
    result = sfcn.train({"train": blob_cohort["train"], "val": val}, {**TINY, "epochs": 6, "lr": 1e-2},
                        str(out), 0, progress=False)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["selected"]["selected_by"] == "train_mae" and card["selected"]["val_best_constant_mae_years"] == 0.5
    scores = [r["val_neg_mae_years"] for r in result.curve]
    assert all(s <= -0.5 for s in scores) and result.best_epoch == int(np.argmax(scores))
    assert card["validation_score"]["value"] == pytest.approx(-0.5 - card["selected"]["train_mae_years"], abs=1e-6)


def test_a_card_without_resolved_bins_is_refused(trained, tmp_path):
    out, _ = trained
    card = json.loads(out.with_suffix(".json").read_text())
    card["hyper_parameters"]["bin_range"] = None
    (tmp_path / "m.pt").write_bytes(out.read_bytes())
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(CardError, match="bin_range"):
        sfcn.load_model(tmp_path / "m.pt")
