"""Configuration: load YAML, validate against ``config/schema.yaml`` before any job runs.

Errors name the offending key as a dotted path (``acquire.accelerations[0]``) and, for a choice,
the allowed values, so a typo in a 40-job run fails in the first second, not the 40th job.

The sections of the method stages (``reconstruct: {methods, feed, params}`` ...) are not written
in ``schema.yaml``: :func:`load_schema` generates them from :mod:`mrichain.plan.stages`, so the allowed
method names, each method's params (``Method.params``, ``Method.infer``) and tuning grids
(``Method.tunable``) are the declared ones. A key the workflow sets itself
(:data:`mrichain.plan.stages.RESERVED`: ``threads``, ``seed``, ``model`` ...) is refused with what sets it.
"""
from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from mrichain.plan.conditions import SWEPT_STAGE
from mrichain.plan.stages import METHOD_STAGES, MOTION_STAGE, MRF_STAGE, RESERVED, method as declared_method

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = ROOT / "config" / "schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the allowed values."""


RESERVED_KEYWORD = "x-reserved"
"""Annotation of a generated mapping schema: ``{key: what sets it}`` for the keys it refuses
because the workflow sets them (:data:`mrichain.plan.stages.RESERVED`); :func:`_describe` says so."""


def _keys(properties: dict, **extra) -> dict:
    """Schema of a mapping taking only ``properties``, the reserved keys among the others annotated."""
    reserved = {k: why for k, why in RESERVED.items() if k not in properties}
    return {"type": "object", "additionalProperties": False, "properties": dict(properties),
            RESERVED_KEYWORD: reserved, **extra}


def params_schema(method, *, infer: bool | None = None) -> dict:
    """JSON schema of ``<stage>.params.<method>``: the declared keys (``Method.params``) and, for a
    learned method of a stage (``infer`` default: ``method.learned``), its ``infer`` sub-mapping
    (``Method.infer``); any other key is refused."""
    props = dict(method.params)
    if method.learned if infer is None else infer:
        props["infer"] = _keys(method.infer, description=f"{method.name}'s keyword arguments at inference")
    return _keys(props)


def stage_schema(stage) -> dict:
    """JSON schema of one method stage's config section, from its declaration."""
    names = list(stage.method_names)
    props = {
        "methods": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": names},
                    "description": f"{stage.name} methods run side by side on the same input"},
        "params": {"$ref": "#/$defs/method_params",
                   "properties": {m.name: params_schema(m) for m in stage.methods}},
    }
    tunable = {m.name: m.tunable for m in stage.methods if m.tunable}
    if tunable:
        props["tune"] = {
            "type": "object", "additionalProperties": False,
            "description": "per classical method, {parameter: [values]}: the grid searched on the val split",
            "properties": {
                name: _keys({p: {"type": "array", "minItems": 1, "items": item} for p, item in params.items()},
                            minProperties=1)
                for name, params in tunable.items()
            },
        }
    required = ["methods"]
    if stage.has_feed:
        props["feed"] = {"enum": names, "description": "the method whose output the next stages take"}
        required.append("feed")
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """``schema.yaml`` plus one generated section per method stage (:func:`stage_schema`)."""
    with open(path) as fh:
        schema = yaml.safe_load(fh)
    for stage in METHOD_STAGES:
        schema["properties"][stage.name] = stage_schema(stage)
        schema["required"].append(stage.name)
    motion = stage_schema(MOTION_STAGE)
    motion["description"] = (
        "Optional, with acquire.motion: the motion branch (mrichain.motion). At each acquisition whose "
        "acceleration is in `accelerations`, every level of acquire.motion.levels is acquired again with the "
        "head moving (test split), corrected by each method, and each method's image goes down the chain "
        "in place of the reconstruction (conditions <level><acq> for the feed, e.g. severeR4, and "
        "<level><acq><method> for the others, e.g. severeR4none)")
    motion["properties"]["accelerations"] = {
        "type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "number", "minimum": 1},
        "description": "the accelerations (of acquire.accelerations) acquired with the head moving"}
    motion["required"].append("accelerations")
    schema["properties"]["motion"] = motion
    mrf = schema["properties"]["mrf"]["properties"]
    for key in ("methods", "segment_from"):
        mrf[key]["items"] = {"enum": list(MRF_STAGE.method_names)}
    # only a trainer takes MRF params (the mapping methods none): no infer sub-mapping
    mrf["params"]["properties"] = {m.name: params_schema(m, infer=False) for m in MRF_STAGE.methods if m.params}
    return schema


def load_config(path: str | Path, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Read a YAML config and validate it; returns the config dict."""
    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    validate_config(cfg, schema_path)
    return cfg


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(err: jsonschema.ValidationError) -> str:
    key = _key(err.absolute_path)
    v = err.validator
    if v == "required":
        missing = err.message.split("'")[1]
        parent = _key(err.absolute_path)
        full = f"{parent}.{missing}" if err.absolute_path else missing
        return f"config key '{full}' is missing (required)"
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        reserved = err.schema.get(RESERVED_KEYWORD, {})
        extra = sorted(set(err.instance) - set(allowed), key=str)
        what = "; ".join(f"{k!r} is {reserved[k]}, not by the config" if k in reserved else f"unknown key {k!r}"
                         for k in extra)
        return f"config key '{key}': {what}; allowed keys: {', '.join(allowed) or 'none'}"
    if v == "enum":
        allowed = ", ".join(str(a) for a in err.validator_value)
        return f"config key '{key}': {err.instance!r} is not allowed; allowed values: {allowed}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"config key '{key}': {err.instance!r} is out of range; allowed values: {op} {err.validator_value}"
    return f"config key '{key}': {err.message}"


def validate_config(cfg: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``cfg`` against the JSON schema and cross-key rules; raise :class:`ConfigError`.

    All problems are reported together, one per line.
    """
    if not isinstance(cfg, dict):
        raise ConfigError("config must be a mapping of keys to values")
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    messages = [_describe(e) for e in errors]
    if not messages:
        messages = _cross_checks(cfg)
    if messages:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages))
    return cfg


def _cross_checks(cfg: dict) -> list[str]:
    msgs = []
    acq = cfg["acquire"]
    msgs += _centre_fraction_checks("acquire", acq["accelerations"], acq["center_fractions"])
    lo, hi = cfg["cohort"]["age_range"]
    if not lo < hi:
        msgs.append(f"config key 'cohort.age_range': lower bound {lo} must be below upper bound {hi}")
    snr_range = cfg["denoise"].get("params", {}).get("dncnn", {}).get("noise_snr_range")
    if snr_range is not None and not snr_range[0] < snr_range[1]:
        msgs.append(f"config key 'denoise.params.dncnn.noise_snr_range': lower SNR {snr_range[0]} "
                    f"must be below upper SNR {snr_range[1]}")
    msgs += _input_checks(cfg["input"])
    msgs += _motion_checks(cfg)
    if "mrf" in cfg:
        msgs += _mrf_checks(cfg["mrf"])
    total = sum(cfg["cohort"]["split"].values())
    if abs(total - 1.0) > 1e-6:
        msgs.append(f"config key 'cohort.split': fractions must sum to 1, got {total:g}")
    for stage in (s.name for s in METHOD_STAGES if s.has_feed):
        feed, methods = cfg[stage]["feed"], cfg[stage]["methods"]
        if feed not in methods:
            msgs.append(
                f"config key '{stage}.feed': {feed!r} must be one of the methods run; allowed values: {', '.join(methods)}"
            )
    for stage, methods in cfg["error_budget"].get("sweep_methods", {}).items():
        key = f"config key 'error_budget.sweep_methods.{stage}'"
        choosers = [SWEPT_STAGE] + [s.name for s in METHOD_STAGES if not s.has_feed]
        if stage not in choosers:
            msgs.append(f"{key}: only the reconstructions swept and a stage without a feed choose their sweep "
                        f"methods (a stage with one runs its feed); allowed stages: {', '.join(choosers)}")
            continue
        msgs += [f"{key}: {m!r} is not in {stage}.methods; allowed values: {', '.join(cfg[stage]['methods'])}"
                 for m in methods if m not in cfg[stage]["methods"]]
    for stage in (s.name for s in METHOD_STAGES):
        for section in ("params", "tune"):
            for name in cfg[stage].get(section, {}):
                if name not in cfg[stage]["methods"]:
                    msgs.append(
                        f"config key '{stage}.{section}.{name}': no such method in {stage}.methods; "
                        f"allowed values: {', '.join(cfg[stage]['methods'])}"
                    )
    return msgs


def check_motion_level(level: dict, n_shots: int) -> None:
    """Refuse a motion level (``acquire.motion.levels.<name>``) whose moved shots would not be a
    minority: ``movements`` must stay below half of ``n_shots`` (ValueError naming both). The
    simulator draws trajectories only after it (:func:`mrichain.simulate.motion.draw_trajectory`);
    it lives here so that checking a config imports no simulator (scipy, nibabel, h5py)."""
    n = int(level.get("movements", 0))
    if not 0 <= n < n_shots / 2:
        raise ValueError(f"movements ({n}) must be below half of the shots ({n_shots}): the head rests "
                         "during most of the scan, the pose a correction keeps")


def _motion_checks(cfg: dict) -> list[str]:
    """``acquire.motion``'s levels as the simulator checks them; ``motion`` (the branch) needs
    ``acquire.motion`` (the movement) and the simulated cohort, runs at accelerations the config
    acquires, and feeds one of its methods."""
    msgs = []
    movement = cfg["acquire"].get("motion")
    if movement is not None:  # each level as the simulator will draw it (its own check, run here first)
        for name, level in movement["levels"].items():
            try:
                check_motion_level(level, movement["shots"])
            except ValueError as exc:
                msgs.append(f"config key 'acquire.motion.levels.{name}.movements': {exc}")
    if "motion" not in cfg:
        return msgs
    sec = cfg["motion"]
    if "motion" not in cfg["acquire"]:
        msgs.append("config key 'motion': the motion branch needs acquire.motion (shots, ordering, levels)")
    acquired = [float(a) for a in cfg["acquire"]["accelerations"]]
    msgs += [f"config key 'motion.accelerations': {a:g} is not acquired; acquire.accelerations: "
             f"{', '.join(f'{x:g}' for x in acquired)}" for a in sec["accelerations"] if float(a) not in acquired]
    if sec["feed"] not in sec["methods"]:
        msgs.append(f"config key 'motion.feed': {sec['feed']!r} must be one of the methods run; allowed values: "
                    f"{', '.join(sec['methods'])}")
    msgs += [f"config key 'motion.params.{name}': no such method in motion.methods; allowed values: "
             f"{', '.join(sec['methods'])}" for name in sec.get("params", {}) if name not in sec["methods"]]
    return msgs


def _mrf_checks(mrf: dict) -> list[str]:
    """``mrf``: the sequence and dictionary as :mod:`mrichain.mrf` reads them (an empty grid, T2
    >= T1 everywhere, a rank above the time points: the error names the key), DRONE's settings,
    and ``segment_from`` among the methods run."""
    from mrichain.mrf.config import MrfConfigError
    from mrichain.mrf.grid import dictionary_settings
    from mrichain.mrf.sequence import FispSequence

    msgs = []
    try:
        seq = FispSequence.from_config(mrf.get("sequence"))
        dictionary_settings(mrf.get("dictionary"), seq.n_timepoints)
    except MrfConfigError as err:
        msgs.append(f"config key '{str(err).split(':')[0]}':{str(err).partition(':')[2]}")
    drone = mrf.get("params", {}).get("drone")
    if drone is not None and "drone" not in mrf["methods"]:
        msgs.append("config key 'mrf.params.drone': drone is not in mrf.methods")
    snr = (drone or {}).get("noise_snr_range")
    if snr is not None and not (isinstance(snr, list) and len(snr) == 2 and 0 < snr[0] <= snr[1]):
        msgs.append(f"config key 'mrf.params.drone.noise_snr_range': needs [low, high] dB with 0 < low <= high, got {snr!r}")
    msgs += [f"config key 'mrf.segment_from': {m!r} is not in mrf.methods; allowed values: {', '.join(mrf['methods'])}"
             for m in mrf.get("segment_from", []) if m not in mrf["methods"]]
    return msgs


INPUT_KEYS = {"simulated": set(), "bids": {"bids_dir", "participant_label", "derivatives", "validate"},
              "fastmri": {"dir", "accelerations", "center_fractions"}}
"""Keys each ``input.kind`` takes besides ``kind``, ``output_dir`` and ``models_dir``."""


def _input_checks(inp: dict) -> list[str]:
    """``input``: the keys of its kind present (``bids_dir`` for bids; ``dir``, ``accelerations``
    and ``center_fractions`` for fastmri), none of another kind's, one centre fraction per
    acceleration that leaves outer lines (as for ``acquire``), and for bids an ``output_dir``
    (or its default) outside ``bids_dir`` or under its ``derivatives/<pipeline>``
    (:func:`mrichain.realdata.derivatives.inside_raw_dataset`)."""
    kind, msgs = inp["kind"], []
    required = {"simulated": [], "bids": ["bids_dir"], "fastmri": ["dir", "accelerations", "center_fractions"]}[kind]
    msgs += [f"config key 'input.{k}' is missing (required for input.kind {kind})" for k in required if k not in inp]
    common = {"kind", "output_dir", "models_dir"}
    foreign = sorted(set(inp) - common - INPUT_KEYS[kind])
    msgs += [f"config key 'input.{k}': not used by input.kind {kind}; its keys: "
             f"{', '.join(sorted(INPUT_KEYS[kind] | common - {'kind'}))}" for k in foreign]
    if kind == "fastmri" and "accelerations" in inp and "center_fractions" in inp:
        msgs += _centre_fraction_checks("input", inp["accelerations"], inp["center_fractions"])
    if kind == "bids" and "bids_dir" in inp:
        from mrichain.realdata.derivatives import DERIVATIVES_ROOT, inside_raw_dataset

        out = inp.get("output_dir", DERIVATIVES_ROOT)
        if inside_raw_dataset(out, inp["bids_dir"]):
            default = "" if "output_dir" in inp else " (the default)"
            msgs.append(f"config key 'input.output_dir': {out}{default} is inside input.bids_dir {inp['bids_dir']} "
                        f"(resolved from {Path.cwd()}): the raw dataset is never written to; allowed: a folder "
                        f"outside it, or {inp['bids_dir']}/derivatives/<pipeline> (e.g. derivatives/mrichain)")
    return msgs


def _centre_fraction_checks(section: str, accelerations: list, fractions: list) -> list[str]:
    """``<section>.center_fractions``: one per acceleration, each leaving outer lines. fastMRI's
    mask functions sample round(W * cf) centre lines and spread the rest of the W / R lines
    equispaced or at random: the centre alone must stay below W / R lines."""
    key = f"config key '{section}.center_fractions'"
    if len(accelerations) != len(fractions):
        return [f"{key}: needs one value per acceleration ({len(accelerations)}), got {len(fractions)}"]
    return [f"{key}: {cf:g} at acceleration {r} samples at least 1/{r} of k-space in the centre alone; "
            f"use a fraction below {1 / r:.3g}" for r, cf in zip(accelerations, fractions) if r > 1 and cf * r >= 1]


def method_params(cfg: dict, stage: str, method: str) -> dict:
    """Keyword arguments configured for ``method`` of ``stage`` (``<stage>.params.<method>``, the
    MR fingerprinting branch's ``mrf.params.<method>``; empty dict if none)."""
    return dict(cfg[stage].get("params", {}).get(method, {}))


def train_params(cfg: dict, stage: str, method: str) -> dict:
    """A learned method's training params: its configured ones (``infer`` left out) with what the
    workflow knows in their place when unset: the acquisition's coil count for noise-level blind
    training (``noise_coils``: the RSS of ``acquire.n_coils``) and the cohort's age range for an
    age-bin model (``bin_range``: ``cohort.age_range``, so the bins cover every age the cohort can
    hold, not only the training subjects' span), the head's movement for a motion corrector
    (``motion``: ``acquire.motion``). Serves every declared stage, ``mrf`` included."""
    p = method_params(cfg, stage, method)
    p.pop("infer", None)
    declared = declared_method(stage, method).params
    if "noise_coils" in declared and p.get("noise_snr_range") is not None and p.get("noise_coils") is None:
        p["noise_coils"] = int(cfg["acquire"]["n_coils"])
    if "motion" in declared and p.get("motion") is None and "motion" in cfg["acquire"]:
        p["motion"] = dict(cfg["acquire"]["motion"])
    if "bin_range" in declared and p.get("bin_range") is None:
        p["bin_range"] = [float(a) for a in cfg["cohort"]["age_range"]]
    return p
