"""Installing the repository's Snakemake profiles where ``snakemake --profile <name>`` finds them.

Snakemake 9 resolves a bare profile name (``snakemake.cli.get_profile_dir``) by looking for a
directory ``<name>`` in, in this order: the current directory, the user config directory and the
site config directory of ``platformdirs.AppDirs("snakemake", "snakemake")``. On Linux the user one
is ``$XDG_CONFIG_HOME/snakemake`` (when ``XDG_CONFIG_HOME`` is an absolute path) or else
``~/.config/snakemake``; the site one is ``/etc/xdg/snakemake`` (or the ``$XDG_CONFIG_DIRS``
entries). The repository keeps its profiles in ``profiles/<name>/``, which ``--profile slurm``
does not search, so :func:`install_profile` copies one into the user directory (computed here
with the same ``AppDirs`` call, so both always agree): ``mrichain profile install slurm``, then
``snakemake --profile slurm`` from the repository root.

An existing profile of the same name is never overwritten silently: an identical copy is left
as it is, a different one (a lab's own edits, or an older release of this profile) is refused
unless ``force`` is given. Even with ``force``, only a profile directory is replaced
(:func:`replace_refusal`: a profile file at its top, no other profile inside, no sub-directory
the new profile lacks), never a parent of profiles, a file or other content, and the swap is
atomic (:func:`install_profile`).
"""
from __future__ import annotations

import filecmp
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mrichain.plan.config import ROOT

#: The repository's profiles (``profiles/<name>/config.yaml``) in an editable install.
PROFILES_DIR = ROOT / "profiles"
#: The file names that make a directory a Snakemake profile (Snakemake's own pattern).
PROFILE_FILE = re.compile(r"(profile|config)(\.v\d+\+)?\.yaml")


class ProfileError(Exception):
    """A profile cannot be installed: unknown name, or a different profile is in the way."""


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install_profile` did: ``action`` is "installed", "unchanged" or "replaced"."""

    name: str
    source: Path
    dest: Path
    action: str

    @property
    def message(self) -> str:
        """One line for the user, ending with the command that uses the profile."""
        found_by_name = self.dest.name == self.name and self.dest.parent in snakemake_profile_dirs()
        use = f"snakemake --profile {self.name if found_by_name else self.dest}"
        what = {"installed": "installed", "replaced": "replaced (--force)",
                "unchanged": "already installed, identical: nothing to do"}[self.action]
        return f"profile {self.name}: {what}: {self.dest} (from {self.source}); run `{use}`"


def snakemake_profile_dirs() -> tuple[Path, Path]:
    """Snakemake's user and site config directories, where it looks for named profiles after the
    current directory (``snakemake.common.get_appdirs``; see the module docstring)."""
    from platformdirs import AppDirs  # a dependency of snakemake

    dirs = AppDirs("snakemake", "snakemake")
    return Path(dirs.user_config_dir), Path(dirs.site_config_dir)


def user_profile_dir(name: str) -> Path:
    """Where ``snakemake --profile <name>`` finds a user's profile: ``<user config dir>/<name>``."""
    return snakemake_profile_dirs()[0] / name


def _is_profile(path: Path) -> bool:
    return path.is_dir() and any(PROFILE_FILE.fullmatch(f.name) for f in path.iterdir())


def _profiles_inside(path: Path) -> list[str]:
    """Sub-directories of ``path`` (any depth, symlinks not followed) that are profiles themselves."""
    found = []
    for top, dirs, _ in os.walk(path):
        found += [str((Path(top) / d).relative_to(path)) for d in dirs if _is_profile(Path(top) / d)]
    return sorted(found)


def replace_refusal(dest: Path, source: Path) -> str | None:
    """Why ``force`` may not replace ``dest`` with the profile ``source``, or None when it may.

    ``dest`` (or, for a symlink, the directory it points to: only the link is replaced) must be a
    profile directory, of the shape the repository's profiles have:

    - a directory with a profile file (:data:`PROFILE_FILE`) at its top: not a file, not a
      directory without one (``--dest`` naming the parent of the profiles, ``.../snakemake``);
    - no profile inside it (a Snakemake config directory that happens to hold a ``config.yaml``);
    - no sub-directory that ``source`` lacks (data, a checkout, anything else a profile does not
      hold). Extra files at its top (a lab's notes) are the profile's own, and are replaced;
      symlinks inside it are removed as links, their targets untouched.

    The top level is checked first, so a large directory is refused without walking it.
    """
    if not _is_profile(dest):
        if dest.is_file():
            return f"{dest} is not a Snakemake profile (a file)"
        if not dest.exists():
            return f"{dest} is not a Snakemake profile (a dangling symlink)"
        held = sorted(p.name for p in dest.iterdir() if _is_profile(p))
        held_text = f", it holds the profiles {', '.join(held)}" if held else ""
        return (f"{dest} is not a Snakemake profile (a directory without profile.yaml or config.yaml at its top"
                f"{held_text}); --dest names the profile directory itself (e.g. {dest / source.name}), not its parent")
    subdirs = [p for p in dest.iterdir() if p.is_dir() and not p.is_symlink() and p.name != "__pycache__"]
    inside = sorted(p.name for p in subdirs if _is_profile(p))
    extra = sorted(p.name for p in subdirs if not (source / p.name).is_dir())
    if not inside and not extra:  # only sub-directories the new profile has too: look inside them
        inside = _profiles_inside(dest)
    if inside:
        return f"{dest} holds other profiles ({', '.join(inside)}); only a single profile directory is replaced"
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        return f"{dest} holds directories a profile does not: {shown}; not a profile of ours to replace"
    return None


def available_profiles(source_dir: Path = PROFILES_DIR) -> list[str]:
    """Names of the profiles shipped in ``source_dir`` (sub-directories holding a profile file)."""
    if not source_dir.is_dir():
        return []
    return sorted(p.name for p in source_dir.iterdir() if _is_profile(p))


def differences(a: Path, b: Path) -> list[str]:
    """Relative paths whose content differs between two directory trees (missing on one side too);
    empty when they are identical file by file (byte content; timestamps and modes do not count)."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    fa, fb = (files(a) if a.is_dir() else set()), (files(b) if b.is_dir() else set())
    diff = sorted(fa ^ fb)
    diff += [f for f in sorted(fa & fb) if not filecmp.cmp(a / f, b / f, shallow=False)]
    return sorted(diff)


def install_profile(name: str, dest: str | Path | None = None, force: bool = False,
                    source_dir: Path = PROFILES_DIR) -> InstallResult:
    """Copy ``source_dir/<name>`` to ``dest`` (default :func:`user_profile_dir`) and say what happened.

    dest: the profile directory to write (``.../snakemake/slurm``), not its parent. An identical
    existing profile is left alone ("unchanged"); a different one raises :class:`ProfileError`
    naming the path and the differing files, unless ``force``, which replaces it ("replaced").
    Something at ``dest`` that is not a profile directory (:func:`replace_refusal`) is never
    replaced: :class:`ProfileError` naming it and why, with or without ``force`` (an empty
    directory is filled, as if it were not there).

    The swap is atomic and deletes only the old profile: the copy is written to a hidden staging
    directory beside ``dest``; the old profile is renamed into it (a symlink is moved as a link,
    its target untouched), the copy renamed into place, and only then the staging directory
    (with the old profile) deleted. When the rename into place fails, the old profile is renamed
    back, so ``dest`` is the old profile or the new one, never neither.
    """
    source = source_dir / name
    if not _is_profile(source):
        names = available_profiles(source_dir)
        raise ProfileError(f"no profile named {name!r} in {source_dir}; available: "
                           f"{', '.join(names) if names else 'none (is mrichain installed from its repository, pip install -e .?)'}")
    dest = Path(dest).expanduser() if dest is not None else user_profile_dir(name)
    action, replacing = "installed", dest.exists() or dest.is_symlink()
    empty_dir = replacing and dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir())
    if replacing and not empty_dir:  # an empty directory (made beforehand) has nothing to lose
        if _is_profile(dest) and not differences(source, dest):
            return InstallResult(name, source, dest, "unchanged")
        refusal = replace_refusal(dest, source)
        if refusal:
            raise ProfileError(f"{refusal}; nothing was changed")
        if not force:
            diff = differences(source, dest)
            shown = ", ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
            raise ProfileError(f"{dest} already exists and differs from {source} ({shown}); not overwritten. "
                               f"Compare them (diff -r {source} {dest}) and rerun with --force to replace it")
        action = "replaced"
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    new, backup = staging / "new", staging / "previous"
    try:
        shutil.copytree(source, new, ignore=shutil.ignore_patterns("__pycache__"))
        if replacing:
            dest.rename(backup)  # the directory, or the symlink itself
            try:
                new.rename(dest)
            except BaseException:
                backup.rename(dest)
                raise
        else:
            new.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # unlinks symlinks inside, never follows them
    return InstallResult(name, source, dest, action)
