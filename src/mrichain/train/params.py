"""A learned method's parameters: its config ``params`` split into training-loop settings and the
rest, and a model card's ``hyper_parameters`` checked before a network is built from them."""
from __future__ import annotations

import reprlib
from dataclasses import fields

from mrichain import UserError
from mrichain.train.engine import TrainSettings


class UnknownParameterError(KeyError, ValueError):
    """A config key that the method does not know (a typo must not silently train defaults)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def split_params(params: dict | None, defaults: dict, seed: int, name: str = "") -> tuple[TrainSettings, dict]:
    """Merge ``params`` over ``defaults`` -> (:class:`TrainSettings`, everything else).

    Any :class:`TrainSettings` field may be given even if ``defaults`` lacks it; other unknown
    keys raise :class:`UnknownParameterError` naming them. The rest (model hyper-parameters,
    data options) is returned as a dict for the method to use.
    """
    loop_keys = {f.name for f in fields(TrainSettings)} - {"seed"}
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults) - loop_keys)
    if unknown:
        known = sorted(set(defaults) | loop_keys)
        raise UnknownParameterError(f"{name + ': ' if name else ''}unknown training parameter(s) {unknown}; known: {known}")
    merged = {**defaults, **params}
    settings = TrainSettings(seed=int(seed), **{k: merged[k] for k in loop_keys if k in merged})
    return settings, {k: v for k, v in merged.items() if k not in loop_keys}


def hyper_parameters(rest: dict, defaults: dict) -> dict:
    """The model hyper-parameters (the keys of ``defaults``) from :func:`split_params`'s rest,
    integer lists (channel widths, shapes) cast to ``int`` so the card and the rebuilt model agree."""
    def cast(value, default):
        if isinstance(default, list) and all(isinstance(d, int) for d in default):
            return [int(v) for v in value]
        return value

    return {k: cast(rest[k], d) for k, d in defaults.items()}


# ---- a model card's hyper-parameters, checked before the network is built ----------------------


class CardError(UserError, ValueError):
    """A model card (the JSON beside a ``.pt``) whose hyper-parameters a network must not be built from."""


def check_hyper_parameters(card_path, hp, stage_name: str, method_name: str, defaults: dict, *,
                           extra: dict | None = None, required=()) -> dict:
    """A card's ``hyper_parameters`` merged over ``defaults``, each value checked against the JSON
    schema the method declares for the config key of that name (:attr:`mrichain.plan.stages.Method.params`:
    the bounds a config may train with are the bounds a card may build); ``extra``: schemas of the
    keys that are no config key (fixed channel counts, a size taken from the data). Raises
    :class:`CardError` naming the card file and the key for an unknown or missing key or a value
    outside its schema, so a card from elsewhere cannot size a network (``cascades: 1e6``)
    before a weight is read. ``required``: keys the card must hold (the others default)."""
    import jsonschema

    from mrichain.plan.stages import method

    if not isinstance(hp, dict):
        raise CardError(f"{card_path}: hyper_parameters must be a JSON object, got {type(hp).__name__}")
    declared = method(stage_name, method_name)
    schemas = {**declared.params, **(extra or {})}
    unknown = sorted(set(hp) - set(defaults), key=str)
    if unknown:
        raise CardError(f"{card_path}: unknown hyper-parameter(s) {reprlib.repr(unknown)}; known: {sorted(defaults)}")
    missing = [k for k in required if k not in hp]
    if missing:
        raise CardError(f"{card_path}: hyper_parameters lack {missing} (the network cannot be rebuilt without them)")
    merged = {**defaults, **hp}
    for key, value in merged.items():
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schemas[key]).iter_errors(value))
        if error is not None:
            raise CardError(f"{card_path}: hyper-parameter {key!r} is {reprlib.repr(value)}: {error.message}")
    return merged
