"""Provenance of a model or tuning card: what made the number, so a table traces back to it.

``hash_files(paths)``: the data hash of a card. ``provenance()`` -> ``{mrichain, git_commit, git_dirty, packages: {torch, monai, antspyx, sigpy},
config_sha256}``. Package versions come from the installed distributions' metadata (no import).
The config hash is set by the Snakefile (``MRICHAIN_CONFIG_SHA256``: SHA-256 of the whole run
config as sorted JSON) in the environment of every job it starts; it is recorded, not a rerun
trigger, so a card keeps the hash of the config that made it. ``None`` where a fact is unknown
(a command run by hand, an install outside a git checkout).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

from mrichain import __version__

CONFIG_HASH_ENV = "MRICHAIN_CONFIG_SHA256"
PACKAGES = ("torch", "monai", "antspyx", "sigpy")
_SOURCE = Path(__file__).resolve().parents[2]


def config_sha256(config: dict) -> str:
    """SHA-256 (hex) of a config as sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _git(*args: str) -> subprocess.CompletedProcess | None:
    if not (_SOURCE / ".git").exists():
        return None
    try:
        return subprocess.run(["git", "-C", str(_SOURCE), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def hash_files(paths) -> str:
    """SHA-256 over the names and bytes of ``paths`` (sorted): the data hash of a model or tuning card."""
    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        h.update(Path(p).name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def provenance() -> dict:
    """Versions, git commit and config hash of the process writing a card (see module doc)."""
    head = _git("rev-parse", "HEAD")
    dirty = _git("diff", "--quiet", "HEAD", "--", "src", "workflow", "config", "Snakefile")
    return {
        "mrichain": __version__,
        "git_commit": head.stdout.strip() if head is not None and head.returncode == 0 else None,
        "git_dirty": bool(dirty.returncode) if dirty is not None and dirty.returncode in (0, 1) else None,
        "packages": {p: _version(p) for p in PACKAGES},
        "config_sha256": os.environ.get(CONFIG_HASH_ENV),
    }
