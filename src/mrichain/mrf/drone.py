"""DRONE: a fully connected network from MR fingerprints to T1 and T2 (Cohen, Zhu & Rosen,
"MR fingerprinting deep reconstruction network (DRONE)", MRM 80:885, 2018).

Architecture (as published): input layer, two hidden layers of ``hidden`` = 300 units, an output
layer of 2 (T1, T2).

- Input: the fingerprint divided by its norm, real and imaginary parts (2T values, interleaved per
  time point: a view of the complex tensor, no copy), times sqrt(T) so the entries are of order 1. Normalising removes PD (the scale) as matching does; the
  complex parts keep the sign of the inversion-recovery signal, which the magnitude (used in the
  paper's EPI-MRF) folds over. The simulated fingerprints share the dictionary's receiver phase
  (no B0 or coil phase in the simulation); real data would need a global phase correction first.
- Output: log T1 and log T2, standardised by the mean and SD of the training atoms' log values
  (stored as buffers, so the state dict carries them). T1 and T2 span two to three decades and
  are scored by relative error; a squared error on the log is a relative error of every
  magnitude alike, where a squared error in ms would be dominated by CSF.
- Training: the dictionary's atoms (unit norm) with complex Gaussian noise added per item at an
  SNR drawn uniformly in dB from ``noise_snr_range`` (SNR as in :mod:`mrichain.mrf.fingerprints`:
  RMS signal / RMS noise; an atom's RMS is 1/sqrt(T)), MSE on the standardised logs, through the
  shared engine :func:`mrichain.train.fit` (checkpoints, resume, card). The noise is drawn in the
  batch's collate function from torch's generator, which the engine seeds per epoch: a resumed
  run draws what an uninterrupted one would.
- Validation: ``n_val`` (T1, T2) pairs drawn log-uniformly *between* the grid's points (T2 < T1),
  simulated with the EPG, noise at the middle of the SNR range; the score is
  ``-(T1 MAPE + T2 MAPE) / 2`` (higher is better).
- PD: a network gives no scale, so PD is the scale of the fingerprint against the *nearest
  dictionary atom* of the predicted (T1, T2) (:meth:`~mrichain.mrf.dictionary.Dictionary.nearest`:
  log-grid rounding, O(1) per voxel, plus one inner product of length T), not a fresh EPG
  simulation of the predicted values (1000 EPG steps per voxel would cost more than matching).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from mrichain.mrf.dictionary import Dictionary, load_dictionary
from mrichain.mrf.epg import simulate_fisp
from mrichain.train.params import split_params

#: Training parameters and their defaults (loop settings go to ``TrainSettings``, the rest to the card).
DEFAULTS: dict = {
    "epochs": 30,
    "batch_size": 256,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "patience": 8,
    "max_batches_per_epoch": None,
    "device": "auto",
    "amp": False,  # small dense layers: AMP saves nothing and costs precision on the log targets
    "grad_clip": 1.0,
    "hidden": 300,
    "noise_snr_range": [20.0, 50.0],  # dB, uniform per training item
    "n_val": 1000,
    "threads": None,
}


class Drone(nn.Module):
    """[B, 2T] (normalised fingerprint, :func:`network_input`) -> [B, 2] standardised (log T1, log T2)."""

    def __init__(self, n_timepoints: int, hidden: int = 300):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * n_timepoints, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2),
        )
        self.register_buffer("log_mean", torch.zeros(2))
        self.register_buffer("log_std", torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def to_ms(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output [B, 2] -> (T1, T2) in ms, [B] each."""
        logs = out * self.log_std + self.log_mean
        return torch.exp(logs[:, 0]), torch.exp(logs[:, 1])


def build(hyper_parameters: dict) -> Drone:
    return Drone(int(hyper_parameters["n_timepoints"]), int(hyper_parameters["hidden"]))


def network_input(fingerprints: torch.Tensor) -> torch.Tensor:
    """Complex [n, T] -> float32 [n, 2T]: ``sqrt(T) f / ||f||``, real and imaginary part of each
    time point side by side (a zero-copy view of the complex tensor, then one scaling pass)."""
    n_t = fingerprints.shape[-1]
    x = torch.view_as_real(fingerprints.to(torch.complex64)).reshape(fingerprints.shape[0], 2 * n_t)
    scale = np.sqrt(n_t) / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-30)
    return x * scale


def noisy_atoms(atoms: torch.Tensor, snr_db: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit-norm atoms [n, T] plus complex noise of RMS ``10^(-snr/20) / sqrt(T)`` per item
    (``snr_db`` [n]); draws from torch's default generator unless ``generator`` is given."""
    n_t = atoms.shape[-1]
    sigma = (10.0 ** (-snr_db.double() / 20.0) / np.sqrt(n_t) / np.sqrt(2.0)).float()[:, None]
    re = torch.randn(atoms.shape, generator=generator, device=atoms.device)
    im = torch.randn(atoms.shape, generator=generator, device=atoms.device)
    return atoms + torch.complex(re * sigma, im * sigma)


class _AtomCollate:
    """Collate function: atom indices -> {"input": noisy network input, "target": standardised logs}."""

    def __init__(self, atoms, targets, snr_range):
        self.atoms, self.targets, self.snr_range = atoms, targets, snr_range

    def __call__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.int64)
        lo, hi = self.snr_range
        snr = lo + (hi - lo) * torch.rand(idx.numel(), dtype=torch.float64)
        return {"input": network_input(noisy_atoms(self.atoms[idx], snr)), "target": self.targets[idx]}


def loss_fn(model, batch, device):
    """MSE on the standardised (log T1, log T2)."""
    return nn.functional.mse_loss(model(batch["input"].to(device)), batch["target"].to(device))


@torch.no_grad()
def score_fn(model, val_data: dict, device) -> float:
    """``-(T1 MAPE + T2 MAPE) / 2`` (%) on the validation fingerprints (higher is better)."""
    out = model(val_data["input"].to(device))
    t1, t2 = model.to_ms(out)
    e1 = ((t1.cpu().double() - val_data["t1"]).abs() / val_data["t1"]).mean()
    e2 = ((t2.cpu().double() - val_data["t2"]).abs() / val_data["t2"]).mean()
    return float(-50.0 * (e1 + e2))


def validation_set(dictionary: Dictionary, n: int, snr_db: float, seed: int) -> dict:
    """``n`` off-grid (T1, T2) pairs (log-uniform in the grid's ranges, T2 < T1), their noisy EPG
    fingerprints as network input, and the true values (float64 [n])."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 12, 1]))
    (a1, b1), (a2, b2) = dictionary.grid.t1_range_ms, dictionary.grid.t2_range_ms
    t1, t2 = [], []
    while len(t1) < n:
        x = np.exp(rng.uniform(np.log(a1), np.log(b1), 4 * n))
        y = np.exp(rng.uniform(np.log(a2), np.log(b2), 4 * n))
        ok = y < x
        t1.extend(x[ok].tolist())
        t2.extend(y[ok].tolist())
    t1, t2 = np.asarray(t1[:n]), np.asarray(t2[:n])
    sig = simulate_fisp(dictionary.sequence, t1, t2, n_states=dictionary.n_states)
    sig = sig / torch.linalg.vector_norm(sig, dim=1, keepdim=True)
    gen = torch.Generator().manual_seed(int(seed))
    noisy = noisy_atoms(sig.to(torch.complex64), torch.full((n,), float(snr_db)), gen)
    return {"input": network_input(noisy), "t1": torch.from_numpy(t1), "t2": torch.from_numpy(t2)}


def dictionary_hash(dictionary: Dictionary) -> str:
    """SHA-256 of the atoms, their (T1, T2, B1) and the sequence (the card's training_data_hash)."""
    h = hashlib.sha256()
    for x in (dictionary.atoms, dictionary.t1, dictionary.t2, dictionary.b1):
        h.update(np.ascontiguousarray(x.detach().cpu().numpy()).tobytes())
    h.update(repr(sorted(dictionary.sequence.to_dict().items())).encode())
    return h.hexdigest()


def train(dictionary: Dictionary | str, params: dict | None, out_path: str, seed: int, *,
          on_epoch_end=None, progress: bool = True):
    """Train DRONE on ``dictionary`` (a :class:`Dictionary` or its HDF5 path) through
    :func:`mrichain.train.fit`; returns its ``FitResult``.

    params: overrides of :data:`DEFAULTS` (``noise_snr_range: [lo, hi]`` in dB). Writes
    ``out_path`` (state dict, with the log standardisation as buffers), the card JSON beside it
    (architecture, hyper-parameters, noise model, training-data hash), curve TSV/PNG, checkpoint.
    """
    from mrichain.train import fit, seed_everything

    settings, rest = split_params(params, DEFAULTS, seed, name="mrf.drone")
    if rest["threads"]:
        torch.set_num_threads(int(rest["threads"]))
    if not isinstance(dictionary, Dictionary):
        dictionary = load_dictionary(dictionary)
    lo, hi = (float(v) for v in rest["noise_snr_range"])
    if not lo <= hi:
        raise ValueError(f"noise_snr_range: low {lo} is above high {hi}")
    n_t = dictionary.atoms.shape[1]
    hp = {"n_timepoints": int(n_t), "hidden": int(rest["hidden"])}
    logs = torch.stack([dictionary.t1.double().log(), dictionary.t2.double().log()], dim=1)
    mean, std = logs.mean(0), logs.std(0).clamp_min(1e-6)
    targets = ((logs - mean) / std).float()
    collate = _AtomCollate(dictionary.atoms, targets, (lo, hi))
    val = validation_set(dictionary, int(rest["n_val"]), 0.5 * (lo + hi), seed)
    card = {
        "architecture": "DRONE (Cohen et al. 2018): fully connected, 2 hidden layers, ReLU",
        "method": "drone",
        "stage": "mrf",
        "hyper_parameters": hp,
        "input": "sqrt(T) f / ||f||, (real, imag) interleaved per time point",
        "output": "standardised log T1, log T2 (ms); mean/std in the state dict buffers",
        "loss": "MSE on the standardised logs",
        "noise_levels": {"snr_range_db": [lo, hi], "distribution": "uniform in dB, one draw per item",
                         "snr_definition": "RMS noise-free fingerprint / RMS complex noise"},
        "validation": {"n": int(rest["n_val"]), "snr_db": 0.5 * (lo + hi), "points": "off-grid, log-uniform"},
        "training_data_hash": dictionary_hash(dictionary),
        "dictionary": {"atoms": len(dictionary), "grid": dictionary.grid.to_dict(),
                       "quantisation_error": dictionary.grid.quantisation_error(),
                       "sequence": dictionary.sequence.to_dict(), "n_states": dictionary.n_states},
    }
    seed_everything(seed)
    model = build(hp)
    model.log_mean.copy_(mean.float())
    model.log_std.copy_(std.float())
    return fit(model, list(range(len(dictionary))), val, loss_fn=loss_fn, score_fn=score_fn, settings=settings,
               out_path=out_path, card=card, score_name="neg_mape", collate_fn=collate,
               on_epoch_end=on_epoch_end, progress=progress)


def load_model(model: str, device="cpu") -> tuple[Drone, dict]:
    """The trained net (eval mode, on ``device``) and its card, from ``model`` (.pt) + its .json.
    The card's hyper-parameters are checked against the method's declared params
    (:func:`mrichain.train.params.check_hyper_parameters`) before the network is built."""
    from pathlib import Path

    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    defaults = {"n_timepoints": 1, "hidden": DEFAULTS["hidden"]}
    card = Path(model).with_suffix(".json")
    return load_trained(model, lambda hp: build(check_hyper_parameters(
        card, hp, "mrf", "drone", defaults, extra={"n_timepoints": {"type": "integer", "minimum": 1, "maximum": 10_000}},
        required=("n_timepoints", "hidden"))), device)


@torch.no_grad()
def predict(model: Drone, fingerprints: torch.Tensor, dictionary: Dictionary | None = None, *,
            batch_size: int = 65536) -> dict[str, torch.Tensor]:
    """T1, T2 (ms) of every fingerprint [n_voxels, T] (complex), float32 [n_voxels] each, and with
    ``dictionary``, PD from the nearest atom of the prediction (module docstring) and its index."""
    device = next(model.parameters()).device
    parts: dict[str, list] = {"t1": [], "t2": [], "pd": [], "index": []}
    for s in range(0, fingerprints.shape[0], batch_size):
        f = fingerprints[s:s + batch_size]
        t1, t2 = model.to_ms(model(network_input(f.to(device))))
        parts["t1"].append(t1.float().cpu())
        parts["t2"].append(t2.float().cpu())
        if dictionary is not None:
            idx = dictionary.nearest(parts["t1"][-1], parts["t2"][-1])
            ip = (dictionary.atoms[idx].conj() * f.cpu().to(dictionary.atoms.dtype)).sum(dim=1).abs()
            parts["pd"].append((ip / dictionary.norms[idx]).float())
            parts["index"].append(idx)
    return {k: torch.cat(v) for k, v in parts.items() if v}
