"""Checking a training manifest ``{"train": [item, ...], "val": [item, ...]}`` before a job trains."""
from __future__ import annotations


def check_manifest(manifest: dict, keys: tuple[str, ...]) -> list[str]:
    """Raise ``ValueError`` if a split is empty or an item lacks one of ``keys``; return every
    file path of those keys (train then val), e.g. for the model card's training-data hash."""
    for split in ("train", "val"):
        if not manifest.get(split):
            raise ValueError(f"manifest has no {split!r} items")
    items = manifest["train"] + manifest["val"]
    for item in items:
        missing = [k for k in keys if k not in item]
        if missing:
            raise ValueError(f"manifest item {item} lacks {missing}")
    return [item[k] for item in items for k in keys]
