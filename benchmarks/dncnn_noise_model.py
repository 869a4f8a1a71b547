"""DnCNN's training noise: one SNR, noise-level blind with Rician noise, blind with the acquisition's coils.

    python benchmarks/dncnn_noise_model.py --workdir <a finished default run> [--out results/bench/dncnn_noise]

Trains the DnCNN three times on the run's own training manifest
(``results/manifests/train/denoise-dncnn.json``: the fully sampled train and val pairs), with the
run's budget and seed and only the training noise changed:

- ``cohort``: the manifest's pairs as they are (the cohort's SNR, ``noise_snr_range`` null);
- ``rician``: inputs synthesised from the noise-free targets at an SNR drawn per item from
  ``--snr-range``, Rician noise (``noise_coils: 1``);
- ``coils``: the same with the RSS of the acquisition's ``acquire.n_coils`` coils.

Each model then denoises every subject's zero-filled reconstruction at every acquisition of the
run, and the stage's own scorer (:func:`mrichain.scoring.evaluate.score_denoise`) scores it
against the noise-free image. Writes ``scores.tsv`` (model, acq, subject, split, psnr of the model
and of the undenoised input, their difference) and prints the mean difference per model,
acquisition and split. Nothing in the run's directory is written.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd
import yaml


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="a finished run of the default config")
    p.add_argument("--out", default="results/bench/dncnn_noise")
    p.add_argument("--snr-range", type=float, nargs=2, default=[25.0, 60.0])
    a = p.parse_args(argv)
    import nibabel as nib
    import torch

    from mrichain.denoise import dncnn
    from mrichain.io import save_image
    from mrichain.plan.config import method_params
    from mrichain.scoring.evaluate import score_denoise

    torch.set_num_threads(1)
    work, out = Path(a.workdir).resolve(), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((work / "config" / "config.yaml").read_text())
    budget = {k: v for k, v in method_params(cfg, "denoise", "dncnn").items()
              if k not in ("noise_snr_range", "noise_coils", "infer")}
    variants = {"cohort": {"noise_snr_range": None},
                "rician": {"noise_snr_range": list(a.snr_range), "noise_coils": 1},
                "coils": {"noise_snr_range": list(a.snr_range), "noise_coils": int(cfg["acquire"]["n_coils"])}}
    manifest = json.loads((work / "results/manifests/train/denoise-dncnn.json").read_text())
    manifest = {k: [{key: str(work / v) for key, v in item.items()} for item in manifest[k]] for k in ("train", "val")}
    labels = (f.name[len("acq-"):-len("_stage-denoise.json")] for f in (work / "results/manifests/score").glob(
        "acq-*_stage-denoise.json"))
    acqs = sorted(acq for acq in labels if re.fullmatch(r"R\d+(p\d+)?", acq))  # acquisitions, not sweep conditions
    rows = []
    for name, noise in variants.items():
        model = out / f"dncnn-{name}.pt"
        result = dncnn.train(manifest, {**budget, **noise}, str(model), int(cfg["seed"]), progress=False)
        print(f"{name}: {result.optimiser_steps} steps, {result.wall_seconds:.0f} s, best epoch {result.best_epoch}",
              flush=True)
        for acq in acqs:
            score_manifest = json.loads((work / f"results/manifests/score/acq-{acq}_stage-denoise.json").read_text())
            for sub, entry in score_manifest["subjects"].items():
                entry = {k: str(work / v) if isinstance(v, str) else v for k, v in entry.items()}
                denoised = dncnn.dncnn(nib.load(entry["input"]), model=str(model))
                path = out / f"{sub}_acq-{acq}_desc-{name}_T1w.nii.gz"
                save_image(denoised.get_fdata(dtype="float32"), denoised.affine, path)
                s = score_denoise(sub, {**entry, "methods": {name: {"image": str(path)}}}, acq, None)
                rows.append({"model": name, "acq": acq, "subject": sub, "split": score_manifest["splits"][sub],
                             "psnr": s[name]["psnr"], "psnr_input": s["input"]["psnr"],
                             "gain_db": s[name]["psnr"] - s["input"]["psnr"]})
    table = pd.DataFrame(rows)
    table.to_csv(out / "scores.tsv", sep="\t", index=False, float_format="%.4f")
    print(table.groupby(["model", "acq", "split"])["gain_db"].agg(["mean", "min", "max", "count"]).round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
