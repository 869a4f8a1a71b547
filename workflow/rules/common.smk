# Paths, cohort lists and input functions shared by every stage.
import json

from mrichain.config import method_params
from mrichain.methods import is_learned, model_path
from mrichain.simulate.acquire import acq_label
from mrichain.simulate.cohort import assign_splits, subject_age, subject_ids


C = config["acquire"]["contrast"]  # BIDS suffix of every image: T1w or T2w
TPL = "results/template/tpl-MNI152NLin2009aSym"

SUBJECTS = subject_ids(config)
SPLITS = assign_splits(config)
TEST_SUBJECTS = [s for s in SUBJECTS if SPLITS[s] == "test"]
ACQS = {
    acq_label(a): (a, cf)
    for a, cf in zip(config["acquire"]["accelerations"], config["acquire"]["center_fractions"])
}
STAGE_METHODS = {s: config[s]["methods"] for s in ("reconstruct", "denoise", "register", "segment", "predict")}
STAGES = ("acquire", "reconstruct", "denoise", "register", "segment", "predict")
LEARNED_RUN = [(s, m) for s, ms in STAGE_METHODS.items() for m in ms if is_learned(s, m)]

# One pattern per product. {sub}, {acq} and {method} are wildcards. Stage first, then subject:
# each stage's products sit in one directory, which DVC tracks as one output (dvc.yaml).
GT = "results/groundtruth/{sub}/{sub}"
KSPACE = f"results/kspace/{{sub}}/{{sub}}_acq-{{acq}}_{C}.h5"
NOISEFREE = f"results/groundtruth/{{sub}}/{{sub}}_acq-{{acq}}_desc-noisefree_{C}.nii.gz"
RECON = f"results/recon/{{sub}}/{{sub}}_acq-{{acq}}_rec-{{method}}_{C}.nii.gz"
DENOISED = f"results/denoise/{{sub}}/{{sub}}_acq-{{acq}}_desc-{{method}}_{C}.nii.gz"
REG = "results/register/{sub}/{sub}_acq-{acq}_space-MNI152NLin2009aSym_desc-{method}"
SEG = "results/segment/{sub}/{sub}_acq-{acq}_desc-{method}_dseg.nii.gz"
PRED = "results/predict/acq-{acq}_desc-{method}"
SCORE = "results/metrics/acq-{acq}_stage-{stage}.tsv"
FIGS = "results/figures/acq-{acq}_stage-{stage}"
MODEL = "models/{stage}-{method}"


def subject_group(wildcards):
    """Cluster group of a per-subject job (profiles/slurm runs a group as one SLURM job).

    Subjects that training reads (train, val) and test subjects, whose learned-method inference
    waits for the trained models, are kept in separate groups: a SLURM job holding both would
    wait for training that waits for it.
    """
    return "subjects_test" if wildcards.sub in TEST_SUBJECTS else "subjects_fit"


def gt_files(sub):
    """Ground-truth files of one subject (written by simulate_subject)."""
    base = GT.format(sub=sub)
    names = ["dseg", "probseg", "T1map", "T2map", "PDmap", "desc-biasfield", "desc-warp_xfm", "desc-brain_mask"]
    return {n.replace("desc-", "").replace("_xfm", ""): f"{base}_{n}.nii.gz" for n in names} | {
        "info": f"{base}_info.json"
    }


def feed(stage, pattern, sub, acq):
    """The file of `stage`'s feed method that the next stage takes as input."""
    return pattern.format(sub=sub, acq=acq, method=config[stage]["feed"])


def methods_run(stage, sub):
    """Methods of `stage` run on `sub`: all of them on the test split (where they are scored side
    by side), only the feed method elsewhere (its output is what later stages train on)."""
    if sub in TEST_SUBJECTS or "feed" not in config[stage]:
        return STAGE_METHODS[stage]
    return [config[stage]["feed"]]


def params_json(stage, method):
    """Keyword arguments of a method at inference. A learned method's params are its training
    settings and architecture (read back from the model card); only its `infer` sub-mapping is
    passed to inference."""
    p = method_params(config, stage, method)
    return json.dumps(p.get("infer", {}) if is_learned(stage, method) else p, sort_keys=True)


def train_params_json(stage, method):
    p = method_params(config, stage, method)
    p.pop("infer", None)
    return json.dumps(p, sort_keys=True)


def config_json(*keys):
    """JSON of the config sections a job depends on (a param; other sections do not rerun it)."""
    return json.dumps({k: config[k] for k in keys}, sort_keys=True)


def model_input(stage):
    """Input function: the trained model of a learned method, nothing for a classical one."""

    def inputs(wc):
        return {"model": model_path(stage, wc.method)} if is_learned(stage, wc.method) else {}

    return inputs


def model_arg(stage):
    """Shell argument naming the trained model of a learned method."""
    return lambda wc: f"--model {model_path(stage, wc.method)}" if is_learned(stage, wc.method) else ""


def split_subjects(*splits):
    return [s for s in SUBJECTS if SPLITS[s] in splits]


def train_manifest(stage, method):
    """Files a learned method trains on: train split to fit, val split to select the epoch."""
    acqs = list(ACQS)
    undersampled = [a for a, (r, _) in ACQS.items() if r > 1] or acqs
    # The denoiser trains on noise-only pairs (fully sampled acquisitions; all if there are none):
    # at R4 the zero-filled aliasing is ~3x the noise's L1 error and, mixed in, kept a DnCNN with
    # the default budget at its input's PSNR on fully sampled images.
    fully_sampled = [a for a, (r, _) in ACQS.items() if r == 1] or acqs

    def items(split):
        out = []
        for sub in split_subjects(split):
            g = gt_files(sub)
            if stage == "reconstruct":
                out += [{"kspace": KSPACE.format(sub=sub, acq=a)} for a in undersampled]
            elif stage == "denoise":
                out += [
                    {"input": feed("reconstruct", RECON, sub, a), "target": NOISEFREE.format(sub=sub, acq=a),
                     "mask": g["brain_mask"]}
                    for a in fully_sampled
                ]
            elif stage == "segment":
                out += [{"input": feed("denoise", DENOISED, sub, a), "target": g["dseg"]} for a in acqs]
            elif stage == "register":
                out += [{"moving": feed("denoise", DENOISED, sub, a), "labels": g["dseg"]} for a in acqs]
            elif stage == "predict":
                out += [{"image": feed("denoise", DENOISED, sub, a), "age": subject_age(config, sub)} for a in acqs]
        return out

    m = {"train": items("train"), "val": items("val")}
    if stage == "register":
        m |= {"fixed": f"{TPL}_T1w.nii.gz", "fixed_labels": f"{TPL}_dseg.nii.gz"}
    return m


def score_manifest(stage, acq):
    """Structured list of the files that scoring `stage` at `acq` reads."""
    m = {"stage": stage, "acq": acq, "contrast": C, "splits": SPLITS, "subjects": {}}
    subjects = TEST_SUBJECTS if stage == "register" else SUBJECTS
    for sub in subjects:
        g = gt_files(sub)
        kw = dict(sub=sub, acq=acq)
        run = methods_run(stage, sub) if stage in STAGE_METHODS else []
        if stage == "acquire":
            e = {"kspace": KSPACE.format(**kw), "noisefree": NOISEFREE.format(**kw), "mask": g["brain_mask"]}
        elif stage == "reconstruct":
            e = {"reference": KSPACE.format(**kw), "methods": {m_: RECON.format(method=m_, **kw) for m_ in run}}
        elif stage == "denoise":
            e = {
                "reference": NOISEFREE.format(**kw),
                "input": feed("reconstruct", RECON, sub, acq),
                "mask": g["brain_mask"],
                "methods": {m_: DENOISED.format(method=m_, **kw) for m_ in run},
            }
        elif stage == "register":
            e = {
                "reference": f"{TPL}_dseg.nii.gz",
                "fixed": f"{TPL}_T1w.nii.gz",
                "unregistered": g["dseg"],
                "methods": {
                    m_: {k: f"{REG.format(method=m_, **kw)}{s}" for k, s in REG_SUFFIXES.items()} for m_ in run
                },
            }
        elif stage == "segment":
            e = {
                "reference": g["dseg"],
                "input": feed("denoise", DENOISED, sub, acq),
                "methods": {m_: SEG.format(method=m_, **kw) for m_ in run},
            }
        elif stage == "predict":
            e = {}
        m["subjects"][sub] = e
    if stage == "predict":
        m["methods"] = {m_: f"{PRED.format(acq=acq, method=m_)}_predictions.tsv" for m_ in STAGE_METHODS[stage]}
    return m


def manifest_files(obj):
    """All file paths inside a manifest (its leaves), the input of scoring or training."""
    if isinstance(obj, dict):
        return [f for k, v in obj.items() if k not in ("splits", "stage", "acq", "contrast") for f in manifest_files(v)]
    if isinstance(obj, list):
        return [f for v in obj for f in manifest_files(v)]
    if isinstance(obj, str):
        return [obj]
    return []


def predict_inputs(wc):
    """A volume model reads the segmentations, an image model the denoised images and its weights."""
    if is_learned("predict", wc.method):
        return {
            "images": [feed("denoise", DENOISED, s, wc.acq) for s in SUBJECTS],
            "model": model_path("predict", wc.method),
        }
    return {"labels": [feed("segment", SEG, s, wc.acq) for s in SUBJECTS]}


REG_SUFFIXES = {
    "image": f"_{C}.nii.gz",
    "labels": "_dseg.nii.gz",
    "jacobian": "_jacobian.nii.gz",
    "timing": "_reg.json",
}
