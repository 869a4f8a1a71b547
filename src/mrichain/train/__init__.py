"""Training of the learned methods: one engine (engine.py) shared by every model.

The engine's names are loaded on first use (PEP 562), so that the modules beside it that need no
torch (tuning cards, manifests, parameters) import without it: a classical method's job reads its
tuning card through :mod:`mrichain.train.tune` and would otherwise pay torch's import.
"""
from __future__ import annotations

__all__ = ["FitResult", "TrainSettings", "fit", "hash_files", "load_trained", "seed_everything", "select_device"]


def __getattr__(name: str):
    if name in __all__:
        from mrichain.train import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'mrichain.train' has no attribute {name!r}")
