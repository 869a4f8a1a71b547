"""The one declaration of mrichain's scored stages and their methods.

Everything else derives from :data:`STAGES`: the Snakemake rules' input functions and wildcard
constraints, the config schema's method enums and each method's params and tuning grids
(:func:`mrichain.plan.config.load_schema`; the tests check the params against the methods' signatures
and the trainers' defaults), each stage package's ``METHODS``/``TRAINERS`` registries,
``evaluate.SCORERS``, the kinds in ``comparison.tsv``, the DVC plots (checked against
``dvc.yaml``) and the tests.

What a job reads is declared here too, as *references* that :class:`mrichain.plan.manifests.Plan`
resolves to paths through :mod:`mrichain.plan.layout` for one subject and acquisition:

========================  =============================================================
``kspace``                the subject's k-space file at that acceleration
``noisefree``             the noise-free, fully sampled image (ground truth of an image)
``gt.<key>``              a ground-truth file (keys: :data:`mrichain.plan.layout.GROUNDTRUTH`)
``template.<key>``        a template file (keys: :data:`mrichain.plan.layout.TEMPLATE`)
``feed.<stage>``          the primary output of ``<stage>``'s feed method (config ``<stage>.feed``)
``age``                   the subject's true age in years (a value, not a file)
``dictionary``            the MR fingerprinting dictionary (cohort-level, rule ``mrf_dictionary``)
========================  =============================================================

Adding a classical method: its module, and one :class:`Method` line below with its ``params``.
A learned method: the same, with ``trainer``, ``val_metric`` and ``infer``. A stage: its
package, one :class:`Stage` below, its rule file (``workflow/rules/<stage>.smk``) and its scorer
in :mod:`mrichain.scoring.evaluate`.

Import-light on purpose (standard library only): the Snakefile reads it at parse time.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

FLOOR, CLASSICAL, LEARNED = "floor", "classical", "learned"


@dataclass(frozen=True)
class Method:
    """One method of a stage.

    entry: ``"module:function"`` (or a module exposing ``fit``/``predict``) run at inference.
    kind: ``floor`` (no-op or trivial method every other must beat), ``classical`` or ``learned``.
    trainer: ``"module:function"`` of a learned method, ``(manifest, params, out_path, seed) ->
        mrichain.train.FitResult``; its job writes ``models/<stage>-<method>.pt`` + card.
    val_metric: the training-curve column (``models/<stage>-<method>_curve.tsv``) that selects the
        epoch on the val split; higher is better.
    reads: what a job of this method reads, if it differs from the stage's ``reads``.
    train_reads: a learned method's training items, if they differ from the stage's ``train_reads``.
    params: every key a config may set under ``<stage>.params.<method>``, each with the JSON
        schema of its value; the config schema is generated from it and refuses any other key.
        A floor's or classical method's: the keyword arguments of its inference function (a brain-age
        module's ``fit``) but :data:`RESERVED`. A learned method's: its trainer's, the keys of its
        defaults dict and the ``TrainSettings`` fields (:mod:`mrichain.train.engine`) but ``seed``.
    infer: a learned method's ``<stage>.params.<method>.infer`` keys (passed to inference, its
        ``entry``): the keyword arguments of ``entry`` but :data:`RESERVED`.
    tunable: parameters of a classical method that a config may tune on the val split
        (``<stage>.tune.<method>.<param>: [grid values]``, rule ``tune``), each with the JSON
        schema of one grid value; the config schema and the check of a tuning card's chosen values
        (:func:`mrichain.train.tune.tuned_params`) are generated from it. Each is one of ``params``.
    cite: BibTeX keys (:data:`mrichain.citation.BIBTEX`) of the method's paper(s) and of the
        library that implements it, for the run's methods text (``mrichain citation``); at least one.
    """

    name: str
    kind: str
    entry: str
    trainer: str | None = None
    val_metric: str | None = None
    reads: Mapping[str, str] | None = None
    train_reads: Mapping[str, str] | None = None
    tunable: Mapping[str, dict] = field(default_factory=dict)
    params: Mapping[str, dict] = field(default_factory=dict)
    infer: Mapping[str, dict] = field(default_factory=dict)
    cite: tuple[str, ...] = ()

    @property
    def learned(self) -> bool:
        return self.kind == LEARNED


@dataclass(frozen=True)
class Output:
    """One file a method's job writes: the BIDS suffix (``{contrast}`` = the acquired contrast)
    and extension."""

    suffix: str
    ext: str = ".nii.gz"


@dataclass(frozen=True)
class Stage:
    """A scored stage of the chain.

    package: the subpackage holding the methods (``METHODS``/``TRAINERS`` derive from here).
    scorer: ``"module:function"`` scoring one subject (per-subject stages:
        ``(sub, entry, acq, figures_dir) -> {method: {metric: value}}``) or the whole cohort
        (``per_subject=False``: ``(manifest, benchmarks_dir, figures_dir) -> rows``).
    methods: the methods a config may list under ``<stage>.methods``.
    has_feed: the config names a ``feed`` method whose output the next stages take.
    per_subject: one job per (subject, acquisition, method); otherwise one per (acquisition,
        method) over the cohort.
    directory, method_entity, space, outputs: the products' names (:func:`mrichain.plan.layout.bids`):
        ``results/<directory>/<sub>/<sub>_acq-<acq>[_space-<space>]_<method_entity>-<method>_<suffix><ext>``.
    reads: what a method's job reads, ``{key: reference}`` (module docstring).
    scored_on: ``all`` subjects or only the ``test`` split (then its methods run only there).
    score_reads: per subject, what the scorer reads besides the methods' outputs.
    scored_floors: floors the scorer computes itself from what it reads (e.g. the undenoised input).
    train_reads: per training item of a learned method, ``{key: reference}``.
    train_acqs: which acquisitions give training items: ``all``, ``undersampled``,
        ``fully_sampled`` or ``moved`` (the still acquisitions the motion branch moves; each falls
        back to all when the config has none).
    tune_acqs: the same choice for tuning the classical methods (the first such acquisition);
        None: as ``train_acqs``.
    train_extra: cohort-level files every training manifest of the stage gets.
    primary_metric: the score (a metric of the scorer) that tunes classical methods on the val
        split and that the targets use (its direction: :func:`mrichain.scoring.metrics.higher_is_better`).
    ideal: the reference that stands for this stage's feed output in the oracle condition
        (:mod:`mrichain.plan.conditions`): its ground truth. A stage runs at the oracle when every feed
        it reads has one; None where the ideal output would be the next stage's target (a
        reconstruction's ideal is the noise-free image, which denoising is scored against).
    stands_in: ``{chain stage: output key}``: the chain stages whose feed output one of this
        stage's outputs replaces at its own conditions (``MRF<method>``,
        :mod:`mrichain.plan.conditions`), so a later stage's feed method runs on it (the MR
        fingerprinting branch's synthetic T1w in place of the denoised image: the segment feed
        segments it).
    cite: BibTeX keys of what the whole stage rests on besides its methods (the acquisition's
        fastMRI layout and masks, the template space, MR fingerprinting's sequence and EPG).
    """

    name: str
    scorer: str
    package: str | None = None
    methods: tuple[Method, ...] = ()
    has_feed: bool = False
    per_subject: bool = True
    directory: str = ""
    method_entity: str = "desc"
    space: str | None = None
    outputs: Mapping[str, Output] = field(default_factory=dict)
    reads: Mapping[str, str] = field(default_factory=dict)
    scored_on: str = "all"
    score_reads: Mapping[str, str] = field(default_factory=dict)
    scored_floors: tuple[str, ...] = ()
    train_reads: Mapping[str, str] = field(default_factory=dict)
    train_acqs: str = "all"
    tune_acqs: str | None = None
    train_extra: Mapping[str, str] = field(default_factory=dict)
    primary_metric: str = ""
    ideal: str | None = None
    stands_in: Mapping[str, str] = field(default_factory=dict)
    cite: tuple[str, ...] = ()

    def method(self, name: str) -> Method:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"stage {self.name!r} has no method {name!r}; known: {', '.join(self.method_names)}")

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.methods)

    @property
    def primary_output(self) -> str:
        """The output key the next stage reads as this stage's feed."""
        return next(iter(self.outputs))


_IMAGE = {"image": Output("{contrast}")}

RESERVED: Mapping[str, str] = {
    "threads": "set by the workflow (rule threads)",
    "seed": "set by the workflow (config key 'seed')",
    "model": "set by the workflow (the trained models/<stage>-<method>.pt)",
    "contrast": "set by the workflow (config key 'acquire.contrast')",
    "labels": "set by the workflow (the subject's label map)",
    "acceleration": "set by the workflow (the acquisition's acceleration)",
    "center_fraction": "set by the workflow (the acquisition's centre fraction)",
    "scale": "set by the workflow (the whole volume's intensity normalisation)",
    "maps": "set by the Python API only (an array of coil sensitivities)",
    **{data: "set by the workflow (the job's input data)" for data in
       ("image", "kspace", "mask", "moving", "fixed", "volumes", "ages", "image_paths", "fingerprints",
        "dictionary", "n_voxels", "label_paths", "shot")},
}
"""Keyword arguments of the methods' functions that the job sets, never the config: each with
what sets it (the config check's message when a config names one)."""

# JSON schemas of one parameter value (Method.params, Method.infer, one grid value of Method.tunable).
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_NONNEGATIVE = {"type": "number", "minimum": 0}
_BOOL = {"type": "boolean"}
_COUNT = {"type": "integer", "minimum": 1}
_RADIUS = {"type": "integer", "minimum": 1, "maximum": 5}
_DROPOUT = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
_DEVICE = {"type": "string", "pattern": "^(auto|cpu|cuda(:[0-9]+)?)$"}
_BATCH = {"type": "integer", "minimum": 1, "maximum": 65536}
_THREADS = {"type": ["integer", "null"], "minimum": 1, "maximum": 1024}  # torch threads; null: torch's default
_SNR_RANGE = {"type": "array", "minItems": 2, "maxItems": 2, "items": _POSITIVE}  # [lo, hi] (lo < hi: cross-check)


def _width(hi: int = 1024) -> dict:
    return {"type": "integer", "minimum": 1, "maximum": hi}


def _widths(min_items: int = 1, max_items: int = 8, hi: int = 1024) -> dict:
    """Channel counts per level of a network: [n_levels] integers in [1, hi]."""
    return {"type": "array", "minItems": min_items, "maxItems": max_items, "items": _width(hi)}


# The training loop's settings every trainer takes (mrichain.train.TrainSettings but seed).
_TRAINING = {
    "epochs": {"type": "integer", "minimum": 0, "maximum": 10000},
    "batch_size": _BATCH,
    "lr": _POSITIVE,
    "weight_decay": _NONNEGATIVE,
    "patience": {"type": "integer", "minimum": 1},
    "max_batches_per_epoch": {"type": ["integer", "null"], "minimum": 1},
    "device": _DEVICE,
    "amp": _BOOL,
    "grad_clip": {"type": ["number", "null"], "minimum": 0},  # 0 or null: no clipping
    # optimiser and per-step learning-rate schedule (mrichain.train.engine.lr_factor)
    "optimiser": {"enum": ["adamw", "sgd"]},
    "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},  # sgd (Nesterov when > 0)
    "schedule": {"enum": ["constant", "poly", "cosine", "step"]},
    "poly_exponent": {"type": "number", "exclusiveMinimum": 0},
    "warmup_epochs": {"type": "integer", "minimum": 0, "maximum": 10000},
    "step_epochs": {"type": ["integer", "null"], "minimum": 1},  # schedule step: every this many epochs
    "step_gamma": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
}
# Inference of a network on slices or volumes: batch size and device.
_NETWORK_INFER = {"batch_size": _BATCH, "device": _DEVICE}

VOLUME_FEATURES = ("csf", "gm", "wm", "ventricle")  # keys of mrichain.predict.volumes.tissue_volumes

# The classical methods' tunable parameters (each also one of their params).
_CS = {"lam": _POSITIVE, "iterations": _COUNT}
_ANTSNLM = {"noise_model": {"enum": ["Rician", "Gaussian"]}, "patch_radius": _RADIUS, "search_radius": _RADIUS}
_ANTSSYN = {"reg_iterations": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
            "grad_step": _POSITIVE}
_ATROPOS = {"mrf_weight": _NONNEGATIVE, "iterations": _COUNT}
_LINEAR = {"alpha": _POSITIVE, "features": {"type": "array", "minItems": 1, "uniqueItems": True,
                                            "items": {"enum": list(VOLUME_FEATURES)}}}

STAGES: tuple[Stage, ...] = (
    Stage(
        name="acquire",
        scorer="mrichain.scoring.evaluate:score_acquire",
        score_reads={"kspace": "kspace", "noisefree": "noisefree", "mask": "gt.brain_mask"},
        cite=("zbontar2018fastmri",),
    ),
    Stage(
        name="reconstruct",
        package="mrichain.recon",
        scorer="mrichain.scoring.evaluate:score_reconstruct",
        methods=(
            Method("zerofilled", FLOOR, "mrichain.recon.zerofilled:zerofilled", cite=("zbontar2018fastmri",)),
            Method("cs", CLASSICAL, "mrichain.recon.cs:cs", tunable=_CS,
                   cite=("lustig2007sparse", "uecker2014espirit", "shin2014sake", "ong2019sigpy"),
                   params={**_CS, "wave_name": {"type": "string", "minLength": 1},
                           "num_low_frequency": {"type": ["integer", "null"], "minimum": 1},
                           "calib_width": _COUNT, "sake_iterations": {"type": "integer", "minimum": 0}}),
            Method("varnet", LEARNED, "mrichain.recon.varnet:varnet", trainer="mrichain.recon.varnet:train",
                   val_metric="val_ssim",
                   params={**_TRAINING, "loss": {"enum": ["ssim", "l1"]}, "target": {"enum": ["noisefree", "rss"]},
                           "include_fully_sampled": _BOOL,
                           "val_max_slices": {"type": ["integer", "null"], "minimum": 1}, "num_threads": _THREADS,
                           "cascades": _width(32), "channels": _width(256), "sens_channels": _width(256),
                           "pad_factor": _width(256)},
                   infer=_NETWORK_INFER, cite=("sriram2020endtoend", "cardoso2022monai", "paszke2019pytorch")),
        ),
        has_feed=True,
        directory="recon",
        method_entity="rec",
        outputs=_IMAGE,
        reads={"kspace": "kspace"},
        # fastMRI's scores against the noisy fully sampled RSS, and ours against the noise-free truth
        score_reads={"reference": "kspace", "truth": "noisefree", "mask": "gt.brain_mask"},
        # VarNet's target (params target: noisefree) and the brain mask its val score is taken in
        train_reads={"kspace": "kspace", "target": "noisefree", "mask": "gt.brain_mask"},
        # VarNet learns both to de-alias (R > 1) and to denoise (R1): trained on the undersampled
        # files only, its cascades degraded fully sampled images; CS is tuned where it matters
        train_acqs="all",
        tune_acqs="undersampled",
        primary_metric="ssim_truth",
    ),
    Stage(
        name="denoise",
        package="mrichain.denoise",
        scorer="mrichain.scoring.evaluate:score_denoise",
        methods=(
            Method("antsnlm", CLASSICAL, "mrichain.denoise.antsnlm:antsnlm",
                   tunable=_ANTSNLM, params={**_ANTSNLM, "shrink_factor": _width(8)},
                   cite=("manjon2010adaptive", "tustison2021antsx")),
            Method("dncnn", LEARNED, "mrichain.denoise.dncnn:dncnn", trainer="mrichain.denoise.dncnn:train",
                   val_metric="val_psnr_brain",
                   params={**_TRAINING, "depth": {"type": "integer", "minimum": 2, "maximum": 64},
                           "channels": _width(512), "norm": {"enum": [None, "batch", "instance", "layer", "group", "localresponse", "syncbatch"]},
                           "loss": {"enum": ["l1", "mse"]}, "flips": _BOOL, "threads": _THREADS,
                           # noise-level blind training: [lo, hi] SNR, or null (the manifest's pairs)
                           "noise_snr_range": {**_SNR_RANGE, "type": ["array", "null"]},
                           "noise_coils": {"type": ["integer", "null"], "minimum": 1, "maximum": 128}},
                   infer=_NETWORK_INFER, cite=("zhang2017beyond", "cardoso2022monai", "paszke2019pytorch")),
        ),
        has_feed=True,
        directory="denoise",
        outputs=_IMAGE,
        reads={"image": "feed.reconstruct"},
        score_reads={"reference": "noisefree", "input": "feed.reconstruct", "mask": "gt.brain_mask"},
        scored_floors=("input",),
        # Noise-only pairs (fully sampled): at R4 the zero-filled aliasing is ~3x the noise's L1
        # error and, mixed in, kept a DnCNN with the default budget at its input's PSNR.
        train_reads={"input": "feed.reconstruct", "target": "noisefree", "mask": "gt.brain_mask"},
        train_acqs="fully_sampled",
        primary_metric="psnr",
        ideal="noisefree",
    ),
    Stage(
        name="register",
        package="mrichain.register",
        scorer="mrichain.scoring.evaluate:score_register",
        methods=(
            Method("affine", FLOOR, "mrichain.register.antssyn:affine",
                   cite=("avants2011reproducible", "tustison2021antsx")),
            Method("antssyn", CLASSICAL, "mrichain.register.antssyn:antssyn",
                   tunable=_ANTSSYN, params={**_ANTSSYN, "type_of_transform": {"type": "string", "minLength": 1}},
                   cite=("avants2008symmetric", "tustison2021antsx")),
            Method("voxelmorph", LEARNED, "mrichain.register.voxelmorph:voxelmorph",
                   trainer="mrichain.register.voxelmorph:train", val_metric="val_dice",
                   params={**_TRAINING, "channels": _widths(2, 12, 512), "final_conv_channels": _widths(1, 8, 512),
                           "int_steps": {"type": "integer", "minimum": 0, "maximum": 20}, "lambda": _NONNEGATIVE,
                           "ncc_kernel": {"type": "integer", "minimum": 1, "maximum": 31},
                           "lambda_dice": _NONNEGATIVE, "norm": {"enum": ["instance", None]}},
                   cite=("balakrishnan2019voxelmorph", "cardoso2022monai", "paszke2019pytorch")),
        ),
        directory="register",
        space="MNI152NLin2009aSym",
        outputs={"image": Output("{contrast}"), "labels": Output("dseg"), "jacobian": Output("jacobian"),
                 "timing": Output("reg", ".json")},
        reads={"moving": "feed.denoise", "fixed": "template.T1w", "labels": "gt.dseg"},
        scored_on="test",
        score_reads={"reference": "template.dseg", "fixed": "template.T1w", "unregistered": "gt.dseg"},
        scored_floors=("identity",),
        train_reads={"moving": "feed.denoise", "labels": "gt.dseg"},
        train_extra={"fixed": "template.T1w", "fixed_labels": "template.dseg"},
        primary_metric="dice_mean",
        cite=("fonov2009unbiased", "fonov2011unbiased"),
    ),
    Stage(
        name="segment",
        package="mrichain.segment",
        scorer="mrichain.scoring.evaluate:score_segment",
        methods=(
            Method("kmeans", FLOOR, "mrichain.segment.kmeans:kmeans", cite=("lloyd1982least", "pedregosa2011scikit")),
            Method("atropos", CLASSICAL, "mrichain.segment.atropos:atropos",
                   tunable=_ATROPOS, params={**_ATROPOS, "partial_volume": _BOOL},
                   cite=("avants2011atropos", "tustison2021antsx")),
            Method("unet", LEARNED, "mrichain.segment.unet:unet", trainer="mrichain.segment.unet:train",
                   val_metric="val_dice_mean",
                   params={**_TRAINING, "channels": _widths(2, 8), "num_res_units": {"type": "integer", "minimum": 0,
                                                                                      "maximum": 8},
                           "dropout": _DROPOUT, "contrast": {"enum": ["T1w", "T2w"]}, "flips": _BOOL,
                           "normalisation": {"enum": ["zscore", "percentile"]},
                           "context": {"type": "integer", "minimum": 0, "maximum": 3},  # 2.5-D neighbours
                           "oversample_foreground": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                           "threads": _THREADS},
                   infer=_NETWORK_INFER,
                   cite=("ronneberger2015unet", "isensee2021nnunet", "cardoso2022monai", "paszke2019pytorch")),
        ),
        has_feed=True,
        directory="segment",
        outputs={"labels": Output("dseg")},
        reads={"image": "feed.denoise"},
        score_reads={"reference": "gt.dseg", "input": "feed.denoise"},
        train_reads={"input": "feed.denoise", "target": "gt.dseg"},
        primary_metric="dice_mean",
        ideal="gt.dseg",
    ),
    Stage(
        name="predict",
        package="mrichain.predict",
        scorer="mrichain.scoring.evaluate:score_predict",
        methods=(
            Method("mean", FLOOR, "mrichain.predict.mean", cite=("harris2020array",)),
            Method("linear", CLASSICAL, "mrichain.predict.linear", reads={"labels": "feed.segment"},
                   tunable=_LINEAR, params=_LINEAR, cite=("pedregosa2011scikit",)),
            Method("sfcn", LEARNED, "mrichain.predict.sfcn:predict_images", trainer="mrichain.predict.sfcn:train",
                   val_metric="val_neg_mae_years", reads={"images": "feed.denoise"},
                   params={**_TRAINING, "channels": _widths(1, 8, 512), "dropout": _DROPOUT,
                           "voxel_mm": {"type": "number", "minimum": 0.5, "maximum": 16},
                           "input_shape": {"type": "array", "minItems": 3, "maxItems": 3, "items": _width(512)},
                           "bin_range": {"type": ["array", "null"], "minItems": 2, "maxItems": 2,
                                         "items": {"type": "number", "minimum": 0, "maximum": 150}},
                           "bin_width": {"type": "number", "minimum": 0.1, "maximum": 50},
                           "label_sigma": {"type": "number", "minimum": 0, "maximum": 50},
                           "max_shift": {"type": "integer", "minimum": 0, "maximum": 32}, "flip": _BOOL},
                   infer={"mc_samples": _width(10000), "interval": {"type": "number", "exclusiveMinimum": 0,
                                                                    "exclusiveMaximum": 1}},
                   cite=("peng2021accurate", "paszke2019pytorch")),
            Method("mlp", LEARNED, "mrichain.predict.mlp:predict_labels",
                   trainer="mrichain.predict.mlp:train", val_metric="val_neg_mae_years",
                   reads={"labels": "feed.segment"}, train_reads={"labels": "feed.segment", "age": "age"},
                   params={**_TRAINING, "hidden": _width(1024),
                           "features": _LINEAR["features"], "ensemble": _width(64)},
                   cite=("paszke2019pytorch",)),
        ),
        per_subject=False,
        directory="predict",
        outputs={"predictions": Output("predictions", ".tsv"), "model": Output("model", ".json")},
        reads={"info": "gt.info"},
        train_reads={"image": "feed.denoise", "age": "age"},
        train_acqs="fully_sampled",  # age models learn from fully sampled data, applied at every acquisition
        primary_metric="abs_error_years",
    ),
)

MRF = "mrf"
MRF_STAGE = Stage(
    name=MRF,
    package="mrichain.mrf",
    scorer="mrichain.mrf.run:score",
    methods=(
        Method("constant", FLOOR, "mrichain.mrf.run:constant_mapper", cite=("harris2020array",)),
        Method("matching", CLASSICAL, "mrichain.mrf.matching:full_mapper", cite=("ma2013magnetic", "paszke2019pytorch")),
        Method("matchingsvd", CLASSICAL, "mrichain.mrf.matching:svd_mapper",
               cite=("mcgivney2014svd", "paszke2019pytorch")),
        Method("drone", LEARNED, "mrichain.mrf.drone:mapper", trainer="mrichain.mrf.drone:train",
               val_metric="val_neg_mape",
               params={**_TRAINING, "hidden": _width(8192), "noise_snr_range": _SNR_RANGE, "n_val": _width(10**7),
                       "threads": _THREADS},
               cite=("cohen2018mr", "paszke2019pytorch")),
    ),
    directory="mrf",
    # the maps (T1/T2 in ms, PD relative), the T1w synthesised from them, the mapping's timing
    outputs={"T1map": Output("T1map"), "T2map": Output("T2map"), "PDmap": Output("PDmap"), "T1w": Output("T1w"),
             "timing": Output("mrf", ".json")},
    scored_on="test",
    # DRONE trains on the dictionary's atoms and validates on fingerprints simulated from its
    # sequence: no cohort item
    train_extra={"dictionary": "dictionary"},
    # the synthetic T1w is segmented by the segment feed as the denoised image is (conditions MRF<method>)
    stands_in={"denoise": "T1w"},
    cite=("ma2013magnetic", "jiang2015mr", "weigel2015extended"),
)
"""The MR fingerprinting branch (config ``mrf``, optional; ``workflow/rules/mrf.smk``,
:mod:`mrichain.mrf`), ``mrf`` in the score tables. Not a link of the chain, so not in
:data:`STAGES`: it reads the ground-truth tissue maps, not k-space, and runs once per test
subject, not per acquisition. Its methods' ``entry`` is what :func:`mrichain.mrf.run.map_subject`
calls, ``(dictionary[, model=]) -> mapper`` with ``mapper(fingerprints) -> {"t1", "t2", "pd"}``
(a bad model is refused before any fingerprint is simulated), with no config params: only
DRONE's trainer takes some (``mrf.params.drone``), and it trains through rule ``train`` like
every learned method, on the manifest ``{"dictionary": path}`` (:attr:`Stage.train_extra`).
``constant`` is its floor: every voxel given the white-matter T1/T2 (no fingerprint read). Its
scorer writes the branch's tables and figures from one manifest
(:func:`mrichain.mrf.run.score`, rule ``mrf_score``)."""

MOTION = "motion"
_AUTOFOCUS = {"n_slices": _width(256), "max_shift": {"type": "number", "exclusiveMinimum": 0, "maximum": 64},
              "coarse_step": _POSITIVE, "fine_step": _POSITIVE, "sweeps": _width(10)}
MOTION_STAGE = Stage(
    name=MOTION,
    package="mrichain.motion",
    scorer="mrichain.scoring.evaluate:score_motion",
    methods=(
        Method("none", FLOOR, "mrichain.motion.correct:none", cite=("zbontar2018fastmri",)),
        Method("autofocus", CLASSICAL, "mrichain.motion.autofocus:autofocus", params=_AUTOFOCUS,
               cite=("atkinson1997automatic", "harris2020array")),
        Method("unet", LEARNED, "mrichain.motion.unet:correct", trainer="mrichain.motion.unet:train",
               val_metric="val_ssim_truth",
               params={**_TRAINING, "channels": _width(256), "threads": _THREADS,
                       "still_fraction": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                       "target": {"enum": ["noisefree", "still"]},
                       "slab": {"type": "integer", "minimum": 0, "maximum": 32},
                       "val_slices": {"type": ["integer", "null"], "minimum": 1},
                       # acquire.motion, filled in by the workflow (mrichain.plan.config.train_params)
                       "motion": {"type": ["object", "null"]}},
               infer=_NETWORK_INFER, cite=("johnson2019conditional", "cardoso2022monai", "paszke2019pytorch")),
    ),
    has_feed=True,
    directory="motion",
    # the corrected image (the reconstruction later stages read at the condition) and each shot's
    # detection score
    outputs={"image": Output("{contrast}"), "shots": Output("shots", ".tsv")},
    reads={"kspace": "kspace"},
    scored_on="test",
    score_reads={"kspace": "kspace", "truth": "noisefree", "mask": "gt.brain_mask"},
    # a learned corrector trains on the train split's still acquisitions at the moved accelerations,
    # moved on the fly (mrichain.motion.unet)
    train_reads={"kspace": "kspace", "truth": "noisefree", "mask": "gt.brain_mask"},
    train_acqs="moved",
    primary_metric="ssim_truth",
    # at a motion condition (<level><acq>) the corrected image stands in for the reconstruction
    stands_in={"reconstruct": "image"},
    cite=("shaw2019mri",),
)
"""The motion branch (config ``motion``, optional, with ``acquire.motion``;
``workflow/rules/motion.smk``, :mod:`mrichain.motion`): at each motion condition
(:class:`mrichain.plan.conditions.MotionCondition`, test split) it reads the moving head's k-space
and writes the corrected image, which the later stages' feed methods take in place of the
reconstruction (:attr:`Stage.stands_in`). Not in :data:`STAGES`: it runs only at its own
conditions. Its methods' ``entry``: ``(kspace, mask, shot, **params) -> (image [S, H, W], shot
scores [n_shots])``. ``none`` is its floor: the zero-filled image of every line, no shot flagged."""

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
STAGE_NAMES: tuple[str, ...] = tuple(BY_NAME)
METHOD_STAGES: tuple[Stage, ...] = tuple(s for s in STAGES if s.methods)
"""Stages a config configures (``<stage>: {methods, [feed], [params]}``)."""
ALL_STAGES: tuple[Stage, ...] = (*STAGES, MRF_STAGE, MOTION_STAGE)
"""Every declared stage: the chain's, the MR fingerprinting branch and the motion branch."""
_DECLARED: dict[str, Stage] = {s.name: s for s in ALL_STAGES}


def stage(name: str) -> Stage:
    """A declared stage of the chain or the MR fingerprinting branch (``name`` :data:`MRF`)."""
    try:
        return _DECLARED[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(_DECLARED)}") from None


def method(stage_name: str, method_name: str) -> Method:
    """A declared method of a stage (:data:`ALL_STAGES`)."""
    return stage(stage_name).method(method_name)


def is_learned(stage_name: str, method_name: str) -> bool:
    return method(stage_name, method_name).learned


def kind(stage_name: str, method_name: str) -> str:
    """``floor``, ``classical`` or ``learned``; the floors a scorer computes itself are floors;
    the acquisition stage's only "method" is the simulation."""
    s = stage(stage_name)
    if not s.methods:
        return "simulation"
    if method_name in s.scored_floors:
        return FLOOR
    return s.method(method_name).kind


def learned_methods() -> list[tuple[str, Method]]:
    """Every (stage name, learned method) of the chain's stages (:data:`STAGES`), in stage order."""
    return [(s.name, m) for s in STAGES for m in s.methods if m.learned]


class Registry(Mapping):
    """Objects by name, imported on first use from ``"module:attribute"`` (or ``"module"``).

    A job that runs ANTs does not pay for importing torch and MONAI, and vice versa: with
    ~120 short jobs per run that start-up time is a sizeable part of the wall time.
    """

    def __init__(self, entries: Mapping[str, str]):
        self._entries = dict(entries)

    def __getitem__(self, name: str):
        module, _, attr = self._entries[name].partition(":")
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self._entries})"


def method_registry(stage_name: str, where=None) -> Registry:
    """``METHODS`` of a stage package (or of :mod:`mrichain.mrf`): name -> inference entry point
    (``where`` filters methods)."""
    return Registry({m.name: m.entry for m in stage(stage_name).methods if where is None or where(m)})


def trainer_registry(stage_name: str) -> Registry:
    """``TRAINERS`` of a stage package (or of :mod:`mrichain.mrf`): name -> training function, for
    its learned methods."""
    return Registry({m.name: m.trainer for m in stage(stage_name).methods if m.learned})


SCORERS: Registry = Registry({s.name: s.scorer for s in (*STAGES, MOTION_STAGE)})
"""Stage name -> scoring function (:mod:`mrichain.scoring.evaluate`)."""
