"""Splitting a learned method's config ``params`` into training-loop settings and model hyper-parameters."""
from __future__ import annotations


def split_loop_and_model(params: dict | None, loop_defaults: dict, model_defaults: dict, name: str) -> tuple[dict, dict]:
    """``params`` over the defaults -> (loop settings, model hyper-parameters).

    ``device`` and ``amp`` may be given on top of ``loop_defaults``. Unknown keys raise
    ``ValueError`` naming them (a typo must not silently train with the defaults).
    """
    params = dict(params or {})
    loop = {k: params.pop(k, v) for k, v in loop_defaults.items()}
    hyper = {k: params.pop(k, v) for k, v in model_defaults.items()}
    for k in ("device", "amp"):
        if k in params:
            loop[k] = params.pop(k)
    if params:
        raise ValueError(f"{name}: unknown params {sorted(params)}")
    return loop, hyper
