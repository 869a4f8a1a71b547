"""The engine's optimisers and learning-rate schedules, the epoch-0 row (the untrained network's
val score, the start every epoch must beat) and the budget on the card (steps, samples seen)."""
import json
import math

import jsonschema
import numpy as np
import pytest
import torch

from mrichain import UserError

from mrichain.plan import stages
from mrichain.train import TrainSettings, fit
from mrichain.train.engine import checkpoint_path, make_optimiser, make_scheduler, safe_load
from mrichain.train.params import split_params
from test_train_engine import _model, _problem, loss_fn, score_fn
from trainer_checks import Killed, assert_same_run, kill_after

torch.set_num_threads(1)


def _settings(**kw):
    return TrainSettings(**{"epochs": 4, "batch_size": 8, "lr": 1e-2, "patience": 10, "seed": 3, **kw})


def _fit(out, settings, model=None, **kw):
    train, val = _problem()
    kw = {"loss_fn": loss_fn, "score_fn": score_fn, **kw}
    return fit(model if model is not None else _model(), train, val, settings=settings, out_path=out,
               card={"architecture": "mlp"}, progress=False, **kw)


def _rates(settings, steps_per_epoch, n_steps):
    """The rate each of ``n_steps`` optimiser steps is taken at, read from a real optimiser."""
    net = torch.nn.Linear(2, 1)
    opt = make_optimiser(net, settings)
    sched = make_scheduler(opt, settings, steps_per_epoch)
    rates = []
    for _ in range(n_steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(rates)


# ---- the schedules against their formulas ---------------------------------------------------------
# 5 epochs x 10 steps: T = 50 planned steps, lr 0.1.
T, PER_EPOCH, LR = 50, 10, 0.1
AT = np.array([0, 1, 10, 25, 39, 40, 49])


def test_constant_keeps_the_rate():
    rates = _rates(_settings(epochs=5, lr=LR), PER_EPOCH, T)
    np.testing.assert_allclose(rates, LR)


def test_poly_is_nnunets_formula():
    rates = _rates(_settings(epochs=5, lr=LR, schedule="poly", poly_exponent=0.9), PER_EPOCH, T)
    np.testing.assert_allclose(rates[AT], LR * (1 - AT / T) ** 0.9, rtol=1e-12)
    assert rates[-1] > 0 and np.all(np.diff(rates) < 0)  # falls every step, never to 0 within the run


def test_cosine_falls_to_zero():
    rates = _rates(_settings(epochs=5, lr=LR, schedule="cosine"), PER_EPOCH, T)
    np.testing.assert_allclose(rates[AT], LR * 0.5 * (1 + np.cos(np.pi * AT / T)), rtol=1e-12)
    assert rates[25] == pytest.approx(LR / 2) and 0 < rates[-1] < 1e-3 * LR


def test_step_multiplies_by_gamma_every_step_epochs():
    rates = _rates(_settings(epochs=5, lr=LR, schedule="step", step_epochs=2, step_gamma=0.1), PER_EPOCH, T)
    # epochs 0-1 at lr, 2-3 at lr/10, 4 at lr/100 (fastMRI: x0.1 at epoch 40)
    np.testing.assert_allclose(rates[[0, 19, 20, 39, 40, 49]], LR * np.array([1, 1, 0.1, 0.1, 0.01, 0.01]),
                               rtol=1e-12)


def test_warmup_rises_linearly_then_the_schedule_runs_over_the_rest():
    rates = _rates(_settings(epochs=5, lr=LR, schedule="poly", warmup_epochs=1), PER_EPOCH, T)
    np.testing.assert_allclose(rates[:10], LR * np.arange(1, 11) / 10, rtol=1e-12)  # step 9 reaches lr
    t = np.array([10, 20, 49]) - 10  # poly over the 40 steps after the warm-up
    np.testing.assert_allclose(rates[[10, 20, 49]], LR * (1 - t / 40) ** 0.9, rtol=1e-12)
    constant = _rates(_settings(epochs=5, lr=LR, warmup_epochs=2), PER_EPOCH, T)
    np.testing.assert_allclose(constant[[0, 19, 20, 49]], LR * np.array([1 / 20, 1, 1, 1]), rtol=1e-12)


def test_sgd_is_nesterov_with_the_momentum_asked():
    opt = make_optimiser(torch.nn.Linear(2, 1), _settings(optimiser="sgd", momentum=0.99, weight_decay=3e-5))
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.99
    assert group["weight_decay"] == 3e-5
    assert isinstance(make_optimiser(torch.nn.Linear(2, 1), _settings()), torch.optim.AdamW)


def test_settings_that_make_no_schedule_are_refused():
    with pytest.raises(UserError, match="step_epochs"):
        _settings(schedule="step")
    with pytest.raises(UserError, match="schedule"):
        split_params({"schedule": "exponential"}, {}, seed=0, name="unet")
    with pytest.raises(UserError, match="optimiser"):
        _settings(optimiser="adam")
    schemas = stages.method("segment", "unet").params
    for key, bad, good in (("momentum", 1.0, 0.99), ("poly_exponent", 0, 0.9), ("step_gamma", 0, 1.0),
                           ("warmup_epochs", -1, 0), ("step_epochs", 0, None), ("schedule", "linear", "poly"),
                           ("optimiser", "adam", "sgd")):
        assert not jsonschema.Draft202012Validator(schemas[key]).is_valid(bad), key
        assert jsonschema.Draft202012Validator(schemas[key]).is_valid(good), key


# ---- fit: epoch 0, the rate per row, the budget on the card -----------------------------------------
def test_epoch_0_is_the_untrained_networks_val_score(tmp_path):
    train, val = _problem()
    untrained = score_fn(_model().eval(), val, torch.device("cpu"))
    res = _fit(tmp_path / "m.pt", _settings(schedule="poly"))
    row = res.curve[0]
    assert row["epoch"] == 0 and math.isnan(row["train_loss"]) and row["steps"] == 0 and row["samples"] == 0
    assert row["val_score"] == pytest.approx(untrained, rel=1e-6) and row["seconds"] >= 0
    assert [r["epoch"] for r in res.curve] == [0, 1, 2, 3, 4] and res.epochs_run == 4
    # each row: cumulative steps; the rate of the epoch's last step (6 batches of 8 per epoch, T = 24)
    assert [r["steps"] for r in res.curve] == [0, 6, 12, 18, 24]
    np.testing.assert_allclose([r["lr"] for r in res.curve[1:]],
                               [1e-2 * (1 - (6 * e - 1) / 24) ** 0.9 for e in (1, 2, 3, 4)], rtol=1e-9)
    tsv = (tmp_path / "m_curve.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["epoch", "train_loss", "val_score", "seconds", "samples", "steps", "lr"]
    assert len(tsv) == 1 + 5 and tsv[1].startswith("0\t")  # the TSV (and the PNG) start at epoch 0
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["validation_score"]["start"] == pytest.approx(untrained, rel=1e-6)
    assert card["training"]["schedule"] == "poly" and card["training"]["poly_exponent"] == 0.9


def test_a_network_that_learns_beats_its_start(tmp_path):
    res = _fit(tmp_path / "m.pt", _settings())
    card = json.loads((tmp_path / "m.json").read_text())
    assert res.beats_start and card["beats_start"] is True and res.best_epoch >= 1
    assert res.best_score > res.curve[0]["val_score"] and card["validation_score"]["epoch"] == res.best_epoch


@pytest.mark.parametrize("case", ["constant score", "trained away from the target"])
def test_a_network_that_never_beats_its_start_keeps_its_initial_weights(tmp_path, case):
    initial = {k: v.clone() for k, v in _model().state_dict().items()}
    if case == "constant score":
        kw = {"score_fn": lambda model, data, device: 0.5}
    else:  # it learns -y while scored on y: every epoch's val score is below the untrained one's
        kw = {"loss_fn": lambda model, batch, device: loss_fn(model, (batch[0], -batch[1]), device)}
    res = _fit(tmp_path / "m.pt", _settings(patience=10), **kw)
    card = json.loads((tmp_path / "m.json").read_text())
    assert not res.beats_start and card["beats_start"] is False
    assert res.best_epoch == 0 and card["validation_score"]["epoch"] == 0 and res.epochs_run == 4
    assert res.best_score == res.curve[0]["val_score"] == card["validation_score"]["value"]
    if case != "constant score":
        assert all(r["val_score"] < res.curve[0]["val_score"] for r in res.curve[1:])
    saved = torch.load(tmp_path / "m.pt")
    assert all(torch.equal(saved[k], initial[k]) for k in initial)  # the epoch-0 weights were selected
    # and they are not simply what training left: the last epoch's weights moved
    last = safe_load(checkpoint_path(tmp_path / "m.pt"))["model"]
    assert not all(torch.equal(last[k], initial[k]) for k in initial)


@pytest.mark.parametrize("n_train, batch, max_batches, per_epoch, samples_per_epoch", [
    (48, 10, None, 5, 48),  # ceil(48 / 10) = 5 batches, the last of 8
    (48, 10, 2, 2, 20),  # capped at 2 batches of 10
])
def test_the_card_states_the_budget_as_steps_and_samples(tmp_path, n_train, batch, max_batches, per_epoch,
                                                         samples_per_epoch):
    train, val = _problem(n_train)
    seen = []

    def counting_loss(model, b, device):
        seen.append(len(b[0]))
        return loss_fn(model, b, device)

    res = fit(_model(), train, val, loss_fn=counting_loss, score_fn=score_fn, out_path=tmp_path / "m.pt",
              card={"architecture": "mlp"}, progress=False,
              settings=_settings(epochs=3, batch_size=batch, max_batches_per_epoch=max_batches))
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["optimiser_steps"] == res.optimiser_steps == 3 * per_epoch == len(seen)
    assert card["samples_seen"] == res.samples_seen == 3 * samples_per_epoch == sum(seen)
    assert card["epochs_run"] == 3


def test_early_stop_counts_epochs_after_the_best_and_the_budget_what_ran(tmp_path):
    res = _fit(tmp_path / "m.pt", _settings(epochs=20, patience=2), score_fn=lambda m, d, dev: 0.0)
    assert res.epochs_run == 2 and res.optimiser_steps == 12 and res.samples_seen == 96


def test_a_resumed_scheduled_run_reproduces_the_uninterrupted_one(tmp_path):
    settings = _settings(epochs=5, optimiser="sgd", momentum=0.9, lr=5e-2, schedule="poly", warmup_epochs=1)
    full = _fit(tmp_path / "a" / "m.pt", settings)

    out = tmp_path / "b" / "m.pt"
    with pytest.raises(Killed):
        _fit(out, settings, on_epoch_end=kill_after(2))
    ckpt = safe_load(checkpoint_path(out))
    assert ckpt["scheduler"]["last_epoch"] == ckpt["steps"] == 12  # the schedule's position is saved
    resumed = _fit(out, settings, model=_model(99))
    assert resumed.resumed_from_epoch == 2
    assert_same_run(full, resumed, tmp_path / "a" / "m.pt", out, keys=("train_loss", "val_score", "steps", "lr"))
    assert (full.optimiser_steps, full.samples_seen) == (30, 240)
    last_a = safe_load(checkpoint_path(tmp_path / "a" / "m.pt"))["model"]
    last_b = safe_load(checkpoint_path(out))["model"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
