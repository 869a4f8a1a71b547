"""Conditions: what the input of a downstream stage was made from.

A stage after reconstruction runs, per subject, on the output of the chain upstream of it. The
*condition* names that upstream; it is the ``acq-<label>`` entity of every downstream file and the
``acq`` column of the score tables:

=============  ==================================================================================
``R4``         an acquisition (:func:`acq_label`) through the feed
               methods of every stage: the chain as configured
``R4cs``       the same undersampled acquisition, reconstructed by a reconstruction method
               other than the feed (here ``cs``), then the feed methods of the later stages: the
               acceleration sweep (test split only; not at R1, whose chain through the feed is
               the sweep's reference: every method's harm is measured against it)
``oracle``     the ideal input: each stage's feed output replaced by its ground truth (the
               noise-free fully sampled image for denoising, the true labels for segmentation;
               :attr:`mrichain.plan.stages.Stage.ideal`); the ceiling of the stages that read them
               (test split only)
``severeR4``   the same acquisition with the head moving during the scan at a motion level (here
               ``severe``, config ``acquire.motion.levels``; :mod:`mrichain.simulate.motion`), its
               k-space corrected by the motion stage's feed method (``severeR4none``: by another
               of its methods, here the floor), then the feed methods of the later stages (test
               split only; :class:`MotionCondition`, not in :func:`conditions`: the error budget
               and the sweep read the still chain)
``MRFdrone``   the MR fingerprinting branch's T1w synthesised from one method's maps (here
               ``drone``; ``MRFacquired``: the acquired image cut to the mapped voxels) in place
               of the denoise feed's output (:attr:`mrichain.plan.stages.Stage.stands_in`): the
               segment feed runs on it for the branch's downstream score (test split only; not
               in :func:`conditions`, not scored by the segment stage: :func:`mrf_label`)
=============  ==================================================================================

Comparing a downstream score across conditions is the error budget (oracle -> fully sampled
chain -> each acceleration and reconstruction method) and the acceleration sweep
(:mod:`mrichain.scoring.budget`). Import-light (standard library only): the Snakefile reads it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ORACLE = "oracle"
SWEPT_STAGE = "reconstruct"
"""The stage whose methods the sweep conditions vary (``R4cs``: ``cs`` is a method of it)."""

_LABEL = re.compile(r"^(?P<acq>R\d+(?:p\d+)?)(?P<recon>[a-z][a-z0-9]*)?$")

MRF_PREFIX = "MRF"
"""The MR fingerprinting conditions' label: ``MRF<method>`` (the branch's ``acq`` entity is
``MRF`` alone, :data:`mrichain.plan.layout.MRF_ACQ`)."""

_ACQ = r"R\d+(?:p\d+)?"

ACQUISITION_WILDCARD = _ACQ
"""Regular expression of an acquisition label (``R4``, ``R2p5``): the still k-space files."""
MOTION_WILDCARD = r"[a-z]+" + _ACQ + r"(?:[a-z][a-z0-9]*)?"
"""Regular expression of a motion condition's label (``severeR4``, ``severeR4none``)."""
MOTION_ACQUIRED_WILDCARD = r"[a-z]+" + _ACQ
"""Regular expression of a motion acquisition's label (``severeR4``: its k-space file, the motion
stage's jobs)."""
WILDCARD = _ACQ + r"(?:[a-z][a-z0-9]*)?|" + MOTION_WILDCARD + "|" + ORACLE + "|" + MRF_PREFIX + r"[a-z0-9]+"
"""Regular expression of a condition label (the rules' ``acq`` wildcard)."""


@dataclass(frozen=True)
class Condition:
    """One condition.

    label: ``R4``, ``R4cs`` or ``oracle``.
    acq: the acquisition label whose k-space (and noise-free image) it reads; for the oracle the
        fully sampled acquisition (or the first one where none is fully sampled: every
        acquisition of a subject has the same noise-free image).
    acceleration: of ``acq`` (1 for the oracle).
    recon: the reconstruction method whose output goes downstream (the feed for a plain
        acquisition); None for the oracle.
    """

    label: str
    acq: str
    acceleration: float
    recon: str | None

    @property
    def oracle(self) -> bool:
        return self.label == ORACLE

    @property
    def derived(self) -> bool:
        """Run on the test split only (a sweep condition or the oracle), not an acquisition."""
        return self.label != self.acq


def acq_label(acceleration: float) -> str:
    """BIDS ``acq`` label for an acceleration: 4 -> 'R4', 2.5 -> 'R2p5'."""
    a = float(acceleration)
    return f"R{int(a)}" if a == int(a) else "R" + f"{a:g}".replace(".", "p")


def label(acq: str, recon: str | None = None, feed: str | None = None) -> str:
    """The label of ``acq`` reconstructed by ``recon``: the plain acquisition label for the feed."""
    return acq if recon is None or recon == feed else f"{acq}{recon}"


def parse(label_: str) -> tuple[str | None, str | None]:
    """``'R4cs'`` -> ``('R4', 'cs')``, ``'R4'`` -> ``('R4', None)``, ``'oracle'`` -> ``(None, None)``."""
    if label_ == ORACLE:
        return None, None
    m = _LABEL.match(label_)
    if m is None:
        raise ValueError(f"not a condition label: {label_!r} (expected e.g. R4, R4cs or {ORACLE})")
    return m["acq"], m["recon"]


def mrf_label(source: str) -> str:
    """The label of the MR fingerprinting condition of ``source`` (a method's name, or the
    acquired slab's label): ``'drone'`` -> ``'MRFdrone'``."""
    return f"{MRF_PREFIX}{source}"


def mrf_source(label_: str) -> str | None:
    """``'MRFdrone'`` -> ``'drone'``; None for any other label."""
    m = re.fullmatch(MRF_PREFIX + r"([a-z0-9]+)", label_)
    return m[1] if m else None


def conditions(acqs: dict[str, tuple[float, float]], recon_methods: list[str], feed: str, *,
               sweep: bool = True, oracle: bool = True) -> dict[str, Condition]:
    """Every condition of a run, by label: the acquisitions (config order), then each undersampled
    acquisition with each non-feed reconstruction method (if ``sweep``), then the oracle (if
    ``oracle``).

    No sweep condition at R1: the fully sampled chain through the feed is the reference the
    sweep's harms are measured against (:func:`mrichain.scoring.budget.acceleration_limits`), and running
    every reconstruction method on fully sampled k-space doubled the sweep's jobs to measure what
    the methods do with nothing to undo (measured: half of the default run's 620 sweep
    job-seconds).

    acqs: {acq label: (acceleration, centre fraction)} (:attr:`mrichain.plan.manifests.Plan.acqs`);
    recon_methods: the reconstruction methods swept (the config's ``reconstruct.methods``, or
    ``error_budget.sweep_methods.reconstruct``); sweep, oracle: the config's ``error_budget``
    switches.
    """
    out = {a: Condition(a, a, float(r), feed) for a, (r, _) in acqs.items()}
    for a, (r, _) in acqs.items():
        for m in recon_methods if sweep and float(r) > 1.0 else ():
            if m != feed:
                out[label(a, m, feed)] = Condition(label(a, m, feed), a, float(r), m)
    if oracle:
        full = next((a for a, (r, _) in acqs.items() if float(r) == 1.0), next(iter(acqs)))
        out[ORACLE] = Condition(ORACLE, full, 1.0, None)
    return out


@dataclass(frozen=True)
class MotionCondition:
    """An acquisition with the head moving at one motion level, corrected by one motion method
    (label ``<level><acq>`` for the motion stage's feed, e.g. ``severeR4``, ``<level><acq><method>``
    for another method, e.g. ``severeR4none``): the corrected image goes down the chain's feed
    methods; test split only. ``acq``: the still acquisition it moves (its noise-free image is the
    truth, its scores the reference of the harm); ``level``: a key of ``acquire.motion.levels``;
    ``method``: the motion method; ``acquired``: the label of the moving head's k-space file and
    of the motion stage's jobs (``severeR4``)."""

    label: str
    acq: str
    acceleration: float
    level: str
    method: str
    oracle = False
    derived = True
    recon = None

    @property
    def acquired(self) -> str:
        return motion_label(self.level, self.acq)


def motion_label(level: str, acq: str, method: str | None = None, feed: str | None = None) -> str:
    """``('severe', 'R4')`` -> ``'severeR4'``; with a method other than the feed,
    ``('severe', 'R4', 'none', 'autofocus')`` -> ``'severeR4none'``."""
    return f"{level}{acq}" if method is None or method == feed else f"{level}{acq}{method}"


def motion_conditions(acqs: dict[str, tuple[float, float]], levels: list[str], accelerations: list[float],
                      methods: list[str], feed: str) -> dict[str, MotionCondition]:
    """The motion conditions of a run, by label: each acquisition whose acceleration is in
    ``accelerations`` (config ``motion.accelerations``) at each level (config order), the feed's
    condition first, then one per other method (config ``motion.methods``): the harm each
    correction leaves downstream."""
    wanted = {float(r) for r in accelerations}
    order = [feed] + [m for m in methods if m != feed]
    return {motion_label(lv, a, m, feed): MotionCondition(motion_label(lv, a, m, feed), a, float(r), lv, m)
            for a, (r, _) in acqs.items() if float(r) in wanted for lv in levels for m in order}
