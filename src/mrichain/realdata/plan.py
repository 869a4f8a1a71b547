"""The plan of a run's real inputs (``input.kind: bids | fastmri``): what runs on them, and where.

The simulated cohort always runs (:class:`mrichain.plan.manifests.Plan`): it trains the learned
methods, tunes the classical ones and is scored against its truth. A run with real inputs adds,
per real image (a *key*, the ``real`` wildcard of ``workflow/rules/realdata.smk``):

bids (structural T1w, :mod:`mrichain.realdata.structural`)
    prepare (RAS, N4, skull strip or the user's ``desc-brain_mask``, resampled to the cohort's
    voxel size) -> every denoising method -> every segmentation method on the denoising feed's
    output -> every brain-age method (fitted on the cohort's train split as in the cohort's own
    jobs; the real image predicted). Outputs are restored to the input's grid and voxel order and
    written as BIDS derivatives; brain age is scored against ``participants.tsv`` ages where the
    dataset has them, the image stages report "no reference".
fastmri (k-space, :mod:`mrichain.realdata.fastmri`)
    every reconstruction method at each ``input.accelerations`` (retrospective masks, seeded; 1 =
    as acquired), scored against the file's cropped ``reconstruction_rss`` as fastMRI's
    ``evaluate.py`` does -> every denoising method on the reconstruction feed's output (no
    reference). The thick-slice 2-D stacks are not sent to the 3-D stages after denoising.

Work files on the cohort's grid sit under :data:`WORK`; what a lab keeps is written under the
derivatives folder (``input.output_dir``, default :data:`DERIVATIVES`) with BIDS names
(:func:`mrichain.realdata.derivatives.derivative_path`).

Import-light: the Snakefile builds it at parse time (discovery of a BIDS dataset through pybids
happens then, so a missing dataset or participant is an error before any job).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mrichain.plan.stages import stage

DERIVATIVES = "results/derivatives/mrichain"
WORK = "results/realdata"
STRUCTURAL_STAGES = ("denoise", "segment", "predict")
WORK_SUFFIX = {"denoise": "T1w", "segment": "dseg"}
"""The suffix of the structural image stages' work files (rule ``real_image_stage``'s wildcard)."""
FASTMRI_STAGES = ("reconstruct", "denoise")


@dataclass(frozen=True)
class RealInput:
    """One real image.

    key: unique id, the ``real`` wildcard (``sub-01_ses-02`` for BIDS; ``sub-<file stem without
    non-alphanumerics>`` for fastMRI); path: the input file; entities: BIDS entities of its
    derivatives (``subject``, [``session``, ``acquisition``, ``run``]); suffix: BIDS suffix
    (``T1w``...); mask: a user brain mask (BIDS derivatives) or None; age: years or None.
    """

    key: str
    path: str
    entities: dict = field(hash=False)
    suffix: str = "T1w"
    mask: str | None = None
    age: float | None = None


def fastmri_inputs(directory) -> list[RealInput]:
    """Every ``*.h5`` file of ``directory`` (sorted by subject label), as :class:`RealInput`.

    The subject label is the file stem's letters and digits
    (:func:`mrichain.realdata.derivatives.fastmri_label`); the suffix follows the file's
    ``acquisition`` attribute (:func:`~mrichain.realdata.derivatives.fastmri_suffix`: T1w for
    ``AXT1``/``AXT1PRE``/``AXT1POST``, T2w, FLAIR, PDw), or where the file cannot be opened here
    the protocol in its name: its own jobs then fail, naming it, and the other files run.
    Raises :class:`mrichain.UserError` naming the key or files for a missing directory, one with
    no ``.h5``, two files giving one label, or an acquisition with no BIDS suffix."""
    import h5py

    from mrichain import UserError
    from mrichain.realdata.derivatives import FASTMRI_SUFFIX, fastmri_subjects, fastmri_suffix

    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"config key 'input.dir': {d} is not a directory")
    files = sorted(d.glob("*.h5"))
    if not files:
        raise UserError(f"config key 'input.dir': {d} holds no .h5 file (fastMRI HDF5)")
    out = []
    for label, f in fastmri_subjects(files).items():
        try:
            with h5py.File(f, "r") as h:
                acquisition = h.attrs.get("acquisition")
            acquisition = acquisition.decode() if isinstance(acquisition, bytes) else acquisition
        except OSError:
            # longest protocol name first: AXT1POST before AXT1
            acquisition = next((a for a in sorted(FASTMRI_SUFFIX, key=len, reverse=True) if a in f.stem.upper()), None)
        out.append(RealInput(f"sub-{label}", str(f), {"subject": label}, fastmri_suffix(acquisition, f)))
    return out


UNSUPPORTED_NAME = re.compile(r"[{}\x00-\x1f\x7f]")
"""Characters an input's path may not hold: braces are wildcards to Snakemake (a path from an input
function is expanded like a pattern), control characters (newlines) break its job logs. Every
other character, ``$(...)``, ``;`` and spaces included, reaches the jobs shell-quoted."""


def check_input_names(inputs) -> None:
    """Refuse, before any job, a real input (or its brain mask) whose path Snakemake cannot carry
    (:data:`UNSUPPORTED_NAME`); the error names the file."""
    from mrichain import UserError

    for i in inputs:
        for path in (i.path, i.mask):
            if path is not None and UNSUPPORTED_NAME.search(str(path)):
                raise UserError(f"{path!r}: a real input's path may not hold braces or control characters "
                                "(Snakemake reads braces as wildcards); rename or link it without them")


def key_dir(key: str) -> str:
    """The derivative folder of a key: ``sub-01_ses-02_run-1`` -> ``sub-01/ses-02/anat``."""
    parts = key.split("_")
    return "/".join([parts[0]] + [p for p in parts[1:] if p.startswith("ses-")] + ["anat"])


class RealPlan:
    """Real inputs of a run and every path of their jobs (module docstring).

    config: the validated config; plan: the cohort's :class:`mrichain.plan.manifests.Plan` (methods,
    feeds, what the brain-age fit reads); inputs: given by tests, discovered otherwise.
    """

    def __init__(self, config: dict, plan, inputs: list[RealInput] | None = None):
        inp = config["input"]
        self.kind = inp["kind"]
        self.plan = plan
        self.root = inp.get("output_dir", DERIVATIVES)
        self.bids_dir = inp.get("bids_dir") if self.kind == "bids" else None
        self.voxel_mm = float(config["cohort"]["resolution_mm"])
        self.acqs: dict[str, tuple[float, float]] = {}
        if self.kind == "fastmri":
            from mrichain.plan.conditions import acq_label

            self.acqs = {acq_label(r): (float(r), float(cf))
                         for r, cf in zip(inp["accelerations"], inp["center_fractions"])}
        if inputs is None:
            inputs = self._discover(inp)
        check_input_names(inputs)
        self.inputs = {i.key: i for i in inputs}
        self.outside_dataset([self.root, WORK])

    def outside_dataset(self, paths) -> list[str]:
        """``paths``, checked to lie outside the raw BIDS dataset (``input.bids_dir``) or under its
        ``derivatives/<pipeline>`` (:func:`mrichain.realdata.derivatives.inside_raw_dataset`);
        :class:`mrichain.UserError` naming the first that does not. Every path the plan builds
        is under :attr:`root` or :data:`WORK`, the two checked when the plan is made, so no job of
        the plan writes into it."""
        paths = list(paths)
        if self.bids_dir is None:
            return paths
        from mrichain import UserError
        from mrichain.realdata.derivatives import inside_raw_dataset

        for p in paths:
            if inside_raw_dataset(p, self.bids_dir):
                raise UserError(f"{p} is inside the BIDS dataset {self.bids_dir} (input.bids_dir) and outside its "
                                "derivatives/<pipeline>: the raw dataset is never written to; set input.output_dir "
                                "outside it (and run from a working directory outside it)")
        return paths

    @staticmethod
    def _discover(inp: dict) -> list[RealInput]:
        if inp["kind"] == "fastmri":
            return fastmri_inputs(inp["dir"])
        if inp["kind"] != "bids":
            return []
        from mrichain.realdata.bids import discover_t1w

        return [RealInput(i.key, str(i.path), dict(i.entities), "T1w", str(i.mask) if i.mask else None, i.age)
                for i in discover_t1w(inp["bids_dir"], inp.get("participant_label") or None,
                                      inp.get("derivatives") or (), validate=inp.get("validate", True))]

    @property
    def active(self) -> bool:
        return bool(self.inputs)

    @property
    def stages(self) -> tuple[str, ...]:
        return FASTMRI_STAGES if self.kind == "fastmri" else STRUCTURAL_STAGES if self.kind == "bids" else ()

    def wildcard(self) -> str:
        """Regular expression of the ``real`` wildcard: exactly the keys of this run."""
        return "|".join(re.escape(k) for k in self.inputs) or "(?!)"

    # ---- paths ---------------------------------------------------------------------------
    def work(self, kind: str, key: str = "{real}", acq: str | None = None, method: str | None = None,
             ext: str = ".nii.gz") -> str:
        """A work file on the chain's grid: ``results/realdata/<kind>/<key>/<key>[_acq-R4][_desc-<method>]_<kind><ext>``."""
        ents = "".join(f"_{k}-{v}" for k, v in (("acq", acq), ("desc", method)) if v)
        return f"{WORK}/{kind}/{key}/{key}{ents}_{kind}{ext}"

    def derivative(self, key: str = "{real}", *, acq=None, rec=None, desc=None, suffix=None, ext=".nii.gz") -> str:
        """A derivative file: ``<root>/sub-X[/ses-Y]/anat/<key>[_acq-][_rec-][_desc-]_<suffix><ext>``.

        The key is the input's own BIDS name without its suffix (entities in BIDS order), so the
        added entities follow it in BIDS order too (acq and rec only for fastMRI keys, which
        carry the subject alone). With the default ``key`` the result is a rule's output pattern
        (wildcards ``realdir``, ``real`` and, unless given, ``suffix``)."""
        if key == "{real}":
            folder, suffix = "{realdir}", suffix or "{suffix}"
        else:
            folder, suffix = key_dir(key), suffix or self.inputs[key].suffix
        ents = "".join(f"_{k}-{v}" for k, v in (("acq", acq), ("rec", rec), ("desc", desc)) if v)
        return f"{self.root}/{folder}/{key}{ents}_{suffix}{ext}"

    def stage_output(self, stage_name: str, key: str, method: str, acq: str | None = None) -> str:
        """Where ``method`` of ``stage_name`` writes for ``key`` (a derivative for fastMRI
        reconstructions and denoised images, which stay on their grid; a work file for the
        structural chain, restored to the input's grid by rule ``real_restore``)."""
        if self.kind == "fastmri":
            feed = self.plan.feed("reconstruct")
            if stage_name == "reconstruct":
                return self.derivative(key, acq=acq, rec=method)
            return self.derivative(key, acq=acq, rec=feed, desc=method)
        if stage_name == "predict":
            return self.work("brainage", key, method=method, ext=".tsv")
        return self.work(WORK_SUFFIX[stage_name], key, method=method)

    def feed_output(self, stage_name: str, key: str, acq: str | None = None) -> str:
        return self.stage_output(stage_name, key, self.plan.feed(stage_name), acq)

    def restored(self, stage_name: str, key: str, method: str) -> str:
        """A structural output on the input's grid, as a derivative (``desc-<method>``)."""
        suffix = "dseg" if stage_name == "segment" else self.inputs[key].suffix
        return self.derivative(key, desc=method, suffix=suffix)

    def restore_source(self, key: str, method: str, suffix: str) -> tuple[str, bool]:
        """What rule ``real_restore`` brings back to the input's grid for a derivative
        ``desc-<method>_<suffix>``, and whether it is a label map: the brain mask
        (``desc-brain_mask``), a segmentation (``dseg``) or a denoised image."""
        if suffix == "mask":
            return self.prepared(key)["mask"], True
        if suffix == "dseg":
            return self.stage_output("segment", key, method), True
        return self.stage_output("denoise", key, method), False

    def prepared(self, key: str = "{real}") -> dict[str, str]:
        """What rule ``real_prepare`` writes: the chain's input image, its brain mask, the
        :class:`mrichain.realdata.structural.PrepInfo` (JSON) and the subject's info (age)."""
        return {"image": self.work("preproc", key), "mask": self.work("brainmask", key),
                "prep": self.work("prep", key, ext=".json"), "info": self.work("info", key, ext=".json")}

    def fastmri_scores(self, key: str = "{real}", acq: str = "{acq}") -> str:
        return self.work("scores", key, acq=acq, ext=".tsv")

    def predict_manifest(self, method: str, key: str) -> dict:
        """The brain-age job of one real image: the cohort's train split (the fit, as the
        cohort's own predict job reads it) plus the image (split ``real``)."""
        s = stage("predict")
        m = self.plan.job_manifest("predict", method, self.plan.train_acqs(s)[0], ("train",))
        m = {**m, "subjects": m["subjects"] + [key], "splits": {**m["splits"], key: "real"}}
        reads = {"labels": self.feed_output("segment", key), "images": self.feed_output("denoise", key),
                 "info": self.prepared(key)["info"]}
        for k in [k for k in m if k in reads]:
            m[k] = m[k] + [reads[k]]
        return m

    def methods(self, stage_name: str) -> list[str]:
        return self.plan.methods(stage_name)

    def scans_table(self, key: str) -> str:
        """The BIDS ``scans.tsv`` of the folder holding ``key``'s derivatives (brain age per image)."""
        from mrichain.realdata.derivatives import derivative_path

        ents = {k: v for k, v in self.inputs[key].entities.items() if k in ("subject", "session")}
        return str(derivative_path(self.root, ents, suffix="scans", extension=".tsv"))

    def summary_files(self) -> dict:
        """What rule ``real_summary`` writes (:func:`mrichain.realdata.run.summarise`)."""
        out = {"description": f"{self.root}/dataset_description.json", "metrics": f"{WORK}/metrics.json",
               "table": f"{WORK}/summary.tsv"}
        if "predict" in self.stages:
            out["brain_age"] = f"{WORK}/brain_age.tsv"
            out["scans"] = sorted({self.scans_table(k) for k in self.inputs} | {f"{self.root}/scans.json"})
        if "segment" in self.stages:
            out["dseg"] = f"{self.root}/dseg.tsv"
        return out

    def summary_manifest(self) -> dict:
        """What rule ``real_summary`` reads (a file: it grows with the inputs)."""
        inp = self.plan.config["input"]
        m = {"kind": self.kind, "source": inp.get("bids_dir") or inp.get("dir"),
             "stages": {s: self.methods(s) for s in self.stages},
             "entities": {k: i.entities for k, i in self.inputs.items()}}
        if self.kind == "fastmri":
            m["fastmri_scores"] = [self.fastmri_scores(k, a) for k in self.inputs for a in self.acqs]
        else:
            m["predictions"] = {k: {meth: self.stage_output("predict", k, meth) for meth in self.methods("predict")}
                                for k in self.inputs}
            feed = self.plan.feed("denoise")
            m["info"] = {k: self.prepared(k)["info"] for k in self.inputs}
            m["scans"] = {k: {"table": self.scans_table(k),
                              "filename": str(Path(self.restored("denoise", k, feed)).relative_to(
                                  Path(self.scans_table(k)).parent))} for k in self.inputs}
        return m

    def outputs(self) -> list[str]:
        """Every file the run's real inputs end in (rule ``real_summary``'s inputs)."""
        out = []
        for key in self.inputs:
            if self.kind == "fastmri":
                for acq in self.acqs:
                    out += [self.stage_output("reconstruct", key, m, acq) for m in self.methods("reconstruct")]
                    out += [self.stage_output("denoise", key, m, acq) for m in self.methods("denoise")]
                    out.append(self.fastmri_scores(key, acq))
            else:
                out += [self.derivative(key, desc="brain", suffix="mask"), self.prepared(key)["info"]]
                out += [self.restored(s, key, m) for s in ("denoise", "segment") for m in self.methods(s)]
                out += [self.stage_output("predict", key, m) for m in self.methods("predict")]
        return out
