"""The plan of the MR fingerprinting branch (config ``mrf``): which jobs run and what they read.

One dictionary; DRONE trained on it (if ``drone`` is among ``mrf.methods``); per test subject
and method one mapping job (the subject's fingerprints simulated from its ground truth, mapped,
a synthetic T1w written); per test subject the acquired T1w cut to the mapped voxels; per test
subject and ``mrf.segment_from`` method (and that cut acquired T1w) the segment feed (rule
``segment`` at the MR fingerprinting conditions, :mod:`mrichain.plan.conditions`); one scoring job.
Import-light (standard library only): the Snakefile builds it at parse time.
"""
from __future__ import annotations

from mrichain.plan import layout
from mrichain.plan.conditions import mrf_label
from mrichain.plan.stages import MRF as STAGE


class MrfPlan:
    """config: the run's config (with an ``mrf`` section); plan: its :class:`mrichain.plan.manifests.Plan`."""

    def __init__(self, config: dict, plan):
        self.config = config["mrf"]
        self.plan = plan
        self.methods: list[str] = list(self.config["methods"])
        self.segment_from: list[str] = list(self.config.get("segment_from", []))
        self.subjects: list[str] = list(plan.test_subjects)
        self.dictionary = layout.mrf_dictionary()
        self.model = layout.model(STAGE, "drone", root=plan.models_root)
        self.scores = layout.scores(STAGE, layout.MRF_ACQ)
        self.figures = layout.figures(STAGE, layout.MRF_ACQ)
        self.downstream = f"{layout.MRF}/downstream.tsv"
        self.manifest_name = f"acq-{layout.MRF_ACQ}_stage-{STAGE}"

    REFERENCE = "acquired"
    """The label of the acquired T1w cut to the mapped voxels (rule ``mrf_slab``), which the
    segment feed segments beside the MRF-derived T1w (at condition ``MRFacquired``)."""

    def slab_inputs(self, sub: str) -> dict[str, str]:
        """The acquired T1w the MRF-derived ones are compared with (the denoise feed's output at
        :meth:`acquired`) and the subject's ground truth (its brain mask picks the slices)."""
        acq = self.acquired()
        return {"image": self.plan.outputs("denoise", sub, acq, self.plan.feed("denoise"))["image"],
                **self.groundtruth(sub)}

    @property
    def segmented(self) -> list[str]:
        """Labels of the T1w images the segment feed segments: the reference and ``segment_from``."""
        return [self.REFERENCE, *self.segment_from]

    def dseg(self, sub: str, label: str) -> str:
        """The segment feed's labels of the T1w of ``label`` (one of :attr:`segmented`): rule
        ``segment``'s output at the MR fingerprinting condition ``MRF<label>``
        (:func:`mrichain.plan.conditions.mrf_label`; its input there: :meth:`maps`' ``T1w``)."""
        return self.plan.outputs("segment", sub, mrf_label(label), self.plan.feed("segment"))["labels"]

    @property
    def trains(self) -> bool:
        return "drone" in self.methods

    @staticmethod
    def groundtruth(sub: str) -> dict[str, str]:
        """The subject's ground-truth files as job inputs (``gt_<key>``; the jobs read the folder
        of ``gt_info``)."""
        return {f"gt_{k}": v for k, v in layout.groundtruth_files(sub).items()}

    def maps(self, sub: str = layout.SUB, method: str = layout.METHOD) -> dict[str, str]:
        """What one mapping job writes, by key (``T1map``, ``T2map``, ``PDmap``, the synthetic
        ``T1w``, ``timing``): the stage's declared outputs at :data:`mrichain.plan.layout.MRF_ACQ`."""
        return self.plan.outputs(STAGE, sub, layout.MRF_ACQ, method)

    def map_inputs(self, sub: str, method: str) -> dict[str, str]:
        """A mapping job's inputs: the subject's ground truth, the dictionary, DRONE's weights."""
        out = {**self.groundtruth(sub), "dictionary": self.dictionary}
        if method == "drone":
            out["model"] = self.model
        return out

    def acquired(self) -> str:
        """The acquisition whose segment-feed labels the MRF-derived ones are compared with: the
        fully sampled one (the chain's reference), else the first."""
        return next((c.label for c in self.plan.conditions.values() if not c.derived and c.acceleration == 1.0),
                    next(iter(self.plan.acqs)))

    def score_manifest(self) -> dict:
        """``{"stage", "acq", "subjects": {sub: {groundtruth: {key: path}, acq, acquired_dseg,
        methods: {method: {key: path}}}}}`` (:func:`mrichain.mrf.run.score`)."""
        acq, feed = self.acquired(), self.plan.feed("segment")
        subjects = {}
        for sub in self.subjects:
            methods = {m: {**self.maps(sub, m), **({"dseg": self.dseg(sub, m)} if m in self.segment_from else {})}
                       for m in self.methods}
            subjects[sub] = {"groundtruth": layout.groundtruth_files(sub), "acq": acq,
                             "acquired_dseg": self.plan.outputs("segment", sub, acq, feed)["labels"],
                             "reference_dseg": self.dseg(sub, self.REFERENCE), "methods": methods}
        return {"stage": STAGE, "acq": layout.MRF_ACQ, "subjects": subjects}

    def fitted(self) -> list[str]:
        """What the branch builds before mapping (the ``models`` target, DVC's ``models`` stage):
        the dictionary and, if it runs, DRONE's weights and card."""
        return [self.dictionary] + ([self.model, self.model.replace(".pt", ".json")] if self.trains else [])

    def targets(self) -> list[str]:
        return [self.scores, self.downstream]
