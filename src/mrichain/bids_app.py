"""The BIDS-App entry point: ``mrichain BIDS_DIR OUTPUT_DIR {participant,group} [options]``.

The calling conventions of BIDS Apps (Gorgolewski et al. 2017, as fMRIPrep, MRIQC and hippunfold
follow them): the raw dataset, the derivatives folder and the analysis level as positional
arguments; ``--participant-label`` (with or without ``sub-``) chooses participants;
``--skip-bids-validation`` indexes files whose names pybids' validation rejects; ``-w/--work-dir``
holds everything that is not a derivative. The app writes the run's config (the embedded default,
or ``--configfile``, with an ``input: {kind: bids, ...}`` section and the ``--config`` overrides)
to ``<work>/mrichain_config.yaml``, validates it and the dataset in this process (a bad key,
dataset or label stops here, before any job), then runs the workflow with Snakemake in ``<work>``:

participant
    the chosen participants' derivatives in ``OUTPUT_DIR`` (prepared image, brain mask, each
    denoising and segmentation method's output, brain age per image, the per-subject page
    ``sub-<label>.html``) and ``OUTPUT_DIR/logs/CITATION.md``; and whatever of the simulated
    cohort they need first (its trained models, unless ``--models-dir`` names trained ones, and
    its tuning cards). Runs of different participants may share ``<work>`` one after another (one
    Snakemake at a time holds its lock).
group
    every participant's derivatives, the whole cohort's scores, and the group outputs:
    ``OUTPUT_DIR/group/`` (the real inputs' summary and brain-age tables, the cohort's side-by-side
    ``comparison.tsv``) and the run report ``OUTPUT_DIR/report.html``.

Exit status: 0 done; 1 Snakemake ran and a job failed (its log is named in the output; with
``--keep-going``, the default, other participants' outputs are kept); 2 the arguments, the
config or the dataset were refused before any job (one line naming the key or the path).

``OUTPUT_DIR/.bidsignore`` (written by the workflow,
:data:`mrichain.scoring.subject_report.BIDSIGNORE`) lists what is not BIDS there: the pages,
their figures, the run report, the group tables and the default work folder.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mrichain import UserError

LEVELS = ("participant", "group")
TARGETS = {"participant": "participant", "group": "all"}
"""The Snakefile's target rule of each analysis level."""
CONFIG_NAME = "mrichain_config.yaml"
GROUP_DIR = "group"
GROUP_FILES = ("results/realdata/summary.tsv", "results/realdata/brain_age.tsv", "results/realdata/metrics.json",
               "results/comparison.tsv", "results/differences.tsv")
"""Files of the work folder copied to ``OUTPUT_DIR/group/`` after a group run (those that exist)."""


def build_parser() -> argparse.ArgumentParser:
    from mrichain import __version__

    p = argparse.ArgumentParser(
        prog="mrichain", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="mrichain as a BIDS App: the MRI chain on a BIDS dataset's T1w images, beside the "
                    "simulated cohort that trains and scores its methods.",
        epilog="Exit status: 0 done; 1 a job failed (its log is named); 2 refused before any job.")
    p.add_argument("bids_dir", type=Path, help="the raw BIDS dataset (read only)")
    p.add_argument("output_dir", type=Path, help="the derivatives folder (outside bids_dir, or under its "
                   "derivatives/<pipeline>)")
    p.add_argument("analysis_level", choices=LEVELS, help="participant: the chosen participants' derivatives; "
                   "group: every participant's, the group tables and the run report")
    p.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                   help="participants to run, with or without 'sub-' (default: all)")
    p.add_argument("--skip-bids-validation", action="store_true",
                   help="index every file, also those whose names pybids' BIDS validation rejects")
    p.add_argument("--derivatives", nargs="+", type=Path, metavar="DIR",
                   help="derivative datasets holding a desc-brain_mask per T1w (replaces skull stripping)")
    p.add_argument("--models-dir", type=Path, help="an existing models directory (e.g. from `dvc pull models`): "
                   "the learned methods read their weights there and nothing is trained")
    p.add_argument("-w", "--work-dir", type=Path, help="the Snakemake working folder: the simulated cohort, "
                   "work files, logs (default: OUTPUT_DIR/work)")
    p.add_argument("--configfile", type=Path, help="a complete config to start from (default: the embedded "
                   "config/config.yaml)")
    p.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, dotted keys and YAML values: segment.methods=[kmeans,atropos] seed=3")
    p.add_argument("--cores", default="all", help="Snakemake --cores (default: all)")
    p.add_argument("--profile", help="a Snakemake profile (e.g. slurm, slurm-gres: `mrichain profile install`)")
    p.add_argument("--stop-on-first-error", action="store_true",
                   help="stop at the first failed job (default: keep going with the other participants)")
    p.add_argument("-n", "--dry-run", action="store_true", help="print what would run; run nothing")
    p.add_argument("--version", action="version", version=f"mrichain {__version__}")
    return p


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """``config`` with each ``dotted.key=yaml value`` set (a copy). Raises UserError naming a bad
    override: no ``=``, or a key below a value that is not a mapping."""
    out = copy.deepcopy(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--config {item!r}: expected KEY=VALUE (e.g. segment.methods=[kmeans,atropos])")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--config {item!r}: {part!r} is not a mapping in the config")
        node[parts[-1]] = yaml.safe_load(value)
    return out


def run_config(a: argparse.Namespace) -> dict:
    """The run's config: the base config, its ``input`` section set from the arguments, then the
    ``--config`` overrides; validated (:class:`mrichain.plan.config.ConfigError` names the key)."""
    from mrichain.plan.config import ROOT, ConfigError, validate_config

    base = a.configfile or ROOT / "config" / "config.yaml"
    try:
        config = yaml.safe_load(Path(base).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"--configfile {base}: cannot read it as YAML ({e.__class__.__name__})") from e
    if not isinstance(config, dict):
        raise UserError(f"--configfile {base}: not a mapping of config keys")
    inp = {"kind": "bids", "bids_dir": str(a.bids_dir.resolve()), "output_dir": str(a.output_dir.resolve())}
    if a.participant_label:
        inp["participant_label"] = [lab.removeprefix("sub-") for lab in a.participant_label]
    if a.skip_bids_validation:
        inp["validate"] = False
    if a.derivatives:
        inp["derivatives"] = [str(d.resolve()) for d in a.derivatives]
    if a.models_dir:
        inp["models_dir"] = str(a.models_dir.resolve())
    config = apply_overrides({**config, "input": inp}, a.config)
    try:
        validate_config(config)
    except ConfigError as e:
        raise UserError(f"config: {e}") from e
    return config


def check_dataset(config: dict, work: Path) -> int:
    """Discover the dataset's T1w images as the workflow will (pybids), and check that neither the
    derivatives nor the work folder lie inside the raw dataset; the number of images. Raises
    UserError naming the path or the label (missing dataset, unknown participant, no T1w)."""
    from mrichain.realdata.bids import discover_t1w
    from mrichain.realdata.derivatives import inside_raw_dataset

    inp = config["input"]
    for what, path in (("OUTPUT_DIR", inp["output_dir"]), ("--work-dir", str(work))):
        if inside_raw_dataset(path, inp["bids_dir"]):
            raise UserError(f"{what} {path} is inside the BIDS dataset {inp['bids_dir']} and outside its "
                            "derivatives/<pipeline>: the raw dataset is never written to")
    images = discover_t1w(inp["bids_dir"], inp.get("participant_label") or None, inp.get("derivatives") or (),
                          validate=inp.get("validate", True))
    return len(images)


def snakemake_command(a: argparse.Namespace, work: Path, config_path: Path, *extra: str) -> list[str]:
    from mrichain.plan.config import ROOT

    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(config_path), "--cores", str(a.cores)]
    if a.profile:
        cmd += ["--profile", a.profile]
    if not a.stop_on_first_error:
        cmd.append("--keep-going")
    return cmd + list(extra)


def copy_group_outputs(work: Path, output_dir: Path) -> list[Path]:
    """Copy the group tables (:data:`GROUP_FILES` that exist) to ``OUTPUT_DIR/group/``."""
    dest = output_dir / GROUP_DIR
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for rel in GROUP_FILES:
        src = work / rel
        if src.is_file():
            name = ("realdata_" if "realdata" in rel else "cohort_") + src.name
            shutil.copyfile(src, dest / name)
            copied.append(dest / name)
    return copied


def main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    try:
        output_dir = a.output_dir.resolve()
        work = (a.work_dir or output_dir / "work").resolve()
        config = run_config(a)
        n_images = check_dataset(config, work)
    except UserError as e:
        print(f"mrichain {a.analysis_level}: error: {e}", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / CONFIG_NAME
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"mrichain {a.analysis_level}: {n_images} T1w image(s) of {config['input']['bids_dir']}; "
          f"config {config_path}; work folder {work}", file=sys.stderr)
    if a.dry_run:
        return 0 if subprocess.run(snakemake_command(a, work, config_path, "-n", TARGETS[a.analysis_level])
                                   ).returncode == 0 else 1
    output_dir.mkdir(parents=True, exist_ok=True)
    if subprocess.run(snakemake_command(a, work, config_path, TARGETS[a.analysis_level])).returncode != 0:
        return 1
    if a.analysis_level == "group":
        report = output_dir / "report.html"
        if subprocess.run(snakemake_command(a, work, config_path, "--report", str(report))).returncode != 0:
            return 1
        for path in copy_group_outputs(work, output_dir):
            print(f"mrichain group: wrote {path}", file=sys.stderr)
        print(f"mrichain group: wrote {report}", file=sys.stderr)
    return 0
