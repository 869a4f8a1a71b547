"""DRONE: a fully connected network from MR fingerprints to T1 and T2 (Cohen, Zhu & Rosen,
"MR fingerprinting deep reconstruction network (DRONE)", MRM 80:885, 2018), on the dictionary's
SVD-compressed fingerprints.

Architecture (as published): input layer, two hidden layers of ``hidden`` = 300 units, an output
layer of 2 (T1, T2). The paper's EPI-MRF input was 25 magnitudes; here the input is the
fingerprint's rank-``r`` projection, 2r values (r = 25 by default: 50 inputs).

- Input (:func:`project`, :func:`network_input`): the fingerprint ``f`` [T] projected onto the
  dictionary's SVD basis ``V_r`` [T, r] (:func:`mrichain.mrf.dictionary.compress`), ``c = f V_r``,
  the same matrix product SVD matching computes (:func:`mrichain.mrf.matching.match`,
  ``compressed=True``); then ``sqrt(r) c / ||c||``, real and imaginary parts of each coefficient
  side by side (2r values of order 1). Dividing by the norm removes PD (the scale) as matching's
  normalised inner product does; the complex parts keep the sign of the inversion-recovery
  signal, which the magnitude (the paper's EPI-MRF) folds over. Why the projection: in real
  multiply-adds per voxel, full matching costs 4 x n_atoms x T and a network on the full
  fingerprint 2T x hidden + hidden^2 (0.69 M for T = 1,000), which caps the speed-up near
  n_atoms / 170 (about 115x at 20k atoms); the projection (4 x T x r) plus this network cost about
  0.21 M, so the cap moves near n_atoms / 51 (about 390x at 20k atoms). The rank is the
  dictionary's (``mrf.dictionary.svd_rank``), and a network only means something with the basis
  it was trained on: its SHA-256 (:func:`basis_hash`) is a buffer of the state dict and on the
  card, and :func:`predict` refuses another basis (:class:`BasisMismatchError`). The simulated
  fingerprints share the dictionary's receiver phase (no B0 or coil phase in the simulation);
  real data would need a global phase correction first.
- Output: log T1 and log T2, standardised by the mean and SD of the training atoms' log values
  (stored as buffers, so the state dict carries them). T1 and T2 span two to three decades and
  are scored by relative error; a squared error on the log is a relative error of every
  magnitude alike, where a squared error in ms would be dominated by CSF.
- Training: the dictionary's projected atoms with complex Gaussian noise added per item at an SNR
  drawn uniformly in dB from ``noise_snr_range`` (SNR as in :mod:`mrichain.mrf.fingerprints`: RMS
  signal / RMS noise; a unit atom's RMS is 1/sqrt(T)), MSE on the standardised logs, through the
  shared engine :func:`mrichain.train.fit` (checkpoints, resume, card). The noise is drawn in the
  r-dimensional space (:func:`noisy_coefficients`): white noise of SD ``s`` per time point,
  projected onto the orthonormal columns of ``V_r``, is white noise of SD ``s`` per coefficient,
  so the training items have the distribution of projected noisy fingerprints at r / T of the
  cost. It is drawn in the batch's collate function from torch's generator, which the engine
  seeds per epoch: a resumed run draws what an uninterrupted one would.
- Recipe: Adam as in the paper (AdamW without weight decay), lr 3e-3 decayed by a cosine over the
  planned steps, batch 64, 100 epochs. The paper trained 10-74 minutes on ~80k atoms on a GPU; the
  default dictionary here has 3k atoms, so an epoch is 48 steps and the budget is 4,800 steps
  (about half a minute on one CPU core with the 50-value input). The noise is redrawn every
  epoch, so at a constant lr the estimates keep jittering at the gradient-noise floor; the decay
  lets the last epochs settle, and with it the last epoch is the best one on validation rather
  than a lucky one. A few hundred steps (30 epochs of 256) leave the network far from converged.
- Validation: ``n_val`` (T1, T2) pairs drawn log-uniformly *between* the grid's points (T2 < T1),
  simulated with the EPG, noise on the full fingerprint at the middle of the SNR range, then
  projected (the path a measured fingerprint takes); the score is ``-(T1 MAPE + T2 MAPE) / 2``
  (higher is better).
- PD: a network gives no scale, so PD is the scale of the fingerprint against the *nearest
  dictionary atom* of the predicted (T1, T2) (:meth:`~mrichain.mrf.dictionary.Dictionary.nearest`:
  log-grid rounding, O(1) per voxel), in the subspace as SVD matching computes it:
  ``|<c_j, f V_r>| / (norm_j cnorm_j)`` (r multiply-adds), not a fresh EPG simulation of the
  predicted values (1000 EPG steps per voxel would cost more than matching).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from mrichain import UserError
from mrichain.mrf.dictionary import Dictionary, load_dictionary
from mrichain.mrf.epg import simulate_fisp
from mrichain.train.params import split_params

#: Training parameters and their defaults (loop settings go to ``TrainSettings``, the rest to the card).
DEFAULTS: dict = {
    "epochs": 100,
    "batch_size": 64,
    "lr": 3e-3,
    "weight_decay": 0.0,
    "patience": 25,
    "max_batches_per_epoch": None,
    "device": "auto",
    "amp": False,  # small dense layers: AMP saves nothing and costs precision on the log targets
    "grad_clip": 1.0,
    "schedule": "cosine",  # per optimiser step over the planned steps (module docstring)
    "hidden": 300,
    "noise_snr_range": [20.0, 50.0],  # dB, uniform per training item
    "n_val": 1000,
    "threads": None,
}


class BasisMismatchError(UserError, ValueError):
    """A DRONE network applied with an SVD basis other than the one it was trained on."""


def basis_hash(basis: torch.Tensor) -> str:
    """SHA-256 (hex) of an SVD basis [T, r]: its shape and its complex64 values."""
    b = np.ascontiguousarray(basis.detach().cpu().to(torch.complex64).numpy())
    h = hashlib.sha256(repr(tuple(b.shape)).encode())
    h.update(b.tobytes())
    return h.hexdigest()


class Drone(nn.Module):
    """[B, 2r] (normalised projected fingerprint, :func:`network_input`) -> [B, 2] standardised
    (log T1, log T2). Buffers: the log standardisation and the SHA-256 of the training basis."""

    def __init__(self, rank: int, hidden: int = 300):
        super().__init__()
        self.rank = int(rank)
        self.net = nn.Sequential(
            nn.Linear(2 * self.rank, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2),
        )
        self.register_buffer("log_mean", torch.zeros(2))
        self.register_buffer("log_std", torch.ones(2))
        self.register_buffer("basis_sha256", torch.zeros(32, dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def basis_hash(self) -> str:
        """Hex SHA-256 of the basis the network was trained on (:func:`basis_hash`)."""
        return bytes(self.basis_sha256.cpu().tolist()).hex()

    def set_basis(self, basis: torch.Tensor) -> None:
        self.basis_sha256.copy_(torch.tensor(list(bytes.fromhex(basis_hash(basis))), dtype=torch.uint8))

    def to_ms(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output [B, 2] -> (T1, T2) in ms, [B] each."""
        logs = out * self.log_std + self.log_mean
        return torch.exp(logs[:, 0]), torch.exp(logs[:, 1])


def build(hyper_parameters: dict) -> Drone:
    return Drone(int(hyper_parameters["rank"]), int(hyper_parameters["hidden"]))


def project(fingerprints: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Complex [n, T] -> complex [n, r]: ``f V_r``, the fingerprints' coefficients in the
    dictionary's SVD basis (``basis`` [T, r]; SVD matching's projection), in the basis's dtype."""
    return fingerprints.to(basis.dtype) @ basis


def network_input(coefficients: torch.Tensor) -> torch.Tensor:
    """Complex [n, r] -> float32 [n, 2r]: ``sqrt(r) c / ||c||``, real and imaginary part of each
    coefficient side by side (a zero-copy view of the complex tensor, then one scaling pass)."""
    rank = coefficients.shape[-1]
    return _normalise(torch.view_as_real(coefficients.to(torch.complex64)).reshape(coefficients.shape[0], 2 * rank))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Interleaved coefficients [n, 2r] -> ``sqrt(r) x / ||x||``."""
    return x * (np.sqrt(x.shape[1] / 2) / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-30))


def _sigma(snr_db: torch.Tensor, n_timepoints: int) -> torch.Tensor:
    """SD of each real part of the complex noise at ``snr_db`` [n] for a unit atom of T points, [n, 1]."""
    return (10.0 ** (-snr_db.double() / 20.0) / np.sqrt(n_timepoints) / np.sqrt(2.0)).float()[:, None]


def _complex_noise(shape, sigma: torch.Tensor, generator, device) -> torch.Tensor:
    re = torch.randn(shape, generator=generator, device=device)
    im = torch.randn(shape, generator=generator, device=device)
    return torch.complex(re * sigma, im * sigma)


def noisy_atoms(atoms: torch.Tensor, snr_db: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit-norm atoms [n, T] plus complex noise of RMS ``10^(-snr/20) / sqrt(T)`` per item
    (``snr_db`` [n]); draws from torch's default generator unless ``generator`` is given."""
    return atoms + _complex_noise(atoms.shape, _sigma(snr_db, atoms.shape[-1]), generator, atoms.device)


def noisy_coefficients(coefficients: torch.Tensor, snr_db: torch.Tensor, n_timepoints: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected unit atoms ``a V_r`` [n, r] plus the projection of :func:`noisy_atoms`'s noise:
    complex white noise of the same SD per coefficient as per time point (``V_r`` has orthonormal
    columns), so the result is distributed as ``noisy_atoms(a) V_r`` without the T-length draw."""
    return coefficients + _complex_noise(coefficients.shape, _sigma(snr_db, n_timepoints), generator,
                                         coefficients.device)


class _AtomCollate:
    """Collate function: atom indices -> {"input": noisy network input, "target": standardised logs}."""

    def __init__(self, coefficients, n_timepoints, targets, snr_range):
        self.coefficients, self.n_timepoints = coefficients, n_timepoints
        self.targets, self.snr_range = targets, snr_range

    def __call__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.int64)
        lo, hi = self.snr_range
        snr = lo + (hi - lo) * torch.rand(idx.numel(), dtype=torch.float64)
        noisy = noisy_coefficients(self.coefficients[idx], snr, self.n_timepoints)
        return {"input": network_input(noisy), "target": self.targets[idx]}


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


def _require_basis(dictionary: Dictionary) -> torch.Tensor:
    if dictionary.basis is None:
        raise ValueError("DRONE reads the dictionary's SVD projection, and this dictionary has no SVD basis "
                         "(mrichain.mrf.dictionary.compress; config mrf.dictionary.svd_rank)")
    return dictionary.basis


def validation_set(dictionary: Dictionary, n: int, snr_db: float, seed: int) -> dict:
    """``n`` off-grid (T1, T2) pairs (log-uniform in the grid's ranges, T2 < T1), their noisy EPG
    fingerprints projected onto the dictionary's basis as network input [n, 2r], and the true
    values (float64 [n])."""
    basis = _require_basis(dictionary)
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
    return {"input": network_input(project(noisy, basis)), "t1": torch.from_numpy(t1), "t2": torch.from_numpy(t2)}


def dictionary_hash(dictionary: Dictionary) -> str:
    """SHA-256 of the atoms, their (T1, T2, B1), the SVD basis (if any) and the sequence (the
    card's training_data_hash)."""
    h = hashlib.sha256()
    for x in (dictionary.atoms, dictionary.t1, dictionary.t2, dictionary.b1):
        h.update(np.ascontiguousarray(x.detach().cpu().numpy()).tobytes())
    if dictionary.basis is not None:
        h.update(basis_hash(dictionary.basis).encode())
    h.update(repr(sorted(dictionary.sequence.to_dict().items())).encode())
    return h.hexdigest()


def train(manifest: dict, params: dict | None, out_path: str, seed: int, *,
          on_epoch_end=None, progress: bool = True):
    """Train DRONE on the dictionary of ``manifest`` through :func:`mrichain.train.fit`; returns
    its ``FitResult``.

    manifest: ``{"dictionary": path}``, the HDF5 file of rule ``mrf_dictionary`` (the training
    manifest of rule ``train``, :meth:`mrichain.plan.manifests.Plan.train_manifest`), or a loaded
    :class:`Dictionary` in its place; it needs an SVD basis. params: overrides of
    :data:`DEFAULTS` (``noise_snr_range: [lo, hi]`` in dB). Writes
    ``out_path`` (state dict, with the log standardisation and the basis hash as buffers), the
    card JSON beside it (architecture, hyper-parameters, basis rank and hash, noise model,
    training-data hash), curve TSV/PNG, checkpoint.
    """
    from mrichain.train import fit, seed_everything

    settings, rest = split_params(params, DEFAULTS, seed, name="mrf.drone")
    if rest["threads"]:
        torch.set_num_threads(int(rest["threads"]))
    dictionary = manifest["dictionary"]
    if not isinstance(dictionary, Dictionary):
        dictionary = load_dictionary(dictionary)
    basis = _require_basis(dictionary)
    lo, hi = (float(v) for v in rest["noise_snr_range"])
    if not lo <= hi:
        raise ValueError(f"noise_snr_range: low {lo} is above high {hi}")
    n_t, rank = (int(v) for v in basis.shape)
    hp = {"rank": rank, "hidden": int(rest["hidden"])}
    logs = torch.stack([dictionary.t1.double().log(), dictionary.t2.double().log()], dim=1)
    mean, std = logs.mean(0), logs.std(0).clamp_min(1e-6)
    targets = ((logs - mean) / std).float()
    collate = _AtomCollate(project(dictionary.atoms, basis), n_t, targets, (lo, hi))
    val = validation_set(dictionary, int(rest["n_val"]), 0.5 * (lo + hi), seed)
    card = {
        "architecture": "DRONE (Cohen et al. 2018): fully connected, 2 hidden layers, ReLU, on the SVD projection",
        "method": "drone",
        "stage": "mrf",
        "hyper_parameters": hp,
        "input": "sqrt(r) c / ||c||, c = f V_r (the dictionary's rank-r SVD basis), (real, imag) interleaved "
                 "per coefficient: 2r values",
        "basis": {"rank": rank, "n_timepoints": n_t, "sha256": basis_hash(basis)},
        "output": "standardised log T1, log T2 (ms); mean/std in the state dict buffers",
        "loss": "MSE on the standardised logs",
        "noise_levels": {"snr_range_db": [lo, hi], "distribution": "uniform in dB, one draw per item",
                         "snr_definition": "RMS noise-free fingerprint / RMS complex noise",
                         "drawn_in": "the rank-r subspace (white noise projected onto orthonormal V_r)"},
        "validation": {"n": int(rest["n_val"]), "snr_db": 0.5 * (lo + hi), "points": "off-grid, log-uniform",
                       "noise": "on the full fingerprint, then projected"},
        "training_data_hash": dictionary_hash(dictionary),
        "dictionary": {"atoms": len(dictionary), "grid": dictionary.grid.to_dict(),
                       "quantisation_error": dictionary.grid.quantisation_error(),
                       "sequence": dictionary.sequence.to_dict(), "n_states": dictionary.n_states},
    }
    seed_everything(seed)
    model = build(hp)
    model.log_mean.copy_(mean.float())
    model.log_std.copy_(std.float())
    model.set_basis(basis)
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

    defaults = {"rank": 1, "hidden": DEFAULTS["hidden"]}
    card = Path(model).with_suffix(".json")
    return load_trained(model, lambda hp: build(check_hyper_parameters(
        card, hp, "mrf", "drone", defaults, extra={"rank": {"type": "integer", "minimum": 1, "maximum": 10_000}},
        required=("rank", "hidden"))), device)


def check_basis(model: Drone, dictionary: Dictionary, where: str = "DRONE") -> None:
    """Raise :class:`BasisMismatchError` (``where`` names the model and the dictionary) unless
    ``dictionary``'s SVD basis is the one ``model`` was trained on (same rank and SHA-256)."""
    basis = _require_basis(dictionary)
    got, want = basis_hash(basis), model.basis_hash
    if got != want or int(basis.shape[1]) != model.rank:
        raise BasisMismatchError(
            f"{where}: the network was trained on the SVD basis {want[:16]} (rank {model.rank}) but the dictionary's "
            f"basis is {got[:16]} (rank {int(basis.shape[1])}); its input would be another projection: retrain "
            f"DRONE on this dictionary")


@torch.no_grad()
def predict(model: Drone, fingerprints: torch.Tensor, dictionary: Dictionary, *, batch_size: int = 65536,
            projected: bool = False) -> dict[str, torch.Tensor]:
    """T1, T2 (ms) of every fingerprint, PD from the nearest atom of the prediction (module
    docstring) and that atom's index: float32 [n_voxels] each (index int64).

    fingerprints: complex [n_voxels, T], or with ``projected`` their coefficients [n_voxels, r]
    already in the dictionary's basis (:func:`project`, e.g. shared with SVD matching).
    Refuses a dictionary whose basis is not the model's (:func:`check_basis`).
    """
    check_basis(model, dictionary)
    device = next(model.parameters()).device
    basis = dictionary.basis.to(device)
    comp, scale = dictionary.compressed, dictionary.norms * dictionary.compressed_norms
    parts: dict[str, list] = {"t1": [], "t2": [], "pd": [], "index": []}
    for s in range(0, fingerprints.shape[0], batch_size):
        f = fingerprints[s:s + batch_size].to(device)
        c = f.to(basis.dtype) if projected else project(f, basis)  # [n, r]
        t1, t2 = model.to_ms(model(network_input(c)))
        t1, t2 = t1.float().cpu(), t2.float().cpu()
        idx = dictionary.nearest(t1, t2)
        ip = (comp[idx].conj() * c.cpu()).sum(dim=1).abs()
        for key, value in (("t1", t1), ("t2", t2), ("pd", (ip / scale[idx]).float()), ("index", idx)):
            parts[key].append(value)
    return {k: torch.cat(v) for k, v in parts.items()}



def mapper(dictionary: Dictionary, *, model: str):
    """The ``drone`` method: the trained network ``model`` (.pt + card) loaded and its basis
    checked against ``dictionary``'s at once (:class:`BasisMismatchError` naming the model and the
    dictionary's file, before any fingerprint is simulated); returns fingerprints [n_voxels, T] ->
    :func:`predict`."""
    net = load_model(model)[0]
    check_basis(net, dictionary, where=f"{model} applied with {dictionary.source or 'this dictionary'}")
    return lambda fingerprints: predict(net, fingerprints, dictionary)
