"""The learned brain-age model on tissue volume fractions: it starts as the mean predictor, learns
age from the CSF fraction on a synthetic cohort, and a cohort without an age signal leaves it at
its start (the card says it did not beat it)."""
import nibabel as nib
import numpy as np
import pytest
import torch

from mrichain.predict import LEARNED_METHODS, TRAINERS
from mrichain.predict import mlp

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _labels(path, n_csf: int) -> str:
    """A 20^3 label map: background slab, ``n_csf`` CSF voxels, 2,000 GM, WM elsewhere."""
    lab = np.full((20, 20, 20), 3, np.uint8)
    flat = lab.reshape(-1)
    flat[:800] = 0
    flat[800:800 + n_csf] = 1
    flat[800 + n_csf:2800 + n_csf] = 2
    nib.save(nib.Nifti1Image(lab, AFFINE), path)
    return str(path)


def _cohort(tmp_path, n: int, signal: bool, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        age = float(rng.uniform(20, 80))
        n_csf = int(200 + 10 * age + rng.normal(0, 40)) if signal else 700
        items.append({"labels": _labels(tmp_path / f"s{i}.nii.gz", n_csf), "age": age})
    return items


def test_registered_and_untrained_network_predicts_the_training_mean():
    assert LEARNED_METHODS["mlp"] is mlp.predict_labels and TRAINERS["mlp"] is mlp.train
    torch.manual_seed(0)
    net = mlp.TissueMLP(4, hidden=8, ensemble=3)
    net.age_mean.fill_(47.5)
    net.age_std.fill_(12.0)
    out = net(torch.rand(5, 4))
    assert out.shape == (5,) and torch.allclose(out, torch.full((5,), 47.5))


def test_learns_age_from_the_csf_fraction(tmp_path):
    items = _cohort(tmp_path, 30, signal=True)
    out = tmp_path / "m.pt"
    result = mlp.train({"train": items[:20], "val": items[20:]}, {"epochs": 150}, str(out), seed=0,
                              progress=False)
    assert result.beats_start and result.optimiser_steps == 150
    val_age = np.array([it["age"] for it in items[20:]])
    mean_mae = float(np.mean(np.abs(val_age - np.mean([it["age"] for it in items[:20]]))))
    assert -result.start_score == pytest.approx(mean_mae, rel=1e-4)  # epoch 0 is the mean floor
    df = mlp.predict_labels(str(out), [it["labels"] for it in items[20:]])
    mae = float(np.mean(np.abs(df.predicted_age.to_numpy() - val_age)))
    assert mae == pytest.approx(-result.best_score, rel=1e-4)
    assert mae < 0.4 * mean_mae  # CSF voxels = 200 + 10 age + N(0, 40): age to about +-4 y
    assert np.std(df.predicted_age) > 0.8 * np.std(val_age)
    assert {"csf_ml", "icv_ml", "ventricle_ml"} <= set(df.columns)


def test_no_age_signal_is_flagged_as_not_learned(tmp_path):
    """Every subject has the same tissue fractions: the network can only learn a constant, and
    the "did it learn" check (the held-out predictions' spread against the ages') flags it."""
    import pandas as pd

    from mrichain.scoring.aggregate import _held_out_agreement
    from mrichain.scoring.metrics import CHECK_PREFIX

    items = _cohort(tmp_path, 12, signal=False)
    out = tmp_path / "m.pt"
    result = mlp.train({"train": items[:8], "val": items[8:]}, {"epochs": 30}, str(out), seed=0,
                              progress=False)
    assert -result.best_score > 0.99 * -result.start_score  # no better than the mean predictor on val
    pred = mlp.predict_labels(str(out), [it["labels"] for it in items[8:]]).predicted_age.to_numpy()
    rows = [dict(subject=f"s{i}", split="val", metric=CHECK_PREFIX + k, value=v)
            for i, (p, it) in enumerate(zip(pred, items[8:])) for k, v in (("predicted_age", p), ("age", it["age"]))]
    learned, reason = _held_out_agreement(pd.DataFrame(rows))
    assert not learned and "predictions span 0.0 y" in reason
