# mrichain: the MRI chain as one Snakemake DAG.
# simulate -> acquire -> reconstruct -> denoise -> {register, segment} -> predict, every stage scored.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from mrichain.config import validate_config

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names another (then that file must be complete:
# a missing key is an error, not silently filled from the default).
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


report: "workflow/report/workflow.rst"


# Fails before any job, naming the key and the allowed values.
validate_config(config)


include: "workflow/rules/common.smk"


wildcard_constraints:
    sub=r"sub-\d+",
    acq=r"R\d+",
    method=r"[a-z0-9]+",
    stage="|".join(STAGES),


include: "workflow/rules/simulate.smk"
include: "workflow/rules/acquire.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/denoise.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        "results/metrics.json",
        "results/metrics_by_acq.json",
        "results/metrics/summary.tsv",
        "results/comparison.tsv",
    default_target: True


# Named targets for the DVC stages (dvc.yaml): `snakemake cohort` builds the simulated cohort
# (template, ground truth, k-space), `snakemake models` trains every learned method of the config.
rule cohort:
    input:
        rules.template.output,
        [f for s in SUBJECTS for f in gt_files(s).values()],
        expand(KSPACE, sub=SUBJECTS, acq=list(ACQS)),
        expand(NOISEFREE, sub=SUBJECTS, acq=list(ACQS)),


rule models:
    input:
        [f"{MODEL}.{ext}".format(stage=s, method=m) for s, m in LEARNED_RUN for ext in ("pt", "json")],
