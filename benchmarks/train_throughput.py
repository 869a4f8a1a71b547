"""Training throughput of every learned model for a fixed budget, on whatever device is present.

    python benchmarks/train_throughput.py [--config config/config.yaml] [--workdir results/throughput]
                                          [--batches 20] [--cores all]

Writes a config that gives each learned method exactly one epoch of ``--batches`` batches (no
early stop), has Snakemake produce the training inputs and retrain the five models in
``--workdir`` (the device is picked by the training engine: CUDA with mixed precision when
present, else CPU), then reads each model's card and curve and prints training samples per second
(epoch wall time, validation included, as a user waits for it) into
``<workdir>/throughput.tsv``. Run it once on the CPU machine and once on a GPU node with the same
arguments: the two TSVs side by side are the speed-up the README quotes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mrichain.methods import LEARNED  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--workdir", default=str(ROOT / "results" / "throughput"))
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--cores", default="all")
    a = p.parse_args(argv)
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(Path(a.config).read_text())
    targets = []
    for stage, methods in LEARNED.items():
        for method in methods:
            if method not in cfg[stage]["methods"]:
                cfg[stage]["methods"].append(method)
            params = cfg[stage].setdefault("params", {}).setdefault(method, {})
            params.update(epochs=1, max_batches_per_epoch=a.batches, patience=10)
            targets.append(f"models/{stage}-{method}.pt")
    bench_cfg = work / "throughput_config.yaml"
    bench_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(bench_cfg), "--cores", a.cores, "--rerun-incomplete", "--forcerun", "train", *targets]
    subprocess.run(cmd, check=True)
    rows = []
    for target in targets:
        model = work / target
        card = json.loads(model.with_suffix(".json").read_text())
        curve = pd.read_csv(model.with_name(model.stem + "_curve.tsv"), sep="\t")
        samples, seconds = float(curve["samples"].sum()), float(curve["seconds"].sum())
        rows.append({"model": model.stem, "device": card["device"], "batch_size": card["training"]["batch_size"],
                     "samples": samples, "seconds": round(seconds, 2), "samples_per_s": round(samples / seconds, 3),
                     "n_parameters": card.get("n_parameters")})
    table = pd.DataFrame(rows)
    table.to_csv(work / "throughput.tsv", sep="\t", index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
