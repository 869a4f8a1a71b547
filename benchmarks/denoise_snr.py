"""Denoising at SNRs the models were not trained on: cohort-SNR DnCNN, noise-blind DnCNN, ANTs NLM.

    python benchmarks/denoise_snr.py [--config config/config.yaml] [--snrs 10,15,20,30,50,80]
        [--blind-range 15,50] [--subjects 6,2,4] [--budget EPOCHS,BATCHES] [--threads 2]
        [--workdir results/bench/denoise_snr] [--out results/bench/denoise_snr.tsv]

Simulates ``train + val + test`` subjects with the config's cohort (2 mm by default) and acquires
each fully sampled with the config's coils and sequence (``mrichain.simulate``), so every input is
the acquisition's own RSS image (noncentral chi), not the trainer's synthetic one. Then

- trains (a) ``dncnn``: today's DnCNN on the train subjects' pairs at the cohort SNR
  (``acquire.snr``), and (b) ``dncnn-blind``: the same params (the config's
  ``denoise.params.dncnn``, same epochs and batches, or ``--budget``'s for both; same seed) plus ``noise_snr_range`` =
  ``--blind-range`` and ``noise_coils = acquire.n_coils``; both select their epoch on the val
  subjects at the cohort SNR;
- acquires each test subject at every ``--snrs`` value (same noise draw per subject, scaled:
  the acquisition seeds its noise by subject only) and denoises with both DnCNNs and ANTs NLM at the
  settings the project's tuning chose on the default cohort (``--nlm``: Gaussian, patch 1, search 2);
- scores PSNR (dB, inside the brain mask, ``data_range`` = the noise-free volume's max: the denoise
  stage's metric, :func:`mrichain.scoring.metrics.psnr`) against the noise-free image, the undenoised input
  as the floor; mean over test subjects with a 95 % bootstrap interval
  (:func:`mrichain.scoring.aggregate.mean_interval`) and the paired difference dncnn-blind - dncnn.

Writes ``--out`` (one row per SNR and method), ``<workdir>/<out stem>_per_subject.tsv``, montages
of one test subject at the lowest and highest SNR (``<out dir>/<out stem>_<snr>.png``) and prints
the table. Ground truth and training pairs in ``--workdir`` are reused by a rerun; models are not.
Every random choice flows from the config's seed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mrichain.scoring.aggregate import mean_interval  # noqa: E402
from mrichain.plan.config import load_config  # noqa: E402
from mrichain.io import save_image  # noqa: E402
from mrichain.scoring.metrics import psnr  # noqa: E402


def _subjects(cfg: dict, n: int, gt_root: Path) -> list[str]:
    """Simulate and write ``n`` subjects' ground truth; returns their ids."""
    from mrichain.simulate.cohort import simulate_subject, write_subject
    from mrichain.simulate.template import build_template

    template = build_template(float(cfg["cohort"]["resolution_mm"]))
    ids = [f"sub-{i:03d}" for i in range(1, n + 1)]
    for sub in ids:
        if not (gt_root / sub).exists():
            write_subject(simulate_subject(template, sub, cfg), gt_root / sub)
    return ids


def _acquire(cfg: dict, gt_root: Path, sub: str, snr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(noisy RSS [X, Y, Z], noise-free [X, Y, Z], affine) of a fully sampled acquisition at ``snr``."""
    from mrichain.simulate.acquire import simulate_acquisition

    c = {**cfg, "acquire": {**cfg["acquire"], "snr": float(snr)}}
    kf, nf = simulate_acquisition(gt_root / sub, sub, c, 1.0, float(cfg["acquire"]["center_fractions"][0]))
    return np.moveaxis(kf.reconstruction_rss, 0, -1), np.asarray(nf.dataobj, np.float32), kf.affine


def _brain(gt_root: Path, sub: str) -> np.ndarray:
    """The subject's brain mask [X, Y, Z] bool."""
    from mrichain.io import load_image
    from mrichain.simulate.cohort import subject_files

    return np.asarray(load_image(subject_files(sub, gt_root / sub)["brain_mask"]).dataobj) > 0


def _pairs(cfg: dict, gt_root: Path, ids: list[str], snr: float, out: Path) -> list[dict]:
    """Training items (noisy input, noise-free target, brain mask NIfTI paths) at ``snr``."""
    items = []
    for sub in ids:
        p = {k: out / f"{sub}_{k}.nii.gz" for k in ("input", "target", "mask")}
        if not all(v.exists() for v in p.values()):
            noisy, clean, affine = _acquire(cfg, gt_root, sub, snr)
            mask = _brain(gt_root, sub)
            save_image(noisy, affine, p["input"])
            save_image(clean, affine, p["target"])
            save_image(mask, affine, p["mask"], dtype=np.uint8)
        items.append({k: str(v) for k, v in p.items()})
    return items


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--snrs", default="10,15,20,30,50,80")
    ap.add_argument("--blind-range", default="15,50")
    ap.add_argument("--subjects", default="6,2,4", help="train,val,test")
    ap.add_argument("--nlm", default="Gaussian,1,2", help="noise model, patch radius, search radius")
    ap.add_argument("--budget", default=None, help="EPOCHS,BATCHES per epoch for both DnCNNs (default: the config's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=str(ROOT / "results" / "bench" / "denoise_snr"))
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "denoise_snr.tsv"))
    a = ap.parse_args(argv)

    import torch

    from mrichain.denoise.antsnlm import antsnlm
    from mrichain.denoise.dncnn import dncnn, train
    from mrichain.scoring.figures import save_montage
    from mrichain.slices import image_like

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    cfg = load_config(a.config)
    seed = int(cfg["seed"])
    snrs = [float(s) for s in a.snrs.split(",")]
    lo, hi = (float(s) for s in a.blind_range.split(","))
    n_train, n_val, n_test = (int(s) for s in a.subjects.split(","))
    noise_model, patch, search = a.nlm.split(",")
    cohort_snr = float(cfg["acquire"]["snr"])
    work, out = Path(a.workdir), Path(a.out)
    gt_root = work / "groundtruth"

    ids = _subjects(cfg, n_train + n_val + n_test, gt_root)
    train_ids, val_ids, test_ids = ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]
    pairs = work / f"pairs_snr{cohort_snr:g}"
    pairs.mkdir(parents=True, exist_ok=True)
    manifest = {"train": _pairs(cfg, gt_root, train_ids, cohort_snr, pairs),
                "val": _pairs(cfg, gt_root, val_ids, cohort_snr, pairs)}
    print(f"simulated {len(ids)} subjects and their cohort-SNR pairs: {time.perf_counter() - t0:.0f} s", flush=True)

    base = dict(cfg["denoise"].get("params", {}).get("dncnn", {}))
    base.pop("infer", None)
    if a.budget:
        epochs, batches = (int(v) for v in a.budget.split(","))
        base.update(epochs=epochs, max_batches_per_epoch=batches, patience=epochs)
    variants = {"dncnn": base,
                "dncnn-blind": {**base, "noise_snr_range": [lo, hi], "noise_coils": int(cfg["acquire"]["n_coils"])}}
    models = {}
    for name, params in variants.items():
        path = work / "models" / out.stem / f"{name}.pt"
        for stale in [path, path.with_suffix(".json"), path.parent / "checkpoints" / f"{name}.ckpt"]:
            stale.unlink(missing_ok=True)
        t = time.perf_counter()
        res = train(manifest, {**params, "threads": a.threads}, str(path), seed, progress=False)
        print(f"trained {name}: val PSNR {res.best_score:.2f} dB at epoch {res.best_epoch}/{res.epochs_run}, "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        models[name] = str(path)

    rows, montage_snrs = [], {min(snrs), max(snrs)}
    for sub in test_ids:
        mask = _brain(gt_root, sub)
        for snr in snrs:
            noisy, clean, affine = _acquire(cfg, gt_root, sub, snr)
            img = image_like(noisy, affine)
            outs = {"input": noisy,
                    "antsnlm": np.asarray(antsnlm(img, noise_model=noise_model, patch_radius=int(patch),
                                                  search_radius=int(search), threads=a.threads).dataobj)}
            for name, path in models.items():
                outs[name] = np.asarray(dncnn(img, model=path, threads=a.threads, device="cpu").dataobj)
            for method, pred in outs.items():
                rows.append({"subject": sub, "snr": snr, "method": method, "psnr": psnr(clean, pred, mask=mask)})
            if sub == test_ids[0] and snr in montage_snrs:
                panels = [("noise-free", clean, "image")] + [(m, v, "image") for m, v in outs.items()]
                panels += [(f"|{m} - truth|", np.abs(v - clean), "error") for m, v in outs.items()]
                save_montage(panels, out.parent / f"{out.stem}_{snr:g}.png",
                             title=f"{sub}, SNR {snr:g} (cohort {cohort_snr:g}; blind trained {lo:g}-{hi:g})")
        print(f"scored {sub}: {time.perf_counter() - t0:.0f} s", flush=True)

    per = pd.DataFrame(rows)
    work.mkdir(parents=True, exist_ok=True)
    per.to_csv(work / f"{out.stem}_per_subject.tsv", sep="\t", index=False, float_format="%.4f")
    table = []
    methods = ["input", "antsnlm", "dncnn", "dncnn-blind"]
    for snr in snrs:
        at = per[per["snr"] == snr].pivot(index="subject", columns="method", values="psnr")
        for m in methods:
            low, high = mean_interval(at[m].to_numpy(), seed=seed, key=("denoise_snr", f"{snr:g}", m))
            table.append({"snr": snr, "method": m, "n": len(at), "psnr_mean": at[m].mean(), "ci_low": low,
                          "ci_high": high,
                          "trained_at": {"dncnn": "yes" if snr == cohort_snr else "no",
                                         "dncnn-blind": "yes" if lo <= snr <= hi else "no"}.get(m, "")})
        diff = (at["dncnn-blind"] - at["dncnn"]).to_numpy()
        low, high = mean_interval(diff, seed=seed, key=("denoise_snr", f"{snr:g}", "blind-cohort"))
        table.append({"snr": snr, "method": "dncnn-blind - dncnn", "n": len(at), "psnr_mean": diff.mean(),
                      "ci_low": low, "ci_high": high, "trained_at": ""})
    table = pd.DataFrame(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False, float_format="%.3f")

    wide = table.assign(cell=[f"{m:.2f} [{lo_:.2f}, {hi_:.2f}]" for m, lo_, hi_ in
                              zip(table.psnr_mean, table.ci_low, table.ci_high)])
    wide = wide.pivot(index="snr", columns="method", values="cell")[methods + ["dncnn-blind - dncnn"]]
    print(f"\nPSNR in the brain (dB), mean over {n_test} test subjects [95 % bootstrap interval]; "
          f"dncnn trained at SNR {cohort_snr:g}, dncnn-blind over {lo:g}-{hi:g}; budget "
          f"{base.get('epochs', 'default')} epochs x {base.get('max_batches_per_epoch', 'default')} batches")
    print(wide.to_string())
    print(f"\nwrote {out}; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
