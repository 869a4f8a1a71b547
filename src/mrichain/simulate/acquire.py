"""Simulated multi-coil Cartesian acquisition in the fastMRI HDF5 layout.

Layout: the subject image [X, Y, Z] is acquired as axial slices; k-space is [Z, C, X, Y] =
[slices, coils, H, W] with H = X (read-out, fully sampled) and W = Y (phase encode, masked), so the
fastMRI ``affine`` attribute (H index, W index, slice index) -> RAS mm is the subject affine itself.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from mrichain import UserError
from mrichain.fft import ifft2c, rss
from mrichain.io import KSpaceFile, load_image, read_kspace
from mrichain.simulate.coils import sensitivity_maps
from mrichain.simulate.cohort import make_rng, read_subject, subject_index
from mrichain.simulate.motion import coil_kspace, corrupt_kspace, subject_trajectory
from mrichain.simulate.sampling import cartesian_mask, measured_acceleration, num_low_frequencies
from mrichain.simulate.signal import ACQUISITION, noise_free_image


def simulate_acquisition(
    gt_dir: Path, sub_id: str, cfg: dict, acceleration: float, center_fraction: float,
    motion_level: str | None = None,
) -> tuple[KSpaceFile, nib.Nifti1Image]:
    """Simulate the k-space of subject ``sub_id`` from its ground truth folder ``gt_dir``.

    Returns (k-space file content, noise-free image). The noise-free magnitude image m [X, Y, Z]
    (:func:`~mrichain.simulate.signal.noise_free_image`) is multiplied by the coil sensitivities,
    Fourier transformed per axial slice (orthonormal centred 2-D FFT over (X, Y)), and complex
    Gaussian noise of standard deviation sigma per real channel is added, with
    sigma = mean(m in the brain mask) / cfg['acquire']['snr']. Because the sensitivities satisfy
    sum_c |S_c|^2 = 1, the RSS of the noise-free coil images is m, and the noise std per channel
    equals sigma in image space too. The noise depends on (seed, subject) only, so every
    acceleration of a subject shares one fully sampled measurement; the mask is seeded by
    (seed, subject, acceleration).

    motion_level: a level of ``cfg['acquire']['motion']['levels']``: the head moves during the
    scan along the subject's trajectory at that level (:func:`mrichain.simulate.motion.subject_trajectory`,
    the same for every acceleration of the subject, like the noise), recorded in the file
    (``motion_shot``, ``motion_poses``); the noise-free image stays the still head (the truth).
    None: a still head (the k-space of a level whose trajectory is still is the same bytes).

    KSpaceFile: kspace complex64 [Z, C, X, Y] with unsampled lines zeroed; mask float32 [Y];
    reconstruction_rss float32 [Z, X, Y] (RSS of the fully sampled noisy k-space); affine = subject
    affine; attrs as documented in :mod:`mrichain.io` plus snr, sigma, contrast and sequence
    parameters. The noise-free image is returned as float32 NIfTI with the subject affine.
    """
    gt_dir = Path(gt_dir)
    acq = cfg["acquire"]
    contrast = acq["contrast"]
    seq = dict(acq["sequence"][contrast])
    subj = read_subject(gt_dir, sub_id)
    image = noise_free_image(subj, contrast, seq).astype(np.float64)  # [X, Y, Z]
    brain = subj.brain_mask > 0
    sigma = float(image[brain].mean() / float(acq["snr"]))

    n_coils = int(acq["n_coils"])
    sens = sensitivity_maps(image.shape, n_coils, subj.affine)  # [C, X, Y, Z]
    seed, idx = int(cfg["seed"]), subject_index(sub_id)
    width = image.shape[1]
    mask_seed = int(np.random.SeedSequence([seed, idx, 7, int(round(float(acceleration) * 1000))]).generate_state(1)[0])
    mask = cartesian_mask(width, float(acceleration), float(center_fraction), acq["mask"], mask_seed)
    trajectory = None
    if motion_level is not None:
        try:
            trajectory = subject_trajectory(cfg, sub_id, motion_level, width, acquired=mask > 0)
        except ValueError as exc:  # a level or shot count this acquisition cannot have: the config's
            raise UserError(f"config key 'acquire.motion' at acceleration {float(acceleration):g}: {exc}") from exc
        voxel_mm = tuple(float(v) for v in nib.affines.voxel_sizes(np.asarray(subj.affine, np.float64)))
        kfull = corrupt_kspace(image, sens, trajectory, voxel_mm)  # [Z, C, X, Y]
    else:
        kfull = coil_kspace(image, sens)  # [Z, C, X, Y]

    rng = make_rng(seed, idx, "noise")
    noise = rng.standard_normal((2, *kfull.shape), dtype=np.float32)
    kfull += np.float32(sigma) * (noise[0] + 1j * noise[1])
    del noise
    target = rss(ifft2c(kfull)).astype(np.float32)  # [Z, X, Y]

    kspace = (kfull * mask[None, None, None, :]).astype(np.complex64)

    attrs = {
        "acquisition": ACQUISITION[contrast],
        "max": float(target.max()),
        "norm": float(np.linalg.norm(target)),
        "patient_id": sub_id,
        "acceleration": float(acceleration),
        "acceleration_measured": measured_acceleration(mask),
        "center_fraction": float(center_fraction),
        "num_low_frequency": num_low_frequencies(width, center_fraction),
        "mask_type": acq["mask"],
        "snr": float(acq["snr"]),
        "sigma": sigma,
        "n_coils": n_coils,
        "contrast": contrast,
        "seed": seed,
        **{k: float(v) for k, v in seq.items()},
    }
    if trajectory is not None:
        attrs.update({"motion_level": motion_level, "motion_ordering": acq["motion"]["ordering"]})
    kf = KSpaceFile(kspace=kspace, mask=mask.astype(np.float32), reconstruction_rss=target,
                    affine=np.array(subj.affine, np.float64), attrs=attrs,
                    motion_shot=None if trajectory is None else trajectory.shot,
                    motion_poses=None if trajectory is None else trajectory.poses)
    nf = nib.Nifti1Image(image.astype(np.float32), np.array(subj.affine, np.float64))
    nf.set_data_dtype(np.float32)
    return kf, nf


def measure_acquisition(h5_path, noisefree_path, brain_mask_path) -> dict:
    """Measure a k-space file's SNR and acceleration.

    SNR = mean noise-free signal in the brain / sigma_hat. sigma_hat comes from the background
    (voxels where the noise-free image is 0): there the fully sampled RSS of C coils is pure noise,
    |n|^2 summed over 2C real channels, so E[RSS^2] = 2 C sigma^2 exactly and
    sigma_hat = sqrt(mean(RSS^2) / (2C)) (Constantinides et al., MRM 38:852, 1997). Unlike the std
    of (RSS - noise-free) in the brain, this is unbiased at low local SNR (dark CSF in T1w, where
    the RSS is Rician/non-central chi). That residual estimate is returned too (``snr_residual``);
    it is used when no background voxel exists. acceleration = W / acquired lines.
    """
    kf = read_kspace(h5_path)
    nf = np.asarray(load_image(noisefree_path).dataobj, dtype=np.float64)  # [X, Y, Z]
    brain = np.asarray(load_image(brain_mask_path).dataobj) > 0
    target = kf.reconstruction_rss.astype(np.float64).transpose(1, 2, 0)  # [X, Y, Z]
    n_coils = kf.kspace.shape[1]
    signal = float(nf[brain].mean())
    resid = float((target - nf)[brain].std())
    bg = nf <= 1e-6 * nf.max()
    sigma_bg = float(np.sqrt(np.mean(target[bg] ** 2) / (2 * n_coils))) if bg.sum() > 100 else float("nan")
    mask = kf.mask if kf.mask is not None else (np.abs(kf.kspace).sum((0, 1, 2)) > 0).astype(np.float32)
    out = {
        "snr": signal / sigma_bg if np.isfinite(sigma_bg) else signal / resid,
        "snr_residual": signal / resid,
        "sigma": sigma_bg if np.isfinite(sigma_bg) else resid,
        "acceleration": measured_acceleration(mask),
        "acceleration_nominal": float(kf.attrs.get("acceleration", float("nan"))),
    }
    return out
