"""Checks shared by every trainer's tests: the loss falls on a fixed batch; a run killed after its
first epoch resumes to the same state."""
import numpy as np
import pytest
import torch

from mrichain.train.engine import checkpoint_path


class Killed(Exception):
    """Stands for a job killed between epochs."""


def kill_after(n_epochs: int):
    """An ``on_epoch_end`` callback that raises :class:`Killed` once ``n_epochs`` epochs are done."""
    def kill(epoch, row):
        if epoch == n_epochs - 1:
            raise Killed

    return kill


def assert_same_run(full, resumed, full_path, resumed_path, keys=("train_loss", "steps", "lr")) -> None:
    """A resumed run reproduced the uninterrupted one: the same curve (NaN-aware: epoch 0, the
    untrained network, has no train loss), budget and saved weights."""
    for key in keys:
        np.testing.assert_array_equal([r[key] for r in resumed.curve], [r[key] for r in full.curve])
    assert (resumed.optimiser_steps, resumed.samples_seen) == (full.optimiser_steps, full.samples_seen)
    a, b = torch.load(full_path), torch.load(resumed_path)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def assert_resumes_identically(train, manifest, params, tmp_path, seed, name="m.pt"):
    """Train uninterrupted; train again killed after epoch 1 and rerun; the rerun must resume from
    the checkpoint and reproduce the uninterrupted curve and weights. Returns (full, resumed)."""
    full = train(manifest, params, str(tmp_path / "a" / name), seed, progress=False)
    out = tmp_path / "b" / name
    with pytest.raises(Killed):
        train(manifest, params, str(out), seed, on_epoch_end=kill_after(1), progress=False)
    assert checkpoint_path(out).exists() and not out.exists()
    resumed = train(manifest, params, str(out), seed, progress=False)
    assert full.resumed_from_epoch is None and resumed.resumed_from_epoch == 1
    assert resumed.curve[0]["epoch"] == 0 and len(resumed.curve) == len(full.curve)
    assert_same_run(full, resumed, tmp_path / "a" / name, out)
    return full, resumed


def fixed_batch_losses(net, loss_fn, batch, steps: int, lr: float) -> list[float]:
    """Losses of ``steps`` Adam steps at ``lr`` on one fixed ``batch``; ``loss_fn(net, batch, device)``
    is the method's training loss as the engine calls it."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(net, batch, torch.device("cpu"))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
