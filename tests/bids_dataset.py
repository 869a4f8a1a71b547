"""A small BIDS dataset of skull-on T1w images, written from simulated subjects (nothing downloaded).

Test data for :mod:`mrichain.realdata.structural`: it looks like what a lab hands over.

- Subjects come from the simulated cohort (:func:`mrichain.simulate.simulate_subject`: MNI152
  tissue template, atrophy, warp, per-subject T1/T2/PD), simulated at ``simulate_mm`` and written
  at ``voxel_mm`` (tissue probabilities resampled linearly, so partial volume stays continuous).
- A head around the brain (the template has none): a CSF layer, a dark skull ring and a bright
  scalp (fat is brighter than WM on a spoiled-gradient-echo T1w), as shells at fixed distances from
  the brain surface; background air outside. The brain-to-air partial volume of the template is
  filled by these layers, so the brain edge is as blurred as the simulation made it.
- The T1w signal (:func:`mrichain.simulate.signal.tissue_signals`, the cohort's sequence), times a
  smooth multiplicative bias field over the whole head (:func:`mrichain.simulate.bias.bias_field`),
  plus Rician noise (sigma = mean brain signal / ``snr``).
- Stored in ``orientation`` (nibabel axis codes; default ``"PIL"``: a sagittal acquisition as
  dcm2niix writes it, slices along x on the last axis, the voxel axes pointing posterior,
  inferior and left, i.e. an LPS-handed storage), data and affine flipped/permuted together.
- ``sub-01`` has two sessions (``ses-01``, ``ses-02``: the same anatomy, new bias field and noise).
- ``participants.tsv`` (participant_id, age), ``dataset_description.json`` (Name, BIDSVersion).
- The truth goes to ``derivatives/groundtruth`` (its own ``dataset_description.json``):
  ``..._desc-brain_mask.nii.gz`` (uint8, brain = background probability < 0.5, the cohort's
  definition), ``..._dseg.nii.gz`` (0 BG, 1 CSF, 2 GM, 3 WM; skull and scalp are BG) and
  ``..._desc-head_mask.nii.gz`` (brain, CSF layer, skull and scalp), stored like the T1w.

Names: ``sub-XX[/ses-YY]/anat/sub-XX[_ses-YY]_T1w.nii.gz``.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from mrichain.io import save_image
from mrichain.simulate import build_template, simulate_subject
from mrichain.simulate.bias import bias_field
from mrichain.simulate.signal import tissue_signals

BIDS_VERSION = "1.9.0"
LAYERS_MM = {"csf": 2.0, "skull": 5.0, "scalp": 5.0}
"""Thickness of the shells around the brain surface, inside out (mm)."""
LAYER_SIGNAL = {"skull": 0.06, "scalp": 1.25}
"""Skull and scalp signal as a multiple of the subject's WM signal (the CSF layer has CSF's)."""
AIR_MM = 8.0
"""Air margin between the scalp and the edge of the field of view (mm)."""


def _soft_step(d: np.ndarray, edge: float, vox: float) -> np.ndarray:
    """0 inside ``edge`` (distance in mm), 1 outside, a one-voxel linear ramp between."""
    return np.clip(0.5 + (d - edge) / vox, 0.0, 1.0)


def _upsample_probs(probs: np.ndarray, affine: np.ndarray, voxel_mm: float, pad_mm: float):
    """Tissue probabilities [4, X, Y, Z] on a padded ``voxel_mm`` grid (linear, renormalised) + affine."""
    src_vox = float(abs(affine[0, 0]))
    extent = np.array(probs.shape[1:]) * src_vox + 2 * pad_mm
    shape = tuple(int(np.ceil(e / voxel_mm)) for e in extent)
    # voxel centres of the new grid in mm relative to the first source voxel's corner
    start = -pad_mm + 0.5 * voxel_mm - 0.5 * src_vox
    out_aff = np.array(affine, dtype=np.float64)
    out_aff[:3, :3] = np.diag([voxel_mm] * 3)
    out_aff[:3, 3] = affine[:3, 3] + start
    coords = np.meshgrid(*[(start + voxel_mm * np.arange(n)) / src_vox for n in shape], indexing="ij")
    out = np.stack([
        ndi.map_coordinates(p.astype(np.float64), coords, order=1, mode="constant", cval=float(k == 0))
        for k, p in enumerate(probs)
    ])
    out = np.clip(out, 0, None)
    out /= out.sum(0, keepdims=True)
    return out, out_aff


def head_image(probs: np.ndarray, affine: np.ndarray, tissue_params: dict, seq: dict, *,
               rng: np.random.Generator, snr: float, bias_amplitude: float, bias_smoothness_mm: float):
    """Skull-on T1w of one subject (RAS grid ``affine``).

    probs: float [4, X, Y, Z] (BG, CSF, GM, WM) with room around the brain for the head.
    Returns (image float32 [X, Y, Z], brain mask bool, head mask bool, labels uint8).
    """
    vox = float(abs(affine[0, 0]))
    brain = probs[0] < 0.5
    d = ndi.distance_transform_edt(~brain, sampling=vox)  # mm outside the brain, 0 inside
    s = tissue_signals(tissue_params, "T1w", seq)  # [4] BG, CSF, GM, WM
    e1 = LAYERS_MM["csf"]
    e2 = e1 + LAYERS_MM["skull"]
    e3 = e2 + LAYERS_MM["scalp"]
    w_csf = 1.0 - _soft_step(d, e1, vox)
    w_skull = _soft_step(d, e1, vox) - _soft_step(d, e2, vox)
    w_scalp = _soft_step(d, e2, vox) - _soft_step(d, e3, vox)
    outside = w_csf * s[1] + w_skull * LAYER_SIGNAL["skull"] * s[3] + w_scalp * LAYER_SIGNAL["scalp"] * s[3]
    clean = np.tensordot(s, probs, axes=(0, 0)) - s[0] * probs[0] + probs[0] * outside
    bias = bias_field(clean.shape, affine, bias_amplitude, bias_smoothness_mm, rng)
    clean = clean * bias
    sigma = float(clean[brain].mean()) / float(snr)
    noisy = np.abs(clean + sigma * rng.standard_normal(clean.shape) + 1j * sigma * rng.standard_normal(clean.shape))
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    labels[~brain] = 0
    head = d < e3
    return noisy.astype(np.float32), brain, head, labels


def _store(data: np.ndarray, affine: np.ndarray, orientation: str, path: Path, dtype) -> Path:
    """Write RAS ``data`` reoriented to ``orientation`` (axis codes), data and affine together."""
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                           nib.orientations.axcodes2ornt(tuple(orientation)))
    out = img.as_reoriented(ornt)
    return save_image(np.asarray(out.dataobj), out.affine, path, dtype=dtype)


def write_bids_dataset(root, cfg: dict, *, n_subjects: int = 3, simulate_mm: float = 4.0, voxel_mm: float = 2.0,
                       orientation: str = "PIL", snr: float = 30.0, two_sessions: str = "01") -> list[dict]:
    """Write the dataset into ``root``; returns one record per T1w file.

    cfg: a validated mrichain config (seed, cohort, acquire.sequence.T1w are read; the cohort's
    ``resolution_mm`` is replaced by ``simulate_mm``). Subject ``sub-0NN`` of the cohort becomes
    ``sub-NN``; ``two_sessions`` names the subject written with ``ses-01`` and ``ses-02``.
    Record: {participant_id, session (None or 'ses-YY'), age, T1w, brain_mask, dseg, head_mask
    (paths), orientation, voxel_mm}.
    """
    root = Path(root)
    cfg = json.loads(json.dumps(cfg))
    cfg["cohort"]["resolution_mm"] = float(simulate_mm)
    cfg["cohort"]["n_subjects"] = max(int(cfg["cohort"]["n_subjects"]), int(n_subjects), 3)
    seq = dict(cfg["acquire"]["sequence"]["T1w"])
    bias_cfg = cfg["cohort"]["bias_field"]
    template = build_template(float(simulate_mm))
    pad_mm = sum(LAYERS_MM.values()) + AIR_MM
    deriv = root / "derivatives" / "groundtruth"
    records, participants = [], []
    for i in range(1, int(n_subjects) + 1):
        subj = simulate_subject(template, f"sub-{i:03d}", cfg)
        probs, aff = _upsample_probs(subj.probs, subj.affine, float(voxel_mm), pad_mm)
        sub = f"sub-{i:02d}"
        participants.append((sub, subj.age))
        sessions = ["ses-01", "ses-02"] if f"{i:02d}" == two_sessions else [None]
        for k, ses in enumerate(sessions):
            rng = np.random.default_rng(np.random.SeedSequence([int(cfg["seed"]), i, k, 11]))
            img, brain, head, labels = head_image(
                probs, aff, subj.tissue_params, seq, rng=rng, snr=snr,
                bias_amplitude=float(bias_cfg["max_amplitude"]), bias_smoothness_mm=float(bias_cfg["smoothness_mm"]))
            stem = f"{sub}_{ses}" if ses else sub
            rel = Path(sub, ses, "anat") if ses else Path(sub, "anat")
            rec = {"participant_id": sub, "session": ses, "age": subj.age, "orientation": orientation,
                   "voxel_mm": float(voxel_mm)}
            rec["T1w"] = _store(img, aff, orientation, root / rel / f"{stem}_T1w.nii.gz", np.float32)
            rec["brain_mask"] = _store(brain, aff, orientation, deriv / rel / f"{stem}_desc-brain_mask.nii.gz",
                                       np.uint8)
            rec["head_mask"] = _store(head, aff, orientation, deriv / rel / f"{stem}_desc-head_mask.nii.gz",
                                      np.uint8)
            rec["dseg"] = _store(labels, aff, orientation, deriv / rel / f"{stem}_dseg.nii.gz", np.uint8)
            sidecar = {"MagneticFieldStrength": 3, "RepetitionTime": seq["tr_ms"] / 1000.0,
                       "EchoTime": seq["te_ms"] / 1000.0, "FlipAngle": seq["flip_deg"],
                       "SliceThickness": float(voxel_mm)}
            (root / rel / f"{stem}_T1w.json").write_text(json.dumps(sidecar, indent=2) + "\n")
            records.append(rec)
    (root / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"{s}\t{a:.2f}\n" for s, a in participants))
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "mrichain simulated skull-on T1w (test data)", "BIDSVersion": BIDS_VERSION,
         "DatasetType": "raw"}, indent=2) + "\n")
    deriv.mkdir(parents=True, exist_ok=True)
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "mrichain simulation ground truth", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "mrichain tests/bids_dataset.py"}]}, indent=2) + "\n")
    return records
