# Thin glue from the rules to the package: the run's plan (subjects, splits, acquisitions, which
# methods run where, what each job reads) is mrichain.plan.manifests.Plan, the stages and methods are
# declared once in mrichain.plan.stages, and every path comes from mrichain.plan.layout.
import dataclasses
import functools
import json
import shlex

from mrichain.plan import layout
from mrichain.plan.config import method_params, train_params
from mrichain.realdata.domain import check_models_dir
from mrichain.realdata.plan import WORK as WORK_REAL, WORK_SUFFIX as REAL_WORK_SUFFIX, RealPlan
from mrichain.plan.manifests import MANIFEST_NAMES, Plan, canonical, manifest_files, manifest_path, write_manifest
from mrichain.plan.stages import MOTION, STAGE_NAMES, is_learned, stage

PLAN = Plan(config)
if PLAN.models_root != layout.MODELS:  # input.models_dir: its cards checked before any job
    check_models_dir(config, PLAN.learned_run(), PLAN.models_root)
REAL = RealPlan(config, PLAN)  # real inputs (config input.kind bids | fastmri); none for simulated
SUBJECTS = PLAN.subjects
ACQS = PLAN.acqs
C = PLAN.contrast


def subject_group(stage_name=None):
    """Group function of a per-subject rule (profiles/slurm packs `group-components` subjects'
    chains of one group into one SLURM job).

    Only jobs that wait for no trained model are grouped: each subject's chain up to its first
    learned method, a component of bounded size. A job that reads a model (its method is learned,
    or a learned feed upstream) stays ungrouped: Snakemake walks everything upstream of every job
    of a group (dag._check_groups), and a model's upstream is the whole training cohort, which
    made the DAG quadratic in the cohort. Subjects that training reads and test subjects are
    separate groups: a SLURM job holding both could wait for training that waits for it. Jobs at
    a sweep condition, the oracle or an MR fingerprinting condition (mrichain.plan.conditions) stay
    ungrouped too: their input comes from a tuned or learned reconstruction, from the ground truth
    or from the MRF maps, not from the subject's chain.
    """

    def group(wildcards):
        if stage_name is not None and PLAN.reads_model(stage_name, wildcards.get("method")):
            return None
        if PLAN.test_only(wildcards.get("acq")):
            return None
        return "subjects_test" if PLAN.splits[wildcards.sub] == "test" else "subjects_fit"

    return group


def config_json(*keys, drop=()):
    """JSON of the config sections a job depends on (a param; other sections do not rerun it).
    ``drop``: "section.key" entries left out (an acquisition job does not depend on which other
    accelerations the config lists: adding one must not rerun the others)."""
    cfg = {k: dict(config[k]) if isinstance(config[k], dict) else config[k] for k in keys}
    for entry in drop:
        section, _, key = entry.partition(".")
        cfg[section].pop(key, None)
    return json.dumps(cfg, sort_keys=True)


def motion_acquire_json(label):
    """The acquisition's config for a motion condition's job: seed and acquire, with only its own
    level under acquire.motion.levels (and no accelerations list, as rule acquire)."""
    cfg = json.loads(config_json("seed", "acquire", drop=("acquire.accelerations", "acquire.center_fractions")))
    level = PLAN.motion_conditions[label].level
    cfg["acquire"]["motion"] = {**config["acquire"]["motion"], "levels": {level: config["acquire"]["motion"]["levels"][level]}}
    return json.dumps(cfg, sort_keys=True)


def params_json(stage_name, method):
    """Keyword arguments of a method at inference. A learned method's params are its training
    settings and architecture (read back from the model card); only its `infer` sub-mapping is
    passed to inference."""
    p = method_params(config, stage_name, method)
    return json.dumps(p.get("infer", {}) if is_learned(stage_name, method) else p, sort_keys=True)


def train_params_json(stage_name, method):
    return json.dumps(train_params(config, stage_name, method), sort_keys=True)


def train_domain_json(stage_name, method):
    """The training job's --domain: JSON of PLAN.train_domain (null: none)."""
    return json.dumps(PLAN.train_domain(stage_name, method), sort_keys=True)


def method_inputs(stage_name):
    """Input function of a method's job: what the stage declares it reads (+ a learned model)."""
    return lambda wc: PLAN.method_inputs(stage_name, wc.method, getattr(wc, "sub", None), wc.acq)


def method_outputs(stage_name):
    return PLAN.outputs(stage_name)


def shell_options(options):
    """``--key value`` shell arguments of ``{key: value}`` (None values left out), every value
    shell-quoted: a path from a dataset written elsewhere may hold spaces, ``;`` or ``$(...)``."""
    return " ".join(f"--{k} {shlex.quote(str(v))}" for k, v in options.items() if v is not None)


def fitted_args(stage_name):
    """Shell arguments naming what a method's job uses that was fitted on the cohort: a learned
    method's trained model, a tuned method's tuning card (rule tune), as PLAN.fitted names them."""

    def args(wc):
        return shell_options(PLAN.fitted(stage_name, wc.method))

    return args


def job_log(stage_name):
    return layout.log(stage_name, layout.job_name(stage(stage_name)))


def job_benchmark(stage_name):
    return layout.benchmark(stage_name, layout.job_name(stage(stage_name)))


# Real inputs (workflow/rules/realdata.smk)
REAL_STAGE = dict(zip(REAL_WORK_SUFFIX.values(), REAL_WORK_SUFFIX))
"""The structural image stage of a work file's suffix (rule real_image_stage)."""


def real_fitted_files(stage_name):
    """The model or tuning card a real input's job waits for (+ a model's card, which it checks)."""

    def files(wc):
        fitted = PLAN.fitted(stage_name, wc.method)
        return list(fitted.values()) + ([PLAN.model(stage_name, wc.method, ".json")] if "model" in fitted else [])

    return files


def mrf_gt_dir(wildcards, input):
    """The subject's ground-truth folder, for the MRF jobs (MrfPlan.groundtruth's inputs sit in it)."""
    return str(Path(input.gt_info).parent)


# Per-subject pages (workflow/rules/subject_report.smk) and the methods text (citation.smk)
@functools.lru_cache(maxsize=None)
def sim_report_manifest(sub):
    """What a simulated test subject's page shows (mrichain.scoring.subject_report), keys sorted."""
    from mrichain.scoring import subject_report

    return canonical(subject_report.sim_manifest(PLAN, sub))


@functools.lru_cache(maxsize=None)
def real_report_manifest(label):
    """What a real BIDS subject's page shows, keys sorted."""
    from mrichain.scoring import subject_report

    return canonical(subject_report.real_manifest(REAL, label))


def citation_cards():
    """The model cards of the learned methods the run trains (or reads from input.models_dir),
    MR fingerprinting's DRONE included, and the tuning cards of its tuned methods: what the
    methods text reads."""
    cards = [PLAN.model(s, m, ".json") for s, m in PLAN.learned_run()]
    if PLAN.mrf and PLAN.mrf.trains:
        cards.append(PLAN.model("mrf", "drone", ".json"))
    return cards + [layout.tuning(s, m) for s, m in PLAN.tuned_run()]
