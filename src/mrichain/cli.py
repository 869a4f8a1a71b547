"""Command line: one sub-command per rule, each a thin adapter from files to package functions.

Snakemake rules call ``mrichain <command> ...``; the same commands work by hand on any file in
the pipeline's formats (for example a real fastMRI file for ``reconstruct``, or a BIDS T1w for
``denoise``/``segment``). Heavy libraries are imported inside each command to keep start-up short.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from mrichain import UserError

log = logging.getLogger("mrichain")

CONTRASTS = ("T1w", "T2w")
"""The contrasts the chain simulates and its methods take (:data:`mrichain.simulate.signal.CONTRASTS`)."""

INPUT_OPTIONS = ("input", "moving", "fixed", "labels", "kspace", "manifest", "model", "tuning", "prep", "mask",
                 "dictionary", "image", "gt_dir", "template_dir", "scores", "recons", "benchmarks", "comparison",
                 "differences", "budget_png")
"""Options (argparse ``dest``) that name a file or directory a command reads. An output option is
``output``, ``out``, ``outdir`` or ``out_*``; no output may be the same file as an input."""


class UsageError(UserError, ValueError):
    """A command line the parser accepts but the command refuses before reading or writing anything
    (an output that is one of the inputs, a method the stage does not train)."""


def _is_output_option(dest: str) -> bool:
    return dest in ("output", "out", "outdir") or dest.startswith("out_")


def _paths(value) -> list[str]:
    """The path(s) an option holds: a string, a list of strings (``nargs``), else none (flags, numbers)."""
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)):
        return [os.fspath(v) for v in value if isinstance(v, (str, os.PathLike))]
    return []


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file: equal once symlinks and ``..`` are resolved, or
    (both existing) the same inode (a hard link)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def refuse_output_over_input(a: argparse.Namespace) -> None:
    """Raise :class:`UsageError` if any output option of the parsed command line names the same
    file as an input option (:data:`INPUT_OPTIONS`), under any spelling: writing it would destroy
    the input."""
    inputs = [(dest, p) for dest in INPUT_OPTIONS for p in _paths(getattr(a, dest, None))]
    for dest, value in vars(a).items():
        if not _is_output_option(dest):
            continue
        for out in _paths(value):
            for in_dest, inp in inputs:
                if _same_file(out, inp):
                    raise UsageError(f"{_flag(dest)} {out} is the same file as {_flag(in_dest)} {inp}: an output "
                                     "may not overwrite an input; write it to another path")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _threads(n: int) -> None:
    """Limit ITK/BLAS/torch threads to what the rule declared (torch is very slow oversubscribed)."""
    for var in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:  # torch reads OMP_NUM_THREADS at import; later, set it directly
        sys.modules["torch"].set_num_threads(n)


def cmd_template(a):
    from mrichain.simulate.template import build_template, write_template

    paths = write_template(build_template(a.resolution), a.outdir)
    log.info("template written: %s", {k: str(v) for k, v in paths.items()})


def cmd_subject(a):
    from mrichain.simulate.cohort import simulate_subject, write_subject
    from mrichain.simulate.template import read_template

    cfg = json.loads(a.config_json)
    subject = simulate_subject(read_template(a.template_dir), a.sub, cfg)
    write_subject(subject, a.outdir)
    log.info("%s simulated into %s", a.sub, a.outdir)


def cmd_acquire(a):
    from mrichain.io import save_image, write_kspace
    from mrichain.simulate.acquire import simulate_acquisition

    cfg = json.loads(a.config_json)
    kfile, noisefree = simulate_acquisition(Path(a.gt_dir), a.sub, cfg, a.acceleration, a.center_fraction,
                                            motion_level=a.motion_level)
    write_kspace(a.out_kspace, kfile)
    if a.out_noisefree:
        save_image(noisefree.get_fdata(dtype="float32"), noisefree.affine, a.out_noisefree)
    log.info("k-space %s written, shape %s", a.out_kspace, kfile.kspace.shape)


def _params(a) -> dict:
    """A job's keyword arguments: ``--params`` JSON, with the values its tuning card chose
    (``--tuning``, rule ``tune``) over them."""
    from mrichain.train.tune import tuned_params

    params = json.loads(a.params)
    return tuned_params(params, a.tuning, stage=a.command, method=a.method) if getattr(a, "tuning", None) else params


def _check_domain(a) -> None:
    """``--real-input``: a learned method's card against the real input (mrichain.realdata.domain)."""
    if a.real_input and a.model:
        from mrichain.realdata.domain import check_file

        for msg in check_file(a.model, a.input, a.real_input):
            log.warning("%s", msg)


def cmd_reconstruct(a):
    from mrichain.jobs import run_job

    _threads(a.threads)
    _check_domain(a)
    run_job("reconstruct", a.method, {"kspace": a.input}, {"image": a.output}, _params(a), model=a.model,
            acceleration=a.acceleration, center_fraction=a.center_fraction, seed=a.seed)


def cmd_image_stage(a):
    """Image in, image out, for any declared stage whose job reads one image (denoise, segment)."""
    from mrichain.jobs import run_job
    from mrichain.plan.stages import stage

    _threads(a.threads)
    _check_domain(a)
    run_job(a.command, a.method, {"image": a.input}, {stage(a.command).primary_output: a.output}, _params(a),
            model=a.model, threads=a.threads, contrast=a.contrast)


def cmd_register(a):
    from mrichain.jobs import run_job

    _threads(a.threads)
    run_job("register", a.method, {"moving": a.moving, "fixed": a.fixed, "labels": a.labels},
            {"image": a.out_image, "labels": a.out_labels, "jacobian": a.out_jacobian, "timing": a.out_timing},
            _params(a), model=a.model, threads=a.threads, seed=a.seed)


def cmd_motion(a):
    from mrichain.jobs import run_job

    _threads(a.threads)
    run_job("motion", a.method, {"kspace": a.input}, {"image": a.out_image, "shots": a.out_shots}, _params(a),
            model=a.model, threads=a.threads)


def _manifest(path) -> dict:
    """A job's manifest file (``results/manifests/...``), with an error naming it if unreadable."""
    from mrichain.io import InputImageError, load_json

    try:
        return load_json(path)
    except (OSError, ValueError) as exc:
        raise InputImageError(f"{path}: cannot read the manifest ({exc})") from exc


def cmd_predict(a):
    from mrichain.jobs import run_job

    run_job("predict", a.method, {"manifest": _manifest(a.manifest)},
            {"predictions": a.out_predictions, "model": a.out_model}, _params(a), model=a.model)


def cmd_tune(a):
    from mrichain.train.tune import tune

    _threads(a.threads)
    card = tune(_manifest(a.manifest), json.loads(a.grid), json.loads(a.params), a.out, seed=a.seed,
                threads=a.threads)
    log.info("tuned %s-%s on %d val subjects: %s = %.4g with %s", card["stage"], card["method"],
             len(card["subjects"]), card["metric"], card["chosen_score"], card["chosen"])


def cmd_train(a):
    from mrichain.plan.stages import stage, trainer_registry

    learned = [m.name for m in stage(a.stage).methods if m.learned]
    if a.method not in learned:
        raise UsageError(f"--method {a.method} is not a learned method of stage {a.stage}; "
                         f"its learned methods: {', '.join(learned)}")
    _threads(a.threads)
    trainer = trainer_registry(a.stage)[a.method]
    result = trainer(_manifest(a.manifest), json.loads(a.params), a.out, a.seed)
    domain = json.loads(a.domain) if a.domain else None
    if domain:  # what it was trained on, for the checks before it runs on a real input
        from mrichain.io import load_json, save_json
        from mrichain.realdata.domain import card_path

        card = load_json(card_path(a.out))
        save_json({**card, "domain": domain}, card_path(a.out))
    log.info("trained %s-%s: best val %.4g at epoch %d of %d, %.1f s on %s", a.stage, a.method,
             result.best_score, result.best_epoch, result.epochs_run, result.wall_seconds, result.device)


def cmd_mrf_dictionary(a):
    from mrichain.mrf.run import write_dictionary

    info = write_dictionary(json.loads(a.mrf), a.out)
    log.info("MRF dictionary: %d atoms, SVD rank %d, quantisation error %.2f %%, %.1f s", info["atoms"],
             info["rank"], 100 * info["quantisation_error"], info["seconds"])


def cmd_mrf_map(a):
    from mrichain.mrf.run import map_subject

    _threads(a.threads)
    outputs = {"T1map": a.out_t1map, "T2map": a.out_t2map, "PDmap": a.out_pdmap, "T1w": a.out_synthetic,
               "timing": a.out_timing}
    t = map_subject(a.method, a.gt_dir, a.dictionary, json.loads(a.mrf), a.seed, outputs, contrast=a.contrast,
                    seq_params=json.loads(a.sequence), model=a.model, threads=a.threads)
    log.info("MRF %s: %d voxels on %d slices mapped in %.3f s", a.method, t["n_voxels"], len(t["slices"]), t["seconds"])


def cmd_mrf_slab(a):
    from mrichain.mrf.run import write_slab

    write_slab(a.image, a.gt_dir, json.loads(a.mrf), a.out)


def cmd_mrf_score(a):
    from mrichain.mrf.run import score

    score(_manifest(a.manifest), a.out_tsv, a.out_downstream, a.out_figures)


def cmd_score(a):
    from mrichain.scoring.evaluate import score_stage

    manifest = _manifest(a.manifest)
    table = score_stage(manifest, benchmarks_dir=a.benchmarks, figures_dir=a.out_figures)
    Path(a.out_tsv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(a.out_tsv, sep="\t", index=False, float_format="%.6g")


def cmd_aggregate(a):
    from mrichain.scoring.aggregate import aggregate

    aggregate(a.scores, a.primary_acq, a.out_metrics, a.out_by_acq, a.out_summary, a.out_comparison,
              out_differences=a.out_differences, seed=a.seed)


def cmd_budget(a):
    from mrichain.scoring.budget import write_budget
    from mrichain.plan.conditions import Condition

    conds = {k: Condition(**v) for k, v in json.loads(a.conditions).items()}
    write_budget(a.scores, conds, a.feed, a.out_budget, a.out_sweep, a.out_limits, a.out_budget_png,
                 a.out_sweep_png, seed=a.seed)


def cmd_motion_budget(a):
    from mrichain.plan.conditions import MotionCondition
    from mrichain.scoring.motion_budget import write_motion_budget

    conds = {k: MotionCondition(**v) for k, v in json.loads(a.conditions).items()}
    write_motion_budget(a.scores, conds, json.loads(a.levels), a.out_budget, a.out_limits, a.out_png, seed=a.seed)


def cmd_prepare(a):
    from mrichain.realdata.run import prepare_file

    _threads(a.threads)
    prepare_file(a.input, target_mm=a.resolution, mask=a.mask, age=a.age, threads=a.threads, out_image=a.out_image,
                 out_mask=a.out_mask, out_prep=a.out_prep, out_info=a.out_info)


def cmd_restore(a):
    from mrichain.realdata.run import restore_file

    restore_file(a.input, a.prep, a.output, labels=a.labels)


def cmd_fastmri_score(a):
    from mrichain.realdata.run import score_fastmri

    score_fastmri(a.kspace, dict(zip(a.methods, a.recons, strict=True)), a.out, key=a.key, acq=a.acq)


def cmd_real_summary(a):
    from mrichain import __version__
    from mrichain.realdata.run import summarise

    out = {"metrics": a.out_metrics, "table": a.out_table, "description": a.out_description}
    if a.out_brain_age:
        out["brain_age"] = a.out_brain_age
    summarise(_manifest(a.manifest), out, version=__version__)


def cmd_overview(a):
    from mrichain.scoring.overview import write_overview

    write_overview(a.comparison, a.differences, a.primary_acq, a.out, a.budget_png)


def cmd_subject_report(a):
    from mrichain.scoring.subject_report import build_page, load_manifest

    page = build_page(load_manifest(a.manifest), a.out_html, a.out_figures, manifest_path=a.manifest)
    log.info("subject report written: %s (figures in %s)", page, a.out_figures)


def cmd_citation(a):
    from mrichain.citation import write_citation

    keys = write_citation(_manifest(a.manifest), a.out_md, a.out_bib)
    log.info("methods text %s and %d references %s written", a.out_md, len(keys), a.out_bib)


def cmd_profile(a):
    from mrichain.profile import ProfileError, install_profile

    try:
        print(install_profile(a.name, dest=a.dest, force=a.force).message)
    except ProfileError as exc:  # a refusal, not a crash: the reason on stderr, exit status 1
        sys.exit(f"mrichain profile {a.action}: error: {exc}")


USAGE = """mrichain BIDS_DIR OUTPUT_DIR {participant,group} [options]
       mrichain COMMAND [options]"""
BIDS_APP_HELP = """As a BIDS App, mrichain runs the MRI chain on a BIDS dataset's T1w images, beside the
simulated cohort that trains and scores its methods, and writes BIDS derivatives:

  mrichain /data/study /data/study/derivatives/mrichain participant --participant-label 01 02
  mrichain /data/study /data/study/derivatives/mrichain group

(`mrichain BIDS_DIR OUTPUT_DIR participant --help` lists its options.) The commands below run
one stage on one file, as the workflow's rules call them."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mrichain", usage=USAGE, description=BIDS_APP_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    s = sub.add_parser("template", help="resample and crop the MNI152 template + tissue maps")
    s.add_argument("--resolution", type=float, required=True)
    s.add_argument("--outdir", required=True)
    s.set_defaults(func=cmd_template)

    s = sub.add_parser("subject", help="simulate one subject's ground truth")
    s.add_argument("--config-json", required=True)
    s.add_argument("--sub", required=True)
    s.add_argument("--template-dir", required=True)
    s.add_argument("--outdir", required=True)
    s.set_defaults(func=cmd_subject)

    s = sub.add_parser("acquire", help="simulate multi-coil undersampled k-space (fastMRI HDF5)")
    s.add_argument("--config-json", required=True)
    s.add_argument("--sub", required=True)
    s.add_argument("--gt-dir", required=True)
    s.add_argument("--acceleration", type=float, required=True)
    s.add_argument("--center-fraction", type=float, required=True)
    s.add_argument("--motion-level", default=None,
                   help="a level of acquire.motion.levels: the head moves during the scan (poses recorded in the file)")
    s.add_argument("--out-kspace", required=True)
    s.add_argument("--out-noisefree", help="the noise-free image (not written when absent: a motion acquisition "
                                           "shares its still acquisition's)")
    s.set_defaults(func=cmd_acquire)

    from mrichain.plan.stages import ALL_STAGES, METHOD_STAGES, MRF_STAGE, stage

    # One sub-command per declared stage whose job reads one file and writes one (mrichain.plan.stages):
    # k-space -> image (reconstruct), image -> image (denoise, segment, and any such new stage).
    for st in METHOD_STAGES:
        if not (st.per_subject and len(st.reads) == 1 and len(st.outputs) == 1):
            continue
        s = sub.add_parser(st.name, help=f"{st.name} one file with the named method")
        s.add_argument("--method", required=True, choices=st.method_names)
        s.add_argument("--params", default="{}", help="JSON keyword arguments of the method")
        s.add_argument("--input", required=True)
        s.add_argument("--output", required=True)
        s.add_argument("--model", help=f"trained weights of a learned method (models/{st.name}-<method>.pt)")
        s.add_argument("--tuning", help=f"tuning card of a classical method (results/tuning/{st.name}-<method>.json)")
        s.add_argument("--threads", type=int, default=1)
        s.add_argument("--contrast", default="T1w", choices=CONTRASTS, help="for methods that use it")
        s.add_argument("--real-input", metavar="SUFFIX",
                       help="the input is a real scan of this BIDS suffix (T1w, FLAIR...): a learned method's "
                            "card is checked against it first (contrast refused, voxel size and coils warned)")
        if "kspace" in st.reads:
            s.add_argument("--acceleration", type=float,
                           help="undersample a fully sampled fastMRI file retrospectively (one seeded mask per volume)")
            s.add_argument("--center-fraction", type=float,
                           help="of the retrospective mask (default: fastMRI's 0.08 at R4, 0.04 at R8)")
            s.add_argument("--seed", type=int, default=0, help="seeds the retrospective mask")
        s.set_defaults(func=cmd_reconstruct if "kspace" in st.reads else cmd_image_stage)

    s = sub.add_parser("register", help="register a subject image to the template, carrying labels")
    s.add_argument("--method", required=True, choices=stage("register").method_names)
    s.add_argument("--params", default="{}")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--moving", required=True)
    s.add_argument("--fixed", required=True)
    s.add_argument("--labels")
    s.add_argument("--model", help="trained weights of a learned method")
    s.add_argument("--tuning", help="tuning card of a classical method (results/tuning/register-<method>.json)")
    s.add_argument("--out-image", required=True)
    s.add_argument("--out-labels")
    s.add_argument("--out-jacobian", required=True)
    s.add_argument("--out-timing", required=True)
    s.set_defaults(func=cmd_register)

    s = sub.add_parser("motion", help="correct a moving head's k-space (mrichain acquire --motion-level) with the named method")
    s.add_argument("--method", required=True, choices=stage("motion").method_names)
    s.add_argument("--params", default="{}", help="JSON keyword arguments of the method")
    s.add_argument("--input", required=True, help="the moving head's k-space (HDF5 with motion_shot)")
    s.add_argument("--out-image", required=True)
    s.add_argument("--out-shots", required=True, help="TSV: each shot's acquired lines and detection score")
    s.add_argument("--model", help="trained weights of a learned method (models/motion-<method>.pt)")
    s.add_argument("--tuning", help="tuning card of a classical method (results/tuning/motion-<method>.json)")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_motion)

    s = sub.add_parser("predict", help="fit brain age on the train split and predict every subject")
    s.add_argument("--method", required=True, choices=stage("predict").method_names)
    s.add_argument("--params", default="{}")
    s.add_argument("--manifest", required=True,
                   help="JSON file {subjects: [...], splits: {subject: split}, info: [...], labels | images: [...]}, "
                        "one path per subject (results/manifests/job/...)")
    s.add_argument("--model", help="trained weights of an image model")
    s.add_argument("--tuning", help="tuning card of a classical method (results/tuning/predict-<method>.json)")
    s.add_argument("--out-predictions", required=True)
    s.add_argument("--out-model", required=True)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("tune", help="tune a classical method's parameters on the val split (grid search)")
    s.add_argument("--manifest", required=True, help="JSON file: the val subjects' inputs (results/manifests/tune/...)")
    s.add_argument("--grid", required=True, help="JSON {parameter: [values]} (config <stage>.tune.<method>)")
    s.add_argument("--params", default="{}", help="JSON of the method's fixed parameters")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True, help="the tuning card, results/tuning/<stage>-<method>.json")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("prepare", help="a real T1w (any orientation, skull on) -> the chain's input (RAS, N4, "
                       "skull stripped, at the cohort's voxel size)")
    s.add_argument("--input", required=True)
    s.add_argument("--mask", help="a user brain mask (BIDS desc-brain_mask): replaces skull stripping")
    s.add_argument("--age", type=float, help="years (participants.tsv), recorded for brain age")
    s.add_argument("--resolution", type=float, required=True, help="voxel size the models were trained at (mm)")
    s.add_argument("--threads", type=int, default=1)
    for out in ("image", "mask", "prep", "info"):
        s.add_argument(f"--out-{out}", required=True)
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("restore", help="an output on the prepared grid -> the real input's grid and voxel order")
    s.add_argument("--input", required=True)
    s.add_argument("--prep", required=True, help="the PrepInfo JSON of `mrichain prepare`")
    s.add_argument("--output", required=True)
    s.add_argument("--labels", action="store_true", help="nearest neighbour (label maps)")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("fastmri-score", help="score reconstructions of a fastMRI file against its reconstruction_rss")
    s.add_argument("--kspace", required=True)
    s.add_argument("--methods", nargs="+", required=True, choices=stage("reconstruct").method_names)
    s.add_argument("--recons", nargs="+", required=True, help="one NIfTI per method, same order")
    s.add_argument("--key", default="")
    s.add_argument("--acq", default="")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_fastmri_score)

    s = sub.add_parser("real-summary", help="collect the real inputs' results: metrics, tables, derivatives description")
    s.add_argument("--manifest", required=True)
    for out in ("metrics", "table", "description"):
        s.add_argument(f"--out-{out}", required=True)
    s.add_argument("--out-brain-age", help="the brain-age table (inputs that run brain age)")
    s.set_defaults(func=cmd_real_summary)

    s = sub.add_parser("train", help="train a learned method on the train split, select on val")
    learned = {st.name: [m.name for m in st.methods if m.learned] for st in ALL_STAGES}
    s.add_argument("--stage", required=True, choices=[name for name, methods in learned.items() if methods])
    s.add_argument("--method", required=True, choices=sorted({m for methods in learned.values() for m in methods}),
                   help="a learned method of --stage")
    s.add_argument("--manifest", required=True, help="JSON file of what it trains on: {train: [...], val: [...]} "
                   "of input files and/or cohort-level files (mrf: {dictionary: path})")
    s.add_argument("--params", default="{}")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True, help="models/<stage>-<method>.pt")
    s.add_argument("--domain", help="JSON: what the training data was (contrast, voxel_mm, n_coils, snr), "
                   "added to the card (mrichain.realdata.domain); null: none (a method trained on no cohort "
                   "image: mrf drone, on the dictionary)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("mrf-dictionary", help="simulate and SVD-compress the MRF dictionary (HDF5)")
    s.add_argument("--mrf", required=True, help="JSON: the config's mrf section")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_mrf_dictionary)

    s = sub.add_parser("mrf-map", help="simulate one subject's fingerprints and map T1/T2/PD with one method")
    s.add_argument("--method", required=True, choices=list(MRF_STAGE.method_names))
    s.add_argument("--gt-dir", required=True)
    s.add_argument("--dictionary", required=True)
    s.add_argument("--model", help="DRONE's weights (method drone)")
    s.add_argument("--mrf", required=True, help="JSON: the config's mrf section")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--contrast", required=True, choices=CONTRASTS,
                   help="contrast of the synthetic image (acquire.contrast)")
    s.add_argument("--sequence", required=True, help="JSON: acquire.sequence[contrast]")
    s.add_argument("--threads", type=int, default=1)
    for out in ("t1map", "t2map", "pdmap", "synthetic", "timing"):
        s.add_argument(f"--out-{out}", required=True)
    s.set_defaults(func=cmd_mrf_map)

    s = sub.add_parser("mrf-slab", help="the acquired image on the voxels the MRF branch maps (0 elsewhere)")
    s.add_argument("--image", required=True)
    s.add_argument("--gt-dir", required=True)
    s.add_argument("--mrf", required=True, help="JSON: the config's mrf section")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_mrf_slab)

    s = sub.add_parser("mrf-score", help="score the MRF maps and the MRF-derived segmentations")
    s.add_argument("--manifest", required=True)
    s.add_argument("--out-tsv", required=True)
    s.add_argument("--out-downstream", required=True)
    s.add_argument("--out-figures", required=True)
    s.set_defaults(func=cmd_mrf_score)

    s = sub.add_parser("score", help="score one stage against ground truth and draw montages")
    s.add_argument("--manifest", required=True, help="JSON file: the files to score (results/manifests/score/...)")
    s.add_argument("--benchmarks", default="results/benchmarks")
    s.add_argument("--out-tsv", required=True)
    s.add_argument("--out-figures", required=True)
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("aggregate", help="collect stage scores into metrics.json")
    s.add_argument("--primary-acq", required=True)
    s.add_argument("--scores", nargs="+", required=True)
    s.add_argument("--out-metrics", required=True)
    s.add_argument("--out-by-acq", required=True)
    s.add_argument("--out-summary", required=True)
    s.add_argument("--out-comparison", help="side-by-side table at the primary acquisition")
    s.add_argument("--out-differences", help="paired differences (learned - classical, method - floor) with intervals")
    s.add_argument("--seed", type=int, default=0, help="seeds the bootstrap intervals")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("overview", help="the run report's first page: headline table and error-budget figure (rst)")
    s.add_argument("--comparison", required=True, help="results/comparison.tsv")
    s.add_argument("--differences", required=True, help="results/differences.tsv")
    s.add_argument("--primary-acq", required=True)
    s.add_argument("--budget-png", help="the error-budget figure to embed")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_overview)

    s = sub.add_parser("budget", help="error budget, acceleration sweep and acceleration limits from the scores")
    s.add_argument("--conditions", required=True, help="JSON {label: Condition fields} (mrichain.plan.conditions)")
    s.add_argument("--feed", required=True, choices=stage("reconstruct").method_names,
                   help="the reconstruction feed method (the plain acquisitions' recon)")
    s.add_argument("--scores", nargs="+", required=True)
    s.add_argument("--out-budget", required=True)
    s.add_argument("--out-sweep", required=True)
    s.add_argument("--out-limits", required=True)
    s.add_argument("--out-budget-png", required=True)
    s.add_argument("--out-sweep-png", required=True)
    s.add_argument("--seed", type=int, default=0, help="seeds the bootstrap intervals")
    s.set_defaults(func=cmd_budget)

    s = sub.add_parser("motion-budget", help="what motion costs downstream, with and without correction, and "
                                            "how much motion each correction absorbs")
    s.add_argument("--conditions", required=True,
                   help="JSON {label: MotionCondition fields} (mrichain.plan.conditions)")
    s.add_argument("--levels", required=True, help="JSON list: acquire.motion's levels, mild to severe")
    s.add_argument("--scores", nargs="+", required=True)
    s.add_argument("--out-budget", required=True)
    s.add_argument("--out-limits", required=True)
    s.add_argument("--out-png", required=True)
    s.add_argument("--seed", type=int, default=0, help="seeds the bootstrap intervals")
    s.set_defaults(func=cmd_motion_budget)

    s = sub.add_parser("subject-report", help="one subject's visual report: an HTML page and its PNG reportlets")
    s.add_argument("--manifest", required=True, help="JSON: what the page shows (mrichain.scoring.subject_report)")
    s.add_argument("--out-html", required=True)
    s.add_argument("--out-figures", required=True, help="folder of the page's PNG figures")
    s.set_defaults(func=cmd_subject_report)

    s = sub.add_parser("citation", help="the run's methods text (Markdown) and its references (BibTeX)")
    s.add_argument("--manifest", required=True, help="JSON: the run's methods, card paths, seed and cohort "
                   "(mrichain.citation.citation_manifest; rule citation_manifest)")
    s.add_argument("--out-md", required=True, help="CITATION.md")
    s.add_argument("--out-bib", required=True, help="CITATION.bib: exactly the entries the text cites")
    s.set_defaults(func=cmd_citation)

    s = sub.add_parser("profile", help="Snakemake profiles shipped in profiles/")
    s.add_argument("action", choices=["install"], help="install: copy profiles/NAME to where "
                   "`snakemake --profile NAME` finds it ($XDG_CONFIG_HOME/snakemake/NAME or ~/.config/snakemake/NAME)")
    s.add_argument("name", help="profile name, e.g. slurm")
    s.add_argument("--dest", help="the profile directory to write instead (e.g. /etc/xdg/snakemake/slurm)")
    s.add_argument("--force", action="store_true", help="replace an existing profile that differs")
    s.set_defaults(func=cmd_profile)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv and not argv[0].startswith("-") and argv[0] not in commands:  # BIDS_DIR OUTPUT_DIR LEVEL
        from mrichain.bids_app import main as bids_app

        return bids_app(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        refuse_output_over_input(args)
        args.func(args)
    except UserError as exc:  # one line (naming the file, or the fix) to the rule's log and stderr
        log.error("%s", exc)
        print(f"mrichain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    log.info("%s finished in %.1f s", args.command, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
