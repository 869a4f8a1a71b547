"""Which method of each stage is classical and which is learned (needs a training job).

Kept import-light (no torch) because the Snakefile reads it at parse time; tests check it against
each stage package's ``METHODS`` and ``TRAINERS`` registries.
"""
import importlib
from collections.abc import Mapping

CLASSICAL = {
    "reconstruct": ("zerofilled", "cs"),
    "denoise": ("antsnlm",),
    "register": ("antssyn",),
    "segment": ("atropos",),
    "predict": ("linear",),
}
LEARNED = {
    "reconstruct": ("varnet",),
    "denoise": ("dncnn",),
    "register": ("voxelmorph",),
    "segment": ("unet",),
    "predict": ("sfcn",),
}
PACKAGES = {"reconstruct": "recon", "denoise": "denoise", "register": "register", "segment": "segment",
            "predict": "predict"}


def is_learned(stage: str, method: str) -> bool:
    return method in LEARNED.get(stage, ())


def model_path(stage: str, method: str) -> str:
    """The trained state dict of a learned method: ``models/<stage>-<method>.pt``."""
    return f"models/{stage}-{method}.pt"


class Registry(Mapping):
    """A stage's methods by name, imported on first use (``"module:function"`` entries).

    A job that runs ANTs does not pay for importing torch and MONAI, and vice versa: with
    ~120 short jobs per run that start-up time is a sizeable part of the wall time.
    """

    def __init__(self, entries: dict[str, str]):
        self._entries = dict(entries)

    def __getitem__(self, name: str):
        module, attr = self._entries[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self._entries})"
