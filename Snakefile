# mrichain: the MRI chain as one Snakemake DAG.
# simulate -> acquire -> reconstruct -> denoise -> {register, segment} -> predict, every stage scored.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from mrichain.plan import layout
from mrichain.plan.conditions import ACQUISITION_WILDCARD as ACQUISITION, MOTION_ACQUIRED_WILDCARD as MOTION_ACQUIRED
from mrichain.plan.conditions import WILDCARD as CONDITION
from mrichain.plan.config import validate_config
from mrichain.provenance import CONFIG_HASH_ENV, config_sha256

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names another (then that file must be complete:
# a missing key is an error, not silently filled from the default).
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


# The report opens on the answer: the headline table the run writes (rule overview), once it exists;
# before that, the workflow's description.
OVERVIEW = Path(layout.report_overview()).resolve()


report: str(OVERVIEW) if OVERVIEW.is_file() else "workflow/report/workflow.rst"


# Fails before any job, naming the key and the allowed values.
validate_config(config)

# Recorded in every model and tuning card (mrichain.provenance): jobs inherit the environment.
os.environ[CONFIG_HASH_ENV] = config_sha256(config)


include: "workflow/rules/common.smk"


wildcard_constraints:
    sub=r"sub-\d+",
    acq=CONDITION,
    method=r"[a-z0-9]+",
    stage="|".join([*STAGE_NAMES, MOTION]),
    kind="|".join(MANIFEST_NAMES),
    name=r"[^/]+",


include: "workflow/rules/simulate.smk"


# One rule file per declared stage (mrichain.plan.stages): a new stage's file is picked up here.
for stage_name in STAGE_NAMES:

    include: f"workflow/rules/{stage_name}.smk"


include: "workflow/rules/train.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/evaluate.smk"


if REAL.active:

    include: "workflow/rules/realdata.smk"


if PLAN.mrf:

    include: "workflow/rules/mrf.smk"


if PLAN.motion_conditions:

    include: "workflow/rules/motion.smk"


# Per-subject pages and the run's methods text (after realdata.smk: both read REAL).
include: "workflow/rules/subject_report.smk"
include: "workflow/rules/citation.smk"


rule all:
    input:
        rules.aggregate.output,
        rules.budget.output,
        rules.overview.output,
        SUBJECT_REPORTS_SIM,
        SUBJECT_REPORTS_REAL,
        CITATION_TARGETS,
        rules.real_summary.output if REAL.active else [],
        PLAN.mrf.targets() if PLAN.mrf else [],
        rules.motion_budget.output if PLAN.motion_conditions else [],
    default_target: True


# The BIDS-App participant level (`mrichain BIDS_DIR OUTPUT_DIR participant`, mrichain.bids_app): the
# chosen participants' derivatives and what they need of the cohort (trained models, tuning
# cards); its group level is rule all.
rule participant:
    input:
        REAL.outputs(),
        SUBJECT_REPORTS_REAL,
        CITATION_TARGETS if REAL.active else [],


# Named targets for the DVC stages (dvc.yaml): `snakemake cohort` builds the simulated cohort
# (template, ground truth, k-space), `snakemake models` trains every learned method of the config.
# The age subjects (cohort.n_age_train_subjects) are acquired only as the age models read them.
rule cohort:
    input:
        rules.template.output,
        [f for s in SUBJECTS + PLAN.age_subjects for f in layout.groundtruth_files(s).values()],
        expand(layout.kspace(C), sub=SUBJECTS, acq=list(ACQS)),
        expand(layout.noisefree(C), sub=SUBJECTS, acq=list(ACQS)),
        expand(layout.kspace(C), sub=PLAN.age_subjects, acq=PLAN.train_acqs(stage("predict"))[:1]),


rule models:
    input:
        [PLAN.model(s, m, suffix) for s, m in PLAN.learned_run() for suffix in (".pt", ".json")],
        [layout.tuning(s, m) for s, m in PLAN.tuned_run()],
        PLAN.mrf.fitted() if PLAN.mrf else [],
