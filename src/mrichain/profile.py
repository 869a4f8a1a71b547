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
unless ``force`` is given.
"""
from __future__ import annotations

import filecmp
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mrichain.config import ROOT

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
    The copy is written beside ``dest`` first and moved into place, so a failed copy leaves the
    old profile as it was.
    """
    source = source_dir / name
    if not _is_profile(source):
        names = available_profiles(source_dir)
        raise ProfileError(f"no profile named {name!r} in {source_dir}; available: "
                           f"{', '.join(names) if names else 'none (is mrichain installed from its repository, pip install -e .?)'}")
    dest = Path(dest).expanduser() if dest is not None else user_profile_dir(name)
    action = "installed"
    if dest.exists() or dest.is_symlink():
        diff = differences(source, dest) if dest.is_dir() else [dest.name]
        if not diff:
            return InstallResult(name, source, dest, "unchanged")
        if not force:
            shown = ", ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
            raise ProfileError(f"{dest} already exists and differs from {source} ({shown}); not overwritten. "
                               f"Compare them (diff -r {source} {dest}) and rerun with --force to replace it")
        action = "replaced"
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("__pycache__"))
        if action == "replaced":
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            else:
                dest.unlink()  # a file, or a symlink (to the repository's profile, say): not its target
        (staging / name).rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return InstallResult(name, source, dest, action)
