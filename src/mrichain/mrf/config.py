"""Reading the ``mrf:`` config block: errors that name the key, and the checks that raise them.

Every check raises :class:`MrfConfigError` (a :class:`mrichain.UserError`, so the command line
prints it as one line) whose message starts with the full key, e.g.
``mrf.sequence.n_timepoints: must be an integer >= 10, got 3``.
"""
from __future__ import annotations

from typing import Any

from mrichain import UserError


class MrfConfigError(UserError, ValueError):
    """A bad value in the ``mrf:`` config block; the message starts with the key."""


def check_keys(block: dict | None, allowed: dict, key: str) -> dict:
    """``block`` merged over ``allowed`` (the defaults); an unknown key raises, naming it."""
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise MrfConfigError(f"{key}: must be a mapping, got {type(block).__name__}")
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise MrfConfigError(f"{key}.{unknown[0]}: unknown key; allowed: {sorted(allowed)}")
    return {**allowed, **block}


def as_int(value: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi], else :class:`MrfConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise MrfConfigError(f"{key}: must be an integer, got {value!r}")
    value = int(value)
    _check_range(value, key, lo, hi)
    return value


def as_float(value: Any, key: str, lo: float | None = None, hi: float | None = None, *,
             lo_open: bool = False) -> float:
    """``value`` as a float in [lo, hi] ((lo, hi] with ``lo_open``), else :class:`MrfConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MrfConfigError(f"{key}: must be a number, got {value!r}")
    value = float(value)
    if lo_open and lo is not None and value <= lo:
        raise MrfConfigError(f"{key}: must be > {lo:g}, got {value:g}")
    _check_range(value, key, lo, hi)
    return value


def as_range(value: Any, key: str, lo: float = 0.0, lo_open: bool = True) -> tuple[float, float]:
    """A ``[low, high]`` pair with ``lo < low <= high`` (``lo <= low`` unless ``lo_open``)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise MrfConfigError(f"{key}: must be a pair [low, high], got {value!r}")
    a = as_float(value[0], f"{key}[0]", lo, lo_open=lo_open)
    b = as_float(value[1], f"{key}[1]", lo, lo_open=lo_open)
    if b < a:
        raise MrfConfigError(f"{key}: low {a:g} is above high {b:g}")
    return a, b


def _check_range(value, key, lo, hi) -> None:
    if lo is not None and value < lo:
        raise MrfConfigError(f"{key}: must be >= {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise MrfConfigError(f"{key}: must be <= {hi:g}, got {value:g}")
