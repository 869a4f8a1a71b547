"""What every job of a run reads: the run's plan, from the config and the stage declarations.

:class:`Plan` answers the questions the Snakemake rules ask (which subjects, which methods run on
a subject, which files a job reads) and builds the manifests of the jobs whose inputs grow with
the cohort -- training, scoring, cohort-level prediction. Those manifests are written to JSON files
(``results/manifests/<kind>/<name>.json``, rule ``manifest``) and the job reads the file, so no
shell command grows with the cohort (Linux caps one argument at 128 KiB).

The science of what a stage reads (e.g. "the denoiser trains on fully sampled pairs") is declared
in :mod:`mrichain.plan.stages`; this module only resolves those declarations to paths (:mod:`mrichain.plan.layout`).
"""
from __future__ import annotations

import functools
import re

from mrichain.mrf.plan import MrfPlan
from mrichain.plan import layout
from mrichain.plan.cohort import age_splits, age_train_ids, assign_splits, subject_age, subject_ids
from mrichain.plan.conditions import (ORACLE, SWEPT_STAGE, Condition, MotionCondition, acq_label, conditions,
                                      motion_conditions, mrf_label, mrf_source)
from mrichain.plan.stages import (ALL_STAGES, METHOD_STAGES, MOTION, MRF, Stage, is_learned, learned_methods,
                                  stage)

MANIFEST_NAMES = {
    "score": "acq-{acq}_stage-{stage}",  # scoring one stage at one acquisition
    "train": "{stage}-{method}",  # training one learned method
    "job": "{stage}_acq-{acq}_{method}",  # a cohort-level method's job (brain-age prediction)
    "tune": "{stage}-{method}",  # tuning one classical method on the val split
}
"""Manifest file names by kind (``layout.manifest(kind, name)``); :meth:`Plan.manifest` parses them."""

_NAME_RE = {k: re.compile("^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^_]+?)", re.escape(v)) + "$")
            for k, v in MANIFEST_NAMES.items()}


def manifest_path(kind: str, **names) -> str:
    return layout.manifest(kind, MANIFEST_NAMES[kind].format(**names))


_NAMING_KEYS = ("splits", "stage", "acq", "contrast", "method")


def manifest_files(obj) -> list[str]:
    """Every file path in a manifest: its string leaves, except those naming things (the keys
    above, and ``subjects`` where it is the list of subject ids rather than per-subject files)."""
    if isinstance(obj, dict):
        return [f for k, v in obj.items() if k not in _NAMING_KEYS and not (k == "subjects" and isinstance(v, list))
                for f in manifest_files(v)]
    if isinstance(obj, list):
        return [f for v in obj for f in manifest_files(v)]
    return [obj] if isinstance(obj, str) else []


class Plan:
    """The run a config describes.

    subjects: ``sub-001`` ... in order (the image cohort); age_subjects: the extra subjects that
    only train and validate the cohort-level (brain-age) stage; splits: {subject: train|val|test},
    the age subjects in ``train`` or ``val`` (:func:`mrichain.plan.cohort.age_splits`); acqs: {label: (acceleration, centre fraction)} in config order (the
    first is the primary acquisition); conditions: {label: :class:`mrichain.plan.conditions.Condition`},
    the acquisitions first, then the acceleration sweep's and the oracle (test split only). The
    ``acq`` argument of the methods below is a condition label.
    """

    def __init__(self, config: dict):
        self.config = config
        self.contrast = config["acquire"]["contrast"]
        self.subjects = subject_ids(config)
        self.age_subjects = age_train_ids(config)
        self.splits = {**assign_splits(config), **age_splits(config)}
        self.test_subjects = [s for s in self.subjects if self.splits[s] == "test"]
        self._test = set(self.test_subjects)
        acq = config["acquire"]
        self.acqs = {acq_label(a): (a, cf) for a, cf in zip(acq["accelerations"], acq["center_fractions"])}
        rec = config[SWEPT_STAGE]
        self.conditions: dict[str, Condition] = conditions(self.acqs, self.sweep_methods(SWEPT_STAGE), rec["feed"],
                                                           sweep=config["error_budget"]["sweep"],
                                                           oracle=config["error_budget"]["oracle"])
        self.models_root = config["input"].get("models_dir") or layout.MODELS
        """Where the learned methods' weights are read: this run's ``models/`` (rule ``train``
        writes them) or ``input.models_dir`` (an existing directory, e.g. pulled with DVC: nothing
        is trained; :func:`mrichain.realdata.domain.check_models_dir` checks its cards at parse time)."""
        self.motion_conditions: dict[str, MotionCondition] = (
            motion_conditions(self.acqs, list(acq["motion"]["levels"]), config["motion"]["accelerations"],
                              config["motion"]["methods"], config["motion"]["feed"])
            if "motion" in config else {})
        """The motion branch's conditions (``severeR4``, ``severeR4none``:
        :class:`mrichain.plan.conditions.MotionCondition`), test split only; empty without a
        ``motion`` section. Not in :attr:`conditions` (the error budget and the sweep compare the
        still chain's)."""
        self.mrf = MrfPlan(config, self) if "mrf" in config else None
        """The MR fingerprinting branch (:mod:`mrichain.mrf.plan`), None without an ``mrf`` section."""

    def model(self, stage_name: str, method: str, suffix: str = ".pt") -> str:
        """A learned method's weights (``.pt``) or card (``.json``) as this run reads them."""
        return layout.model(stage_name, method, suffix, root=self.models_root)

    # --- what runs -------------------------------------------------------------------------
    def methods(self, stage_name: str) -> list[str]:
        return list(self.config[stage_name]["methods"]) if stage(stage_name).methods else []

    def feed(self, stage_name: str) -> str:
        return self.config[stage_name]["feed"]

    def learned_run(self) -> list[tuple[str, str]]:
        """(stage, method) of every learned method the config runs: the training jobs."""
        return [(s, m.name) for s, m in learned_methods() if m.name in self.methods(s)]

    def _derived(self, acq: str | None) -> Condition | MotionCondition | None:
        if acq is None:
            return None
        cond = self.conditions.get(acq) or self.motion_conditions.get(acq)
        return cond if cond is not None and cond.derived else None

    def test_only(self, acq: str | None) -> bool:
        """Whether a condition runs on the test split only: a sweep condition, the oracle, a motion
        condition or an MR fingerprinting condition (:func:`mrichain.plan.conditions.mrf_label`)."""
        return self._derived(acq) is not None or (acq is not None and mrf_source(acq) is not None)

    def scored_subjects(self, stage_name: str, acq: str | None = None) -> list[str]:
        if stage(stage_name).scored_on == "test" or self._derived(acq):
            return self.test_subjects
        return self.subjects

    def _feeds_read(self, s: Stage) -> set[str]:
        """The stages whose feed output ``s`` (any of its methods) reads."""
        refs = [*s.reads.values(), *(r for m in s.methods for r in (m.reads or {}).values())]
        return {ref.partition(".")[2] for ref in refs if ref.startswith("feed.")}

    def _downstream_of(self, s: Stage, upstream: str) -> bool:
        fed = self._feeds_read(s)
        return upstream in fed or any(self._downstream_of(stage(f), upstream) for f in fed)

    def stage_conditions(self, stage_name: str) -> list[str]:
        """The conditions a stage runs and is scored at: every acquisition; the sweep's and the
        motion conditions where it is downstream of reconstruction; the oracle where every feed it
        reads has an ideal (:attr:`mrichain.plan.stages.Stage.ideal`). The motion stage: its own
        conditions only."""
        s = stage(stage_name)
        if stage_name == MOTION:
            return list(dict.fromkeys(c.acquired for c in self.motion_conditions.values()))
        out = list(self.acqs)
        if self._downstream_of(s, SWEPT_STAGE):
            out += [c.label for c in self.conditions.values() if c.derived and not c.oracle]
            out += list(self.motion_conditions)
        fed = self._feeds_read(s)
        if ORACLE in self.conditions and fed and all(stage(f).ideal for f in fed):
            out.append(ORACLE)
        return out

    def methods_run(self, stage_name: str, sub: str, acq: str | None = None) -> list[str]:
        """Methods of a stage run on ``sub`` at an acquisition: all on the test split (scored side
        by side), only the feed elsewhere (its output is what later stages train on); none where
        the stage is not scored on ``sub``'s split. At a sweep condition (test split only) a stage
        with a feed runs its feed, one without (registration, brain age) the config's
        ``error_budget.sweep_methods.<stage>`` (default: all its methods), as at a motion
        condition; at the oracle every method runs, and the motion stage runs all its methods at
        its conditions."""
        s = stage(stage_name)
        cond = self._derived(acq)
        if cond is not None:
            if sub not in self._test:
                return []
            if cond.oracle or stage_name == MOTION:
                return self.methods(stage_name)
            return [self.feed(stage_name)] if s.has_feed else self.sweep_methods(stage_name)
        if s.scored_on == "test" and sub not in self._test:
            return []
        if sub in self._test or not s.has_feed:
            return self.methods(stage_name)
        return [self.feed(stage_name)]

    def sweep_methods(self, stage_name: str) -> list[str]:
        """The methods a stage without a feed runs at a sweep condition (for reconstruction: the
        methods whose output is swept downstream in place of the feed's): the config's
        ``error_budget.sweep_methods.<stage>``, else all its methods."""
        return list(self.config["error_budget"].get("sweep_methods", {}).get(stage_name, self.methods(stage_name)))

    def tune_grid(self, stage_name: str, method: str) -> dict | None:
        """The config's grid ``<stage>.tune.<method>`` ({parameter: [values]}), None if untuned."""
        return self.config[stage_name].get("tune", {}).get(method) if stage(stage_name).methods else None

    def tuned_run(self) -> list[tuple[str, str]]:
        """(stage, method) of every method the config runs with a tuning grid: the tuning jobs."""
        return [(s.name, m) for s in METHOD_STAGES for m in self.methods(s.name) if self.tune_grid(s.name, m)]

    def tune_acq(self, s: Stage) -> str:
        """The acquisition a stage's classical methods are tuned at: the first of its ``tune_acqs``
        (by default the acquisitions its learned methods train on)."""
        return self._acqs(s.tune_acqs or s.train_acqs)[0]

    @functools.lru_cache(maxsize=None)
    def reads_model(self, stage_name: str, method: str | None = None) -> bool:
        """Whether a job of ``stage_name`` (running ``method``) waits for something fitted on the
        cohort: its method is learned (a trained model) or tuned (a tuning card), or a feed it
        reads, directly or further upstream, is. (Asked once per job by the rules' group
        function: cached.)"""
        s = stage(stage_name)
        if method is not None and (s.method(method).learned or self.tune_grid(stage_name, method)):
            return True
        for ref in self._reads(s, method).values():
            kind, _, fed = ref.partition(".")
            if kind == "feed" and self.reads_model(fed, self.feed(fed)):
                return True
        return False

    def split_subjects(self, *splits: str) -> list[str]:
        """Subjects of the image cohort in ``splits`` (the age subjects are not among them)."""
        return [s for s in self.subjects if self.splits[s] in splits]

    def fit_subjects(self, s: Stage, split: str = "train") -> list[str]:
        """The subjects of ``split`` (train or val) a stage's fit reads: the image cohort's, plus
        the age subjects of that split for a cohort-level stage."""
        age = [a for a in self.age_subjects if self.splits[a] == split] if not s.per_subject else []
        return self.split_subjects(split) + age

    def train_acqs(self, s: Stage) -> list[str]:
        """The acquisitions a stage's learned methods train on (:attr:`Stage.train_acqs`)."""
        return self._acqs(s.train_acqs)

    def _acqs(self, which: str) -> list[str]:
        """The acquisitions ``all``, ``undersampled``, ``fully_sampled`` or ``moved`` (the still
        acquisitions the motion branch moves) names (all where none is)."""
        if which == "all":
            return list(self.acqs)
        if which == "moved":
            return list(dict.fromkeys(c.acq for c in self.motion_conditions.values())) or list(self.acqs)
        want_full = which == "fully_sampled"
        chosen = [a for a, (r, _) in self.acqs.items() if (r == 1) == want_full]
        return chosen or list(self.acqs)

    # --- paths -----------------------------------------------------------------------------
    def outputs(self, stage_name: str, sub: str = layout.SUB, acq: str = layout.ACQ,
                method: str = layout.METHOD) -> dict[str, str]:
        return layout.stage_outputs(stage(stage_name), self.contrast, sub, acq, method)

    def resolve(self, ref: str, sub: str, acq: str):
        """A declared reference (:mod:`mrichain.plan.stages`) -> the path (or value) for one subject at
        a condition (:mod:`mrichain.plan.conditions`): k-space and noise-free image of its acquisition;
        a feed output at that condition, except the reconstruction a sweep condition names, and at
        the oracle each feed's ideal (its ground truth), at an MR fingerprinting condition what the
        branch stands in for (:meth:`_resolve_mrf`); the cohort-level files (template, MRF
        dictionary) wherever asked."""
        kind, _, key = ref.partition(".")
        source = mrf_source(acq) if acq is not None else None
        if source is not None:
            return self._resolve_mrf(ref, sub, source)
        if acq in self.motion_conditions:
            return self._resolve_motion(ref, sub, self.motion_conditions[acq])
        cond = self.conditions.get(acq) if acq is not None else None
        base = cond.acq if cond is not None else acq
        if kind == "kspace":
            return layout.kspace(self.contrast, sub, base)
        if kind == "noisefree":
            return layout.noisefree(self.contrast, sub, base)
        if kind == "gt":
            return layout.groundtruth(key, sub)
        if kind == "template":
            return layout.template(key)
        if kind == "feed":
            s = stage(key)
            if cond is not None and cond.oracle:
                if s.ideal is None:
                    raise ValueError(f"{key} declares no ideal output: no stage reading its feed runs at the oracle")
                return self.resolve(s.ideal, sub, acq)
            if cond is not None and key == SWEPT_STAGE:
                return self.outputs(key, sub, base, cond.recon)[s.primary_output]
            return self.outputs(key, sub, acq, self.feed(key))[s.primary_output]
        if kind == "age":
            return subject_age(self.config, sub)
        if kind == "dictionary":
            return layout.mrf_dictionary()
        raise ValueError(f"unknown reference {ref!r}")

    def _resolve_mrf(self, ref: str, sub: str, source: str):
        """A reference at the MR fingerprinting condition of ``source``: the feed output of a stage
        the branch stands in for (:attr:`mrichain.plan.stages.Stage.stands_in`: the denoised image)
        is the T1w of ``source``'s maps (or of the acquired slab); ground truth, template, age and
        dictionary as anywhere; nothing else exists there."""
        kind, _, key = ref.partition(".")
        if kind == "feed" and key in stage(MRF).stands_in:
            return self.outputs(MRF, sub, layout.MRF_ACQ, source)[stage(MRF).stands_in[key]]
        if kind in ("gt", "template", "age", "dictionary"):
            return self.resolve(ref, sub, None)
        raise ValueError(f"{ref} does not exist at {mrf_label(source)}: the MR fingerprinting branch stands in "
                         f"only for the feed of {', '.join(stage(MRF).stands_in)}")

    def _resolve_motion(self, ref: str, sub: str, cond: MotionCondition):
        """A reference at a motion condition: the moving head's own k-space, the still
        acquisition's noise-free image (the truth), the condition's motion method's output where
        it stands in (:attr:`mrichain.plan.stages.Stage.stands_in`: the reconstruction), each later
        stage's feed output at the condition, the rest as anywhere."""
        kind, _, key = ref.partition(".")
        if kind == "kspace":
            return layout.kspace(self.contrast, sub, cond.acquired)
        if kind == "noisefree":
            return layout.noisefree(self.contrast, sub, cond.acq)
        if kind == "feed":
            if key in stage(MOTION).stands_in:
                return self.outputs(MOTION, sub, cond.acquired, cond.method)[stage(MOTION).stands_in[key]]
            return self.outputs(key, sub, cond.label, self.feed(key))[stage(key).primary_output]
        return self.resolve(ref, sub, None)

    def _reads(self, s: Stage, method: str | None) -> dict[str, str]:
        """What a job of ``s`` reads: the stage's references, with ``method``'s own over them."""
        return {**s.reads, **((s.method(method).reads or {}) if method is not None else {})}

    def method_inputs(self, stage_name: str, method: str, sub: str | None, acq: str) -> dict:
        """Input files of one method's job. Per-subject stages: {key: path}; cohort-level
        stages: the job's manifest file and every file it lists. Learned methods add ``model``."""
        s = stage(stage_name)
        if s.per_subject:
            inputs = {k: self.resolve(r, sub, acq) for k, r in self._reads(s, method).items()}
        else:
            job = self.job_manifest(stage_name, method, acq)
            inputs = {"manifest": manifest_path("job", stage=stage_name, acq=acq, method=method),
                      "files": manifest_files(job)}
        return {**inputs, **self.fitted(stage_name, method)}

    def fitted(self, stage_name: str, method: str) -> dict[str, str]:
        """What a method's job uses that was fitted on the cohort: ``model`` (a learned method's
        weights) and/or ``tuning`` (a tuned classical method's card, rule ``tune``)."""
        out = {}
        if stage(stage_name).method(method).learned:
            out["model"] = self.model(stage_name, method)
        if self.tune_grid(stage_name, method):
            out["tuning"] = layout.tuning(stage_name, method)
        return out

    # --- manifests ---------------------------------------------------------------------------
    @functools.lru_cache(maxsize=None)
    def job_manifest(self, stage_name: str, method: str, acq: str, splits: tuple[str, ...] = ("train", "val", "test")
                     ) -> dict:
        """A cohort-level job at ``acq``: the subjects of ``splits`` (the age subjects with
        train), each's split, and one path per subject and read key. The train subjects, which
        the method fits on, are read at the stage's training acquisition (:meth:`train_acqs`:
        brain-age models learn from fully sampled data); the others at ``acq``. At a sweep
        condition the val split is left out (it does not run there); at the oracle the fit reads
        the oracle too (the ceiling: the model fitted and applied on ideal inputs)."""
        s = stage(stage_name)
        cond = self._derived(acq)
        if cond is not None:
            splits = tuple(x for x in splits if x != "val")
        subjects = [sub for sub in self.subjects if self.splits[sub] in splits]
        age_subjects = [sub for sub in self.age_subjects if self.splits[sub] in splits]
        fit_acq = acq if cond is not None and cond.oracle else self.train_acqs(s)[0]
        out = {"stage": stage_name, "method": method, "acq": acq, "subjects": subjects + age_subjects,
               "splits": {sub: self.splits[sub] for sub in subjects + age_subjects}}
        # the age subjects exist at the training acquisition only (and at the oracle)
        at_fit = {sub for sub in subjects if self.splits[sub] == "train"} | set(age_subjects)
        for key, ref in self._reads(s, method).items():
            out[key] = [self.resolve(ref, sub, fit_acq if sub in at_fit else acq) for sub in out["subjects"]]
        return out

    @functools.lru_cache(maxsize=None)
    def tune_manifest(self, stage_name: str, method: str) -> dict:
        """What tuning a classical method reads (rule ``tune``), at :meth:`tune_acq`: per val
        subject its job's ``inputs`` and what scoring it reads (``score``); a cohort-level stage
        gets its ``job`` manifest over the train and val splits (fit on train, scored on val)."""
        s = stage(stage_name)
        acq = self.tune_acq(s)
        out = {"stage": stage_name, "method": method, "acq": acq, "contrast": self.contrast}
        if not s.per_subject:
            out["job"] = self.job_manifest(stage_name, method, acq, ("train", "val"))
            return out
        out["subjects"] = {
            sub: {"inputs": {k: self.resolve(r, sub, acq) for k, r in self._reads(s, method).items()},
                  "score": {k: self.resolve(r, sub, acq) for k, r in s.score_reads.items()}}
            for sub in self.split_subjects("val")
        }
        return out

    @functools.lru_cache(maxsize=None)
    def train_manifest(self, stage_name: str, method: str) -> dict:
        """What a learned method trains on: its training items, ``train`` to fit and ``val`` to
        select the epoch, and the stage's cohort-level files (:attr:`Stage.train_extra`); a
        method whose stage declares no items trains on those files alone (DRONE: ``{"dictionary":
        path}``)."""
        s = stage(stage_name)
        reads = self._train_reads(s, method)
        out = {k: self.resolve(r, None, None) for k, r in s.train_extra.items()}
        if not reads:
            return out
        acqs = self.train_acqs(s)

        def items(subjects):
            return [{k: self.resolve(r, sub, a) for k, r in reads.items()} for sub in subjects for a in acqs]

        return {"train": items(self.fit_subjects(s)), "val": items(self.fit_subjects(s, "val")), **out}

    @staticmethod
    def _train_reads(s: Stage, method: str) -> dict[str, str]:
        return dict(s.method(method).train_reads or s.train_reads)

    def train_domain(self, stage_name: str, method: str) -> dict | None:
        """What a learned method's training items were, for its card's ``domain`` (checked before
        it runs on a real input, :mod:`mrichain.realdata.domain`): the simulated cohort's
        acquisition; None for a method that trains on no cohort item (DRONE: on the dictionary)."""
        if not self._train_reads(stage(stage_name), method):
            return None
        from mrichain.realdata.domain import domain_of_config

        return domain_of_config(self.config)

    @property
    def trained_stages(self) -> list[str]:
        """The stages whose learned methods this config may train (rule ``train``'s ``stage``
        wildcard): the chain's, and the MR fingerprinting and motion branches' where the config has
        them."""
        return [s.name for s in ALL_STAGES if any(m.learned for m in s.methods)
                and (s.name != MRF or self.mrf) and (s.name != MOTION or self.motion_conditions)]

    @functools.lru_cache(maxsize=None)
    def score_manifest(self, stage_name: str, acq: str) -> dict:
        """What scoring one stage at one acquisition reads: per subject, the declared references
        and each method's outputs (``methods: {method: {output key: path}}``)."""
        s = stage(stage_name)
        m = {"stage": stage_name, "acq": acq, "contrast": self.contrast, "splits": dict(self.splits)}
        if not s.per_subject:
            cond = self._derived(acq)
            run = self.sweep_methods(stage_name) if cond is not None and not cond.oracle else self.methods(stage_name)
            m["methods"] = {meth: self.outputs(stage_name, None, acq, meth) for meth in run}
            return self._with_cards(stage_name, m)
        m["subjects"] = {
            sub: {**{k: self.resolve(r, sub, acq) for k, r in s.score_reads.items()},
                  **({"methods": {meth: self.outputs(stage_name, sub, acq, meth)
                                  for meth in self.methods_run(stage_name, sub, acq)}} if s.methods else {})}
            for sub in self.scored_subjects(stage_name, acq)
        }
        return self._with_cards(stage_name, m)

    def _with_cards(self, stage_name: str, m: dict) -> dict:
        """A score manifest with the model cards of its learned methods (``cards: {method: path}``):
        the scorer reads whether each beat its untrained start (:func:`mrichain.scoring.evaluate.start_rows`)."""
        run = set(m.get("methods", {})) | {meth for e in m.get("subjects", {}).values() for meth in e.get("methods", {})}
        cards = {meth: self.model(stage_name, meth, ".json") for meth in sorted(run) if is_learned(stage_name, meth)}
        return {**m, "cards": cards} if cards else m

    def manifest(self, kind: str, name: str) -> dict:
        """The manifest a file ``results/manifests/<kind>/<name>.json`` holds (rule ``manifest``)."""
        match = _NAME_RE[kind].match(name) if kind in _NAME_RE else None
        if match is None:
            raise ValueError(f"no manifest {kind}/{name}; names: {MANIFEST_NAMES}")
        w = match.groupdict()
        if kind == "score" and w["stage"] == MRF and self.mrf is not None:
            return self.mrf.score_manifest()
        if kind == "score":
            return self.score_manifest(w["stage"], w["acq"])
        if kind == "train":
            return self.train_manifest(w["stage"], w["method"])
        if kind == "tune":
            return self.tune_manifest(w["stage"], w["method"])
        return self.job_manifest(w["stage"], w["method"], w["acq"])


def canonical(obj):
    """``obj`` with every mapping's keys in sorted order (lists keep theirs): a rule's param that
    holds a manifest built from the config must not change when only the config file's key order
    does (Snakemake compares params by their text, and a config written by ``yaml.safe_dump``
    sorts its keys)."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def write_manifest(manifest: dict, path, log_path=None) -> None:
    """Write a manifest as JSON (sorted keys: stable bytes) and say so in the job's log."""
    from mrichain.io import save_json

    save_json(manifest, path)
    if log_path is not None:
        with open(log_path, "w") as fh:
            fh.write(f"manifest {path}: {len(manifest_files(manifest))} files\n")
