"""Training throughput of every learned model for a fixed budget, on each device asked for.

    python benchmarks/train_throughput.py [--config config/config.yaml] [--workdir results/throughput]
                                          [--batches 20] [--devices cpu,cuda] [--skip-prepare]

Writes a config that gives each learned method exactly one epoch of ``--batches`` batches (no
early stop) and has Snakemake build the training inputs and manifests in ``--workdir`` (everything
upstream of the ``train`` rule; ``--skip-prepare`` reuses them, e.g. on a GPU node that got the
work directory copied). Then trains every learned model once per device with ``mrichain train``
(``device: cpu`` | ``cuda`` in its params: the same data, the same code, one thread; on CUDA with
mixed precision), reads each model's card and curve and writes training samples per second (epoch
wall time, validation included, as a user waits for it) to ``<workdir>/throughput.tsv``, and the
speed-up of each device over the first one beside it.
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

from mrichain.plan.manifests import manifest_path  # noqa: E402
from mrichain.plan.stages import learned_methods  # noqa: E402


def prepare(cfg: dict, work: Path, cores: str) -> None:
    """Snakemake builds every training input and manifest of ``cfg`` in ``work`` (not the models)."""
    for stage, m in learned_methods():
        if m.name not in cfg[stage]["methods"]:
            cfg[stage]["methods"].append(m.name)
    bench_cfg = work / "throughput_config.yaml"
    bench_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(bench_cfg), "--cores", cores, "--rerun-incomplete", "--omit-from", "train", "--",
           "models"]
    subprocess.run(cmd, check=True)


def train_once(work: Path, stage: str, method: str, params: dict, device: str, seed: int) -> dict:
    """One fixed-budget training run of ``stage-method`` on ``device``; its throughput row."""
    out = work / "throughput" / device / f"{stage}-{method}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f"{stage}-{method}*"):
        stale.unlink()
    (work / "models" / "checkpoints" / f"{stage}-{method}.ckpt").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "mrichain.cli", "train", "--stage", stage, "--method", method,
           "--manifest", manifest_path("train", stage=stage, method=method),
           "--params", json.dumps({**params, "device": device}), "--seed", str(seed), "--threads", "1",
           "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=work)
    card = json.loads(out.with_suffix(".json").read_text())
    curve = pd.read_csv(out.with_name(out.stem + "_curve.tsv"), sep="\t")
    curve = curve[curve["epoch"] > 0]  # epoch 0 scores the untrained network: no training in it
    samples, seconds = float(curve["samples"].sum()), float(curve["seconds"].sum())
    return {"model": f"{stage}-{method}", "device": card["device"], "batch_size": card["training"]["batch_size"],
            "samples": samples, "seconds": round(seconds, 2), "samples_per_s": round(samples / seconds, 3),
            "n_parameters": card.get("n_parameters")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--workdir", default=str(ROOT / "results" / "throughput"))
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--cores", default="all")
    p.add_argument("--devices", default="cpu", help="comma-separated: cpu, cuda")
    p.add_argument("--skip-prepare", action="store_true", help="reuse the training inputs already in --workdir")
    a = p.parse_args(argv)
    work = Path(a.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(Path(a.config).read_text())
    if not a.skip_prepare:
        prepare(cfg, work, a.cores)
    rows = []
    for device in a.devices.split(","):
        for stage, m in learned_methods():
            params = {k: v for k, v in cfg[stage].get("params", {}).get(m.name, {}).items() if k != "infer"}
            params.update(epochs=1, max_batches_per_epoch=a.batches, patience=10)
            rows.append(train_once(work, stage, m.name, params, device, cfg["seed"]))
    table = pd.DataFrame(rows)
    first = table[table.device == table.device.iloc[0]].set_index("model")["samples_per_s"]
    table["speedup_vs_" + str(table.device.iloc[0])] = [round(r.samples_per_s / first[r.model], 2)
                                                          for r in table.itertuples()]
    table.to_csv(work / "throughput.tsv", sep="\t", index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
