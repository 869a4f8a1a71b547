"""The shared training engine: seeding, checkpoint/resume, early stopping, card and curve."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from mrichain.train import TrainSettings, fit, seed_everything, select_device
from mrichain.train.engine import checkpoint_path
from trainer_checks import Killed, assert_same_run, kill_after


def _problem(n_train=48):
    """A linear regression with a little noise: (train, val) datasets of 8 features, 16 val items."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + 16, 8, generator=g)
    y = x @ (torch.arange(8.0) / 8) + 0.05 * torch.randn(n_train + 16, generator=g)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def _model(seed=3):
    seed_everything(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))


def loss_fn(model, batch, device):
    x, y = (t.to(device) for t in batch)
    return torch.nn.functional.mse_loss(model(x).squeeze(-1), y)


def score_fn(model, data, device):
    x, y = data.tensors
    return -torch.nn.functional.mse_loss(model(x.to(device)).squeeze(-1), y.to(device)).item()


def _settings(**kw):
    return TrainSettings(**{"epochs": 6, "batch_size": 8, "lr": 1e-2, "patience": 10, "seed": 3, **kw})


def test_device_is_cpu_here_and_loss_falls(tmp_path):
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    train, val = _problem()
    res = fit(_model(3), train, val, loss_fn=loss_fn, score_fn=score_fn, settings=_settings(),
              out_path=tmp_path / "toy-mlp.pt", card={"architecture": "mlp"}, progress=False)
    assert res.curve[0]["epoch"] == 0 and np.isnan(res.curve[0]["train_loss"])  # the untrained network
    losses = [r["train_loss"] for r in res.curve[1:]]
    assert losses[-1] < 0.5 * losses[0]
    card = json.loads((tmp_path / "toy-mlp.json").read_text())
    assert card["validation_score"]["value"] == pytest.approx(res.best_score)
    assert card["seed"] == 3 and card["epochs_run"] == 6 and card["device"] == res.device
    assert card["n_parameters"] == 8 * 16 + 16 + 16 + 1
    assert (tmp_path / "toy-mlp_curve.tsv").exists() and (tmp_path / "toy-mlp_curve.png").exists()
    assert set(torch.load(tmp_path / "toy-mlp.pt")) == set(_model(3).state_dict())


def test_interrupted_training_resumes_to_the_same_state(tmp_path):
    train, val = _problem()
    full = fit(_model(3), train, val, loss_fn=loss_fn, score_fn=score_fn, settings=_settings(),
               out_path=tmp_path / "a" / "m.pt", card={"architecture": "mlp"}, progress=False)

    out = tmp_path / "b" / "m.pt"
    with pytest.raises(Killed):
        fit(_model(3), train, val, loss_fn=loss_fn, score_fn=score_fn, settings=_settings(), out_path=out,
            card={"architecture": "mlp"}, on_epoch_end=kill_after(3), progress=False)
    assert checkpoint_path(out).exists() and not out.exists()
    resumed = fit(_model(99), train, val, loss_fn=loss_fn, score_fn=score_fn, settings=_settings(),
                  out_path=out, card={"architecture": "mlp"}, progress=False)
    assert resumed.resumed_from_epoch == 3
    assert_same_run(full, resumed, tmp_path / "a" / "m.pt", out, keys=("train_loss", "val_score", "steps", "lr"))
    assert (full.optimiser_steps, full.samples_seen) == (36, 288)


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    train, val = _problem()
    out = tmp_path / "m.pt"
    fit(_model(3), train, val, loss_fn=loss_fn, score_fn=score_fn, settings=_settings(epochs=2), out_path=out,
        card={"architecture": "mlp"}, progress=False)
    res = fit(_model(3), train, val, loss_fn=loss_fn, score_fn=score_fn, settings=_settings(epochs=2, lr=5e-3),
              out_path=out, card={"architecture": "mlp"}, progress=False)
    assert res.resumed_from_epoch is None and res.epochs_run == 2


def test_early_stopping(tmp_path):
    train, val = _problem()

    def flat_score(model, data, device):
        return 0.0  # never improves on the untrained network's (epoch 0)

    res = fit(_model(3), train, val, loss_fn=loss_fn, score_fn=flat_score, settings=_settings(patience=2),
              out_path=tmp_path / "m.pt", card={"architecture": "mlp"}, progress=False)
    # epoch 0 is the best, so patience 2 stops after 2 training epochs
    assert res.epochs_run == 2 and res.best_epoch == 0 and not res.beats_start
