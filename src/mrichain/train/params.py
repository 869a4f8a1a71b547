"""Splitting a learned method's config ``params`` into training-loop settings and the rest."""
from __future__ import annotations

from dataclasses import fields

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
