"""Where every file of a run lives: one path builder, used by the rules and by the code.

Like snakebids' ``bids()`` (hippunfold), a file name is defined once. Arguments left at their
default (``"{sub}"``, ``"{acq}"``, ``"{method}"``) stay Snakemake wildcards, so the same call
gives a rule's output pattern or one concrete path::

    bids("results/denoise", sub="sub-003", acq="R4", desc="antsnlm", suffix="T1w")
    -> "results/denoise/sub-003/sub-003_acq-R4_desc-antsnlm_T1w.nii.gz"

Stage first, then subject: each stage's products sit in one directory, which DVC tracks as one
output (``dvc.yaml``). Paths are relative to the Snakemake working directory.

Import-light (standard library only): the Snakefile reads it at parse time.
"""
from __future__ import annotations

RESULTS = "results"
MODELS = "models"
TEMPLATE_NAME = "tpl-MNI152NLin2009aSym"
SUB, ACQ, METHOD = "{sub}", "{acq}", "{method}"

TEMPLATE = {
    "T1w": "T1w.nii.gz",
    "dseg": "dseg.nii.gz",
    "brain_mask": "desc-brain_mask.nii.gz",
    "probseg": "probseg.nii.gz",
}
"""Template files (``results/template/tpl-MNI152NLin2009aSym_<name>``), by key."""

GROUNDTRUTH = {
    "dseg": "dseg.nii.gz",
    "probseg": "probseg.nii.gz",
    "T1map": "T1map.nii.gz",
    "T2map": "T2map.nii.gz",
    "PDmap": "PDmap.nii.gz",
    "biasfield": "desc-biasfield.nii.gz",
    "warp": "desc-warp_xfm.nii.gz",
    "brain_mask": "desc-brain_mask.nii.gz",
    "info": "info.json",
}
"""A subject's ground-truth files (``results/groundtruth/<sub>/<sub>_<name>``), by key."""


def bids(root: str, *, suffix: str, ext: str = ".nii.gz", sub: str | None = None, acq: str | None = None,
         space: str | None = None, rec: str | None = None, desc: str | None = None) -> str:
    """``<root>/<sub>/<sub>_acq-<acq>_space-<space>_rec-<rec>_desc-<desc>_<suffix><ext>``.

    Entities that are None are left out (BIDS order); without ``sub`` the file sits directly in
    ``root`` (cohort-level products).
    """
    parts = [sub] if sub else []
    parts += [f"{k}-{v}" for k, v in (("acq", acq), ("space", space), ("rec", rec), ("desc", desc)) if v is not None]
    name = "_".join(parts + [suffix]) + ext
    return f"{root}/{sub}/{name}" if sub else f"{root}/{name}"


def template(key: str) -> str:
    return f"{RESULTS}/template/{TEMPLATE_NAME}_{TEMPLATE[key]}"


def groundtruth(key: str, sub: str = SUB, root: str = f"{RESULTS}/groundtruth") -> str:
    """A ground-truth file; ``root`` is the directory holding the subject folders."""
    return f"{root}/{sub}/{sub}_{GROUNDTRUTH[key]}"


def groundtruth_files(sub: str = SUB, root: str = f"{RESULTS}/groundtruth") -> dict[str, str]:
    """Every ground-truth file of ``sub``, by key (the outputs of the ``simulate_subject`` rule)."""
    return {k: groundtruth(k, sub, root) for k in GROUNDTRUTH}


def kspace(contrast: str, sub: str = SUB, acq: str = ACQ) -> str:
    """Simulated multi-coil k-space, fastMRI layout (HDF5)."""
    return bids(f"{RESULTS}/kspace", sub=sub, acq=acq, suffix=contrast, ext=".h5")


def noisefree(contrast: str, sub: str = SUB, acq: str = ACQ) -> str:
    """The noise-free, fully sampled image of an acquisition (ground truth of reconstruction)."""
    return bids(f"{RESULTS}/groundtruth", sub=sub, acq=acq, desc="noisefree", suffix=contrast)


def stage_outputs(stage, contrast: str, sub: str = SUB, acq: str = ACQ, method: str = METHOD) -> dict[str, str]:
    """The files one method's job of ``stage`` (a :class:`mrichain.plan.stages.Stage`) writes, by key."""
    root = f"{RESULTS}/{stage.directory}"
    entity = {stage.method_entity: method}
    return {
        key: bids(root, sub=sub if stage.per_subject else None, acq=acq, space=stage.space,
                  suffix=out.suffix.format(contrast=contrast), ext=out.ext, **entity)
        for key, out in stage.outputs.items()
    }


def model(stage: str = "{stage}", method: str = METHOD, suffix: str = ".pt", root: str = MODELS) -> str:
    """``models/<stage>-<method><suffix>``: state dict ``.pt``, card ``.json``, training curve
    ``_curve.tsv`` and ``_curve.png``. ``root``: another models directory (``input.models_dir``)."""
    return f"{root}/{stage}-{method}{suffix}"


def tuning(stage: str = "{stage}", method: str = METHOD) -> str:
    """The tuning card of a classical method (rule ``tune``): ``results/tuning/<stage>-<method>.json``."""
    return f"{RESULTS}/tuning/{stage}-{method}.json"


def scores(stage: str = "{stage}", acq: str = ACQ) -> str:
    """Per-subject scores of one stage at one acquisition (TSV)."""
    return f"{RESULTS}/metrics/acq-{acq}_stage-{stage}.tsv"


def figures(stage: str = "{stage}", acq: str = ACQ) -> str:
    """Montages of one stage at one acquisition (a directory of PNGs)."""
    return f"{RESULTS}/figures/acq-{acq}_stage-{stage}"


MRF = f"{RESULTS}/mrf"
MRF_ACQ = "MRF"
"""The MR fingerprinting branch's folder and ``acq`` entity (its scores: ``scores("mrf", MRF_ACQ)``;
its maps: :func:`stage_outputs` of :data:`mrichain.plan.stages.MRF_STAGE` at ``MRF_ACQ``)."""


def mrf_dictionary() -> str:
    """The MRF dictionary (HDF5: atoms, grid, sequence, SVD basis): beside DRONE, which trains on
    it, in ``models/`` (DVC's ``models`` stage shares both)."""
    return f"{MODELS}/mrf-dictionary.h5"


def subject_page(sub: str = SUB) -> str:
    """A test subject's page (rule ``subject_report``); its PNG figures in :func:`subject_figures`."""
    return f"{RESULTS}/reports/{sub}.html"


def subject_figures(sub: str = SUB) -> str:
    return f"{RESULTS}/reports/{sub}/figures"


def report_overview() -> str:
    """The run report's first page (reStructuredText, rule ``overview``)."""
    return f"{RESULTS}/report/overview.rst"


def manifest(kind: str = "{kind}", name: str = "{name}") -> str:
    """A job's manifest (JSON): ``kind`` is one of :data:`mrichain.plan.manifests.MANIFEST_NAMES`."""
    return f"{RESULTS}/manifests/{kind}/{name}.json"


def job_name(stage, sub: str = SUB, acq: str = ACQ, method: str = METHOD) -> str:
    """Name of a method's job in logs and benchmarks: ``<sub>_acq-<acq>_<method>``, or
    ``acq-<acq>_<method>`` for a cohort-level stage."""
    return f"{sub}_acq-{acq}_{method}" if stage.per_subject else f"acq-{acq}_{method}"


def log(rule: str, name: str | None = None) -> str:
    """A job's log: ``logs/<rule>/<name>.log``, or ``logs/<rule>.log`` for a rule with one job."""
    return f"logs/{rule}/{name}.log" if name else f"logs/{rule}.log"


BENCHMARKS = f"{RESULTS}/benchmarks"


def benchmark(rule: str, name: str | None = None, root: str = BENCHMARKS) -> str:
    """Snakemake's benchmark file of a job (seconds, memory; scoring reads the methods' ones):
    ``<root>/<rule>/<name>.tsv``, or ``<root>/<rule>.tsv`` for a rule with one job."""
    return f"{root}/{rule}/{name}.tsv" if name else f"{root}/{rule}.tsv"


def citation(ext: str = ".md", root: str = f"{RESULTS}/logs") -> str:
    """The run's methods text (``.md``) or its references (``.bib``): ``<root>/CITATION<ext>``
    (``root``: a BIDS derivatives folder's ``logs`` for real inputs, as fMRIPrep writes them)."""
    return f"{root}/CITATION{ext}"
