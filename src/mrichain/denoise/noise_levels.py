"""Noise-level-blind training inputs: the noise-free target re-acquired at an SNR drawn per item.

A lab's scans are not at the cohort's SNR. With ``noise_snr_range: [lo, hi]`` (a DnCNN training
param, :mod:`mrichain.denoise.dncnn`) every training item's input is synthesised afresh from its
noise-free target at an SNR drawn for that item, as DnCNN-B is trained over a range of noise SDs.

SNR is the acquisition's (:func:`mrichain.simulate.acquire.simulate_acquisition`): the mean
noise-free signal inside the brain mask of the *volume* divided by sigma, the SD of the complex
Gaussian noise per real channel of each coil (unitless; the config's ``acquire.snr``, 30 by default).

Decisions (and why):

- *Synthesised from the target, not noise added to the cohort's noisy input.* Adding noise to a
  magnitude image that already carries noise at the cohort's SNR cannot reach an SNR above the
  cohort's, and Gaussian noise added to a magnitude is not what a scanner produces at a lower SNR.
- *The acquisition's statistics, exactly.* A fully sampled acquisition is the root-sum-of-squares
  of ``n_coils`` coil images ``S_c m + n_c`` with sum_c |S_c|^2 = 1 and white complex noise of SD
  sigma per real channel (orthonormal FFT). Per voxel that is sigma times a noncentral chi with
  ``2 n_coils`` degrees of freedom and noncentrality ``m / sigma``, whatever the sensitivities:
  ``sqrt((m + sigma a)^2 + sigma^2 (b^2 + chi2_{2 n_coils - 2}))`` with a, b ~ N(0, 1). One coil
  gives Rician noise. So no coil maps are needed, only the coil count, and the synthetic input has
  the brain's bias and the background's noise floor that the real input has.
- *Log-uniform SNR.* The PSNR of the input moves with 20 log10(SNR), so each octave of SNR gets the
  same share of the items. Uniform in SNR would put most items near ``hi`` (over [15, 50], 70 %
  above 25); uniform in noise SD (DnCNN-B's choice) half of them below the range's harmonic middle.
- *Normalised as at inference.* The DnCNN divides its input by the input volume's 99th percentile;
  the synthetic slice is divided by the 99th percentile of the *volume* at the drawn SNR, estimated
  on a fixed strided subsample of its voxels (re-noised per item), so noise shifts that percentile
  in training as it does at inference. The target is divided by the same factor.
- *Randomness.* Each item's draws come from a NumPy generator seeded by one integer drawn from
  torch's global generator, which the training engine seeds per epoch from (config seed, epoch),
  as the flips are: same seed, same noise; a resumed run draws what an uninterrupted one would.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mrichain.slices import SliceDataset, pad2d, percentile_scale

#: The DAG config key of the parameter, named in errors.
KEY = "denoise.params.dncnn.noise_snr_range"

#: Voxels of a volume on which the 99th-percentile scale of a synthetic volume is estimated.
SCALE_VOXELS = 20000


def check_snr_range(value, key: str = KEY) -> tuple[float, float] | None:
    """``value`` as ``(lo, hi)`` floats, or None when off (None).

    Raises ValueError naming ``key`` unless it is two finite numbers with 0 < lo < hi.
    """
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"config key '{key}': {value!r} must be two SNRs [lo, hi] (or null for off)") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"config key '{key}': {value!r} needs 0 < lo < hi (SNR = mean brain signal / noise SD)")
    return lo, hi


def draw_snr(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One SNR drawn log-uniformly from [lo, hi]."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def coil_magnitude(clean: np.ndarray, sigma: float, n_coils: int, rng: np.random.Generator) -> np.ndarray:
    """The RSS magnitude of ``n_coils`` noisy coil images of ``clean`` (any shape, float).

    sigma: noise SD per real channel per coil, in ``clean``'s units. Returns float32, same shape:
    sigma x noncentral chi (2 ``n_coils`` dof, noncentrality ``clean / sigma``); Rician for one coil.
    """
    m = np.asarray(clean, dtype=np.float64)
    a = rng.standard_normal(m.shape)
    b = rng.standard_normal(m.shape)
    rest = rng.chisquare(2 * n_coils - 2, m.shape) if n_coils > 1 else 0.0
    return np.sqrt((m + sigma * a) ** 2 + sigma**2 * (b**2 + rest)).astype(np.float32)


def _torch_seed() -> int:
    """One integer from torch's global generator (seeded per epoch by the training engine)."""
    return int(torch.randint(0, 2**62, (1,)).item())


class NoiseLevelSlices(SliceDataset):
    """Axial training slices whose input is the target re-acquired at an SNR drawn per item.

    items: manifest dicts with ``target`` (noise-free) and ``mask`` (brain) NIfTI paths; the
    cohort's noisy ``input`` is not read. load_fn(item) -> ``{"target": [X, Y, Z] float in the
    scanner's units, "mask": [X, Y, Z] 0/1}``. A sample is ``{"input", "target", "mask": [1, H, W]
    float32, "snr": 0-d float32}``, input and target divided by the synthetic volume's 99th
    percentile (module docstring); flips as :class:`~mrichain.slices.SliceDataset`.
    snr_range: (lo, hi), see :func:`check_snr_range`; n_coils: coils of the RSS (1 = Rician).
    """

    def __init__(self, items, load_fn, *, snr_range: Sequence[float], n_coils: int,
                 flip_axes: Sequence[int] = ()):
        super().__init__(items, load_fn, mask_key="mask", flip_axes=flip_axes)
        self.snr_range = check_snr_range(snr_range)
        if self.snr_range is None:
            raise ValueError("NoiseLevelSlices needs an SNR range")
        self.n_coils = int(n_coils)
        if self.n_coils < 1:
            raise ValueError(f"config key 'denoise.params.dncnn.noise_coils': {n_coils} must be >= 1")
        self.brain_mean, self.subsample = [], []
        for vol in self.volumes:
            t, brain = vol["target"], vol["mask"] > 0
            self.brain_mean.append(float(t[brain].mean()) if brain.any() else float(t.mean()))
            step = max(1, t.size // SCALE_VOXELS)
            self.subsample.append(np.ascontiguousarray(t.reshape(-1)[::step]))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        vi, z = self.index[i]
        vol = self.volumes[vi]
        rng = np.random.default_rng(_torch_seed())
        snr = draw_snr(rng, *self.snr_range)
        sigma = self.brain_mean[vi] / snr
        scale = percentile_scale(coil_magnitude(self.subsample[vi], sigma, self.n_coils, rng))
        arrays = {"input": coil_magnitude(vol["target"][:, :, z], sigma, self.n_coils, rng) / scale,
                  "target": vol["target"][:, :, z] / scale, "mask": vol["mask"][:, :, z]}
        sample = {k: torch.from_numpy(pad2d(np.asarray(a, dtype=np.float32), self.shape)[None].copy())
                  for k, a in arrays.items()}
        sample = self.flip(sample)
        sample["snr"] = torch.tensor(snr, dtype=torch.float32)
        return sample


def trained_snr_range(card: dict) -> tuple[float, float] | None:
    """The SNR range a DnCNN card says the model was trained over; None for a cohort-SNR model."""
    levels = card.get("noise_levels")
    return None if not levels else (float(levels["snr_range"][0]), float(levels["snr_range"][1]))
