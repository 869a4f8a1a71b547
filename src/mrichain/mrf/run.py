"""The MRF branch's jobs (``workflow/rules/mrf.smk``): dictionary, maps per test subject and
method, and scores. The CLI's ``mrf-*`` commands call these; the library is the rest of
:mod:`mrichain.mrf`.

Config ``mrf`` (:func:`acquisition`; sequence and dictionary checked by :mod:`mrichain.mrf`):

- the fingerprints of a subject are simulated from its ground-truth tissue maps in each mapping
  job (:func:`subject_fingerprints`: the same seed streams, so every method of a subject maps the
  same noisy fingerprints). Storing them would cost about 128 MB per subject (1,000 complex time
  points per voxel) for a simulation that takes about a second;
- ``acquire.n_slices`` central axial slices of the brain (:func:`central_slices`) are mapped;
- each method writes T1, T2 and PD maps (float32 NIfTI on the subject's grid, 0 outside the
  mapped voxels; T1/T2 in ms, PD relative) and a synthetic T1w from them
  (:func:`mrichain.mrf.synthesis.synthesise`, the contrast and sequence ``acquire`` uses), which
  the segment feed segments (rule ``segment`` at condition ``MRF<method>``);
- scores (:func:`score`): ``t1_mape``, ``t2_mape`` over GM, WM and CSF and per tissue
  (:func:`mrichain.mrf.scores.map_scores`), ``t1_mape_pure``/``t2_mape_pure`` over the voxels of
  one tissue (:data:`PURE`), ``seconds_per_slice``, ``speedup_vs_matching``
  (full matching's seconds / the method's, same subject, same voxels), and for the synthetic T1w
  segmentations ``t1w_dice_mean``, beside the acquired T1w's Dice on the same voxels, segmented
  on the same slab (:func:`write_slab`) and as the chain segmented the whole volume
  (``downstream.tsv``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mrichain import LABELS
from mrichain.io import load_image, load_json, save_image, save_json
from mrichain.plan.layout import MRF_ACQ as ACQ

ACQUIRE_DEFAULTS = {"snr_db": 30.0, "n_slices": 4, "b1_amplitude": 0.0}
PURE = 0.99
"""Tissue probability of the voxels ``t1_mape_pure``/``t2_mape_pure`` are over: one tissue, so one
(T1, T2) that an atom can fit; the others mix tissue signals, which no single atom matches."""
CONSTANT_TISSUE = "WM"
"""The floor ``constant`` gives every voxel this tissue's nominal T1, T2, PD
(:data:`mrichain.simulate.tissue.TISSUE_PARAMS_3T`): a map that reads no fingerprint."""


def acquisition(mrf_cfg: dict) -> dict:
    """``mrf.acquire`` with its defaults: snr_db (dB), n_slices, b1_amplitude."""
    return {**ACQUIRE_DEFAULTS, **(mrf_cfg.get("acquire") or {})}


def write_dictionary(mrf_cfg: dict, out: str | Path) -> dict:
    """Simulate the configured dictionary, SVD-compress it and save it as HDF5; returns its size."""
    from mrichain.mrf.dictionary import build_dictionary, compress, dictionary_settings, save_dictionary
    from mrichain.mrf.sequence import FispSequence

    seq = FispSequence.from_config(mrf_cfg.get("sequence"))
    st = dictionary_settings(mrf_cfg.get("dictionary"), seq.n_timepoints)
    t0 = time.perf_counter()
    d = compress(build_dictionary(seq, st["grid"], n_states=st["n_states"], device="cpu"), st["svd_rank"])
    save_dictionary(d, out)
    return {"atoms": len(d), "rank": st["svd_rank"], "quantisation_error": st["grid"].quantisation_error(),
            "seconds": time.perf_counter() - t0}


def central_slices(brain_mask: np.ndarray, n: int) -> list[int]:
    """The ``n`` axial (z) indices at the centre of the brain's extent in ``brain_mask`` [X, Y, Z]."""
    z = np.flatnonzero(np.asarray(brain_mask).any(axis=(0, 1)))
    if z.size == 0:
        raise ValueError("the brain mask is empty")
    lo, hi = int(z[0]), int(z[-1])
    start = lo + max(0, (hi - lo + 1 - n) // 2)
    return list(range(start, min(start + n, hi + 1)))


def subject_fingerprints(gt_dir: str | Path, mrf_cfg: dict, seed: int, dictionary, *, noiseless: bool = False):
    """The noisy fingerprints of one subject's central slices with the dictionary's sequence
    (``noiseless``: without the noise, for a method that reads only which voxels are mapped)."""
    from mrichain.mrf.fingerprints import subject_fingerprints as simulate
    from mrichain.simulate.cohort import read_subject

    acq = acquisition(mrf_cfg)
    subj = read_subject(Path(gt_dir))
    return simulate(subj, dictionary.sequence, seed=seed, snr_db=None if noiseless else float(acq["snr_db"]),
                    slices=central_slices(subj.brain_mask, int(acq["n_slices"])),
                    b1_amplitude=float(acq["b1_amplitude"]), n_states=dictionary.n_states)


def mapped_mask(brain_mask: np.ndarray, mrf_cfg: dict) -> np.ndarray:
    """bool [X, Y, Z]: the voxels the branch maps (the brain on :func:`central_slices`)."""
    keep = np.zeros(brain_mask.shape, bool)
    z = central_slices(brain_mask, int(acquisition(mrf_cfg)["n_slices"]))
    keep[:, :, z] = np.asarray(brain_mask)[:, :, z] > 0
    return keep


def write_slab(image: str | Path, gt_dir: str | Path, mrf_cfg: dict, out: str | Path) -> None:
    """The acquired image on the mapped voxels only (0 elsewhere), as the synthetic T1w is: the
    segment feed then sees the same field of view in both (measured: Atropos on a 4-slice slab
    loses about 0.2 Dice against the whole volume, whatever the image)."""
    from mrichain.simulate.cohort import read_subject

    img = load_image(image)
    keep = mapped_mask(read_subject(Path(gt_dir)).brain_mask, mrf_cfg)
    save_image(np.where(keep, np.asarray(img.dataobj, np.float32), 0.0), img.affine, out)


def constant_mapper(dictionary):
    """The floor: fingerprints [n_voxels, T] (not read) -> :data:`CONSTANT_TISSUE`'s nominal T1,
    T2 (ms) and PD in every voxel."""
    from mrichain.simulate.tissue import TISSUE_PARAMS_3T

    p = TISSUE_PARAMS_3T[CONSTANT_TISSUE]
    return lambda fingerprints: {k: np.full(len(fingerprints), p[key], np.float32)
                                 for k, key in (("t1", "T1"), ("t2", "T2"), ("pd", "PD"))}


def map_subject(method: str, gt_dir: str | Path, dictionary_path: str | Path, mrf_cfg: dict, seed: int,
                outputs: dict[str, str], *, contrast: str, seq_params: dict, model: str | None = None,
                threads: int = 1) -> dict:
    """Map one subject's fingerprints with ``method`` and write ``outputs`` (keys ``T1map``,
    ``T2map``, ``PDmap``, ``T1w`` (synthetic, ``contrast``), ``timing`` (JSON: seconds of the
    mapping alone, voxels, slices)). Returns the timing record."""
    import torch

    from mrichain.mrf import METHODS
    from mrichain.mrf.dictionary import load_dictionary
    from mrichain.mrf.synthesis import synthesise
    from mrichain.plan.stages import FLOOR, MRF
    from mrichain.plan.stages import method as declared_method

    declared = declared_method(MRF, method)  # KeyError naming the known methods
    torch.set_num_threads(int(threads))
    d = load_dictionary(dictionary_path)
    mapper = METHODS[method](d, **({"model": model} if declared.learned else {}))  # refuses a bad model here
    # a floor reads no fingerprint: its mapping job simulates only which voxels are mapped
    fp = subject_fingerprints(gt_dir, mrf_cfg, seed, d, noiseless=declared.kind == FLOOR)
    t0 = time.perf_counter()
    res = mapper(fp.signals)
    seconds = time.perf_counter() - t0
    vols = {key: fp.volume(res[k]) for key, k in (("T1map", "t1"), ("T2map", "t2"), ("PDmap", "pd"))}
    mapped = fp.volume(np.ones(len(fp), np.float32)) > 0
    for key, vol in vols.items():
        save_image(vol, fp.affine, outputs[key])
    save_image(synthesise(vols["T1map"], vols["T2map"], vols["PDmap"], contrast, seq_params, mask=mapped),
               fp.affine, outputs["T1w"])
    timing = {"method": method, "seconds": seconds, "n_voxels": len(fp), "slices": [int(z) for z in fp.slices],
              "snr_db": fp.snr_db, "dictionary_atoms": len(d)}
    save_json(timing, outputs["timing"])
    return timing


def _dice_on(labels: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    from mrichain.scoring.metrics import dice

    per = dice(np.where(mask, labels, 0), np.where(mask, truth, 0))
    out = {f"dice_{LABELS[k].lower()}": float(v) for k, v in per.items()}
    out["dice_mean"] = float(np.mean(list(per.values())))
    return out


def score(manifest: dict, out_tsv: str | Path, out_downstream: str | Path, out_figures: str | Path) -> None:
    """Scores of every method on every test subject (long TSV like the stages', ``stage`` mrf,
    ``acq`` :data:`ACQ`), the downstream Dice table and the figures (``montage.png``: truth and
    every method's T1/T2 on the middle mapped slice of the first test subject, with DRONE's and
    matching's relative error; ``downstream.png``).

    manifest: :meth:`mrichain.mrf.plan.MrfPlan.score_manifest` (per subject its ground-truth
    files; the segment feed's labels of the acquired T1w at acquisition ``acq``, of the whole
    volume (``acquired_dseg``, the chain's) and of the mapped voxels only (``reference_dseg``,
    :func:`write_slab`: the fair comparison); each method's files: T1map, T2map, PDmap, T1w,
    timing[, dseg]). All Dice values are over the mapped voxels.
    """
    import pandas as pd

    from mrichain.mrf.scores import map_scores
    from mrichain.simulate.cohort import read_subject

    rows, down = [], []
    first = None
    for sub, entry in manifest["subjects"].items():
        subj = read_subject(Path(entry["groundtruth"]["info"]).parent)
        per_method = {}
        for method, files in entry["methods"].items():
            t1 = np.asarray(load_image(files["T1map"]).dataobj, np.float32)
            t2 = np.asarray(load_image(files["T2map"]).dataobj, np.float32)
            timing = load_json(files["timing"])
            mapped = np.zeros(subj.brain_mask.shape, bool)
            mapped[:, :, timing["slices"]] = subj.brain_mask[:, :, timing["slices"]] > 0
            args = (t1[mapped], t2[mapped], subj.t1map[mapped], subj.t2map[mapped], subj.labels[mapped])
            m = map_scores(*args, seconds=timing["seconds"], n_slices=len(timing["slices"]))
            pure = map_scores(*args, probs=np.moveaxis(subj.probs, 0, -1)[mapped], purity=PURE)
            m.update({f"{k}_pure": pure[k] for k in ("t1_mape", "t2_mape")})
            per_method[method] = (t1, t2, timing, mapped)
            if "dseg" in files:
                seg = np.asarray(load_image(files["dseg"]).dataobj, np.uint8)
                dsc = _dice_on(seg, subj.labels, mapped)
                m["t1w_dice_mean"] = dsc["dice_mean"]
                down.append({"subject": sub, "source": f"MRF {method}", **dsc})
            rows += [dict(stage="mrf", acq=ACQ, subject=sub, split="test", method=method, metric=k, value=v)
                     for k, v in m.items()]
        if "matching" in per_method:
            ref = per_method["matching"][2]["seconds"]
            rows += [dict(stage="mrf", acq=ACQ, subject=sub, split="test", method=method, metric="speedup_vs_matching",
                          value=ref / max(t[2]["seconds"], 1e-9))
                     for method, t in per_method.items() if method != "constant"]  # the floor reads no fingerprint
        mapped = next(iter(per_method.values()))[3]
        for key, what in (("reference_dseg", "mapped slices only"), ("acquired_dseg", "whole volume")):
            if entry.get(key):
                seg = np.asarray(load_image(entry[key]).dataobj, np.uint8)
                down.append({"subject": sub, "source": f"acquired {entry['acq']} ({what})",
                             **_dice_on(seg, subj.labels, mapped)})
        if first is None:
            first = (sub, subj, per_method)
    Path(out_tsv).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["stage", "acq", "subject", "split", "method", "metric", "value"]).to_csv(
        out_tsv, sep="\t", index=False, float_format="%.6g")
    table = pd.DataFrame(down, columns=["subject", "source", "dice_csf", "dice_gm", "dice_wm", "dice_mean"])
    table.to_csv(out_downstream, sep="\t", index=False, float_format="%.6g")
    Path(out_figures).mkdir(parents=True, exist_ok=True)
    if first is not None:
        _montage(*first, Path(out_figures) / "montage.png")
    if len(table):
        _downstream_figure(table, Path(out_figures) / "downstream.png")


def _montage(sub: str, subj, per_method: dict, path: Path) -> None:
    """Rows T1, T2; columns truth, each method, then |estimate - truth| / truth of DRONE and
    matching (where run); the middle mapped axial slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    any_method = next(iter(per_method.values()))
    z = any_method[2]["slices"][len(any_method[2]["slices"]) // 2]
    mask = any_method[3][:, :, z]
    cols = [("truth", subj.t1map, subj.t2map, "map")]
    cols += [(m, v[0], v[1], "map") for m, v in per_method.items()]
    cols += [(f"{m} error", per_method[m][0], per_method[m][1], "error") for m in ("matching", "drone") if m in per_method]
    fig, axes = plt.subplots(2, len(cols), figsize=(2.3 * len(cols), 5.0), squeeze=False)
    for col, (name, t1, t2, kind) in enumerate(cols):
        for row, (vol, truth, vmax) in enumerate(((t1, subj.t1map, 4500.0), (t2, subj.t2map, 300.0))):
            sl = np.where(mask, vol[:, :, z], 0.0)
            if kind == "error":
                sl = np.where(mask, np.abs(sl - truth[:, :, z]) / np.maximum(truth[:, :, z], 1e-6), 0.0)
                im = axes[row, col].imshow(np.rot90(sl), cmap="hot", vmin=0, vmax=0.5)
            else:
                im = axes[row, col].imshow(np.rot90(sl), cmap="magma", vmin=0, vmax=vmax)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(name, fontsize=9)
            if col == len(cols) - 1 or (kind == "map" and col == 0):
                fig.colorbar(im, ax=axes[row, col], fraction=0.046)
        axes[0, 0].set_ylabel("T1 (ms)")
        axes[1, 0].set_ylabel("T2 (ms)")
    fig.suptitle(f"{sub}, axial slice {z}: T1/T2 maps (error: relative, 0-50 %)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _downstream_figure(table, path: Path) -> None:
    """Mean Dice (CSF, GM, WM) of the segment feed on the acquired T1w and on each MRF-derived one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = table.groupby("source", sort=False)["dice_mean"]
    means, lows, highs = g.mean(), g.min(), g.max()
    fig, ax = plt.subplots(figsize=(1.8 + 1.5 * len(means), 3.6))
    ax.bar(range(len(means)), means.to_numpy(), color="#3b8bd9",
           yerr=[means - lows, highs - means], capsize=4)
    ax.set_xticks(range(len(means)), means.index, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("Dice (mean of CSF, GM, WM)")
    ax.set_ylim(0, 1)
    ax.set_title("segment feed on the MRF-derived vs the acquired T1w\n(Dice over the mapped voxels; bar: test mean, "
                 "whiskers: range)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
