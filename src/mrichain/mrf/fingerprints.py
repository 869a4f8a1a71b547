"""Per-voxel MR fingerprints of a simulated subject, from its ground truth.

A voxel holds a partial-volume mix of CSF, GM and WM (the subject's tissue probabilities
``probs``). As :func:`mrichain.simulate.signal.noise_free_image` does for images, the voxel's
fingerprint mixes the tissue *signals*, not the parameters::

    s_v(t) = sum_k p_k(v) PD_k  f(T1_k, T2_k, B1_v; t)      k in (CSF, GM, WM)

with ``f`` the EPG fingerprint (:func:`mrichain.mrf.epg.simulate_fisp`, PD 1) and the subject's
own tissue values (``Subject.tissue_params``). A single-compartment fit of such a mix is not the
probability-weighted mean of the parameters that the T1/T2 maps hold, so partial-volume voxels
carry an error no method can remove (score pure voxels to see past it:
:func:`mrichain.mrf.scores.tissue_masks`). The receive bias field is not applied (the maps of MRF
are scored on T1 and T2; PD is then relative to the tissue PD values).

B1 (optional): a smooth transmit field ``B1_v`` in [1 - a, 1 + a] (``b1_amplitude`` a, drawn like
the bias field, :func:`mrichain.simulate.bias.bias_field`, from the subject's ``mrf_b1`` stream).

Noise: complex white Gaussian noise, independent per voxel and time point, E|n|^2 = sigma^2
(sigma / sqrt(2) per real channel), with

    SNR_dB = 20 log10( mean_v ||s_v|| / sqrt(T) / sigma )

i.e. the RMS (over time) of the noise-free fingerprint, averaged over the voxels, over the RMS of
the noise. Drawn from the subject's ``mrf_noise`` stream (:func:`mrichain.simulate.cohort.make_rng`
with the config seed and the subject index): the same seed gives byte-identical fingerprints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrichain.mrf.epg import DEFAULT_STATES, simulate_fisp
from mrichain.mrf.sequence import FispSequence
from mrichain.simulate.tissue import TISSUES


@dataclass
class Fingerprints:
    """Fingerprints of the voxels of one subject.

    signals: complex64 [n_voxels, T]; index: int64 [n_voxels, 3] voxel coordinates (x, y, z) in
    ``shape``; affine: the subject's 4x4; sigma: the complex noise SD (0 without noise); snr_db;
    truth: float32 [n_voxels] arrays ``T1``, ``T2`` (ms), ``PD`` (the ground-truth maps), ``B1``,
    and ``labels`` (uint8, 1 CSF, 2 GM, 3 WM) and ``probs`` ([n_voxels, 4]) of the voxels.
    """

    signals: torch.Tensor
    index: np.ndarray
    shape: tuple[int, int, int]
    affine: np.ndarray
    sigma: float
    snr_db: float | None
    truth: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.signals.shape[0])

    @property
    def slices(self) -> np.ndarray:
        """The axial slices (z indices) the voxels lie in."""
        return np.unique(self.index[:, 2])

    def volume(self, values) -> np.ndarray:
        """Per-voxel ``values`` [n_voxels] placed in a float32 [X, Y, Z] volume (0 elsewhere)."""
        out = np.zeros(self.shape, np.float32)
        v = np.asarray(torch.as_tensor(values).detach().cpu(), np.float32).reshape(-1)
        out[tuple(self.index.T)] = v
        return out


def tissue_fingerprints(sequence: FispSequence, tissue_params: dict, b1=None, *,
                        n_states: int = DEFAULT_STATES) -> torch.Tensor:
    """PD-weighted fingerprints ``PD_k f(T1_k, T2_k, B1)`` of CSF, GM, WM: complex64 [3, T], or
    [n, 3, T] for ``b1`` [n] (one B1 per voxel)."""
    names = TISSUES[1:]
    t1 = torch.tensor([float(tissue_params[k]["T1"]) for k in names], dtype=torch.float64)
    t2 = torch.tensor([float(tissue_params[k]["T2"]) for k in names], dtype=torch.float64)
    pd = torch.tensor([float(tissue_params[k]["PD"]) for k in names], dtype=torch.float32)
    if b1 is None:
        return simulate_fisp(sequence, t1, t2, n_states=n_states) * pd[:, None]
    b1 = torch.as_tensor(np.asarray(b1, np.float64)).reshape(-1)
    n = b1.numel()
    sig = simulate_fisp(sequence, t1.repeat(n), t2.repeat(n), b1.repeat_interleave(3), n_states=n_states)
    return sig.reshape(n, 3, -1) * pd[None, :, None]


def add_noise(signals: torch.Tensor, snr_db: float | None, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """``signals`` [n, T] plus complex Gaussian noise at ``snr_db`` (module docstring); returns
    (noisy complex64 [n, T], sigma). ``snr_db`` None: no noise (sigma 0)."""
    if snr_db is None:
        return signals.to(torch.complex64), 0.0
    n_t = signals.shape[-1]
    rms = float(torch.linalg.vector_norm(signals, dim=-1).mean()) / np.sqrt(n_t)
    sigma = rms / 10.0 ** (float(snr_db) / 20.0)
    noise = rng.standard_normal((2, *signals.shape), dtype=np.float32) * np.float32(sigma / np.sqrt(2.0))
    noisy = signals.to(torch.complex64) + torch.complex(torch.from_numpy(noise[0]), torch.from_numpy(noise[1]))
    return noisy, sigma


def subject_fingerprints(gt, sequence: FispSequence, *, seed: int, snr_db: float | None,
                         slices=None, b1_amplitude: float = 0.0, b1_smoothness_mm: float = 60.0,
                         n_states: int = DEFAULT_STATES) -> Fingerprints:
    """Fingerprints of the brain voxels of one subject (see the module docstring).

    gt: a :class:`~mrichain.simulate.cohort.Subject` or its ground-truth folder
    (results/groundtruth/sub-XXX); seed: the config seed (noise and B1 streams are
    (seed, subject index, purpose)); snr_db: None for noise-free; slices: axial (z) indices to keep
    (None: all); b1_amplitude: 0 for B1 = 1, else the largest deviation of the smooth B1 field.
    """
    from mrichain.simulate.bias import bias_field
    from mrichain.simulate.cohort import Subject, make_rng, read_subject, subject_index

    subj = gt if isinstance(gt, Subject) else read_subject(Path(gt))
    idx = subject_index(subj.sub_id)
    keep = subj.brain_mask > 0
    if slices is not None:
        zsel = np.zeros(keep.shape[2], bool)
        zsel[np.asarray(list(slices), int)] = True
        keep &= zsel[None, None, :]
    index = np.argwhere(keep)  # [n, 3], C order: the same voxel order for every caller
    sel = tuple(index.T)
    probs = subj.probs[(slice(None),) + sel].T.astype(np.float32)  # [n, 4]
    b1 = None
    if b1_amplitude and b1_amplitude > 0:
        field_ = bias_field(keep.shape, subj.affine, float(b1_amplitude), float(b1_smoothness_mm),
                            make_rng(seed, idx, "mrf_b1"))
        b1 = field_[sel].astype(np.float64)
    tissue = tissue_fingerprints(sequence, subj.tissue_params, b1, n_states=n_states)
    w = torch.from_numpy(probs[:, 1:]).to(torch.complex64)  # [n, 3]
    clean = w @ tissue if tissue.dim() == 2 else torch.einsum("nk,nkt->nt", w, tissue)
    signals, sigma = add_noise(clean, snr_db, make_rng(seed, idx, "mrf_noise"))
    truth = {"T1": subj.t1map[sel].astype(np.float32), "T2": subj.t2map[sel].astype(np.float32),
             "PD": subj.pdmap[sel].astype(np.float32), "labels": subj.labels[sel].astype(np.uint8),
             "probs": probs, "B1": (np.ones(len(index), np.float32) if b1 is None else b1.astype(np.float32))}
    return Fingerprints(signals, index.astype(np.int64), tuple(int(s) for s in keep.shape),
                        np.asarray(subj.affine), float(sigma), None if snr_db is None else float(snr_db), truth)
