"""Untrusted data: file names, checkpoints, headers, cards and directories from elsewhere run no
code, exhaust no memory, overwrite nothing of the user's and fail with one line naming the file."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from bids_dataset import write_bids_dataset
from dag import TEST_CONFIG, snakemake
from fastmri_files import write_fastmri_file
from mrichain.config import load_config

# ---- file names never reach a shell unquoted -------------------------------------------------

#: A file name that runs ``touch PWNED`` in the job's directory if a shell ever reads it unquoted.
HOSTILE_FASTMRI = "file_brain_AXT1_202_6000393$(touch PWNED).h5"
#: A directory (the target of a DataLad-style symlinked T1w) whose name splits a command at ``;``.
HOSTILE_TARGET = "annex; touch PWNED #"


def hostile_inputs(tmp: Path) -> dict:
    """A fastMRI directory with a space in its path and a ``$(...)`` file name, and a BIDS dataset
    (in a directory with a space) whose sub-02 T1w is a symlink into a directory named with ``;``;
    derivatives go to an output directory with a space. Returns the configs and the hostile paths."""
    fastmri_dir = tmp / "fast mri"
    fastmri_dir.mkdir()
    write_fastmri_file(fastmri_dir / HOSTILE_FASTMRI, n_slices=2, seed=1, acquisition="AXT1")
    bids = tmp / "my study"
    records = write_bids_dataset(bids, load_config(TEST_CONFIG), n_subjects=2, voxel_mm=4.0, two_sessions="none")
    t1w = Path(records[1]["T1w"])
    target = tmp / HOSTILE_TARGET / t1w.name
    target.parent.mkdir()
    t1w.rename(target)
    t1w.symlink_to(target)
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    configs = {}
    for kind, inp in (("fastmri", {"kind": "fastmri", "dir": str(fastmri_dir), "accelerations": [4, 1],
                                   "center_fractions": [0.08, 0.08]}),
                      ("bids", {"kind": "bids", "bids_dir": str(bids)})):
        configs[kind] = tmp / f"{kind}.yaml"
        configs[kind].write_text(yaml.safe_dump({**cfg, "input": {**inp, "output_dir": str(tmp / "deriv out")}}))
    return {"configs": configs, "paths": [str(fastmri_dir / HOSTILE_FASTMRI), str(target)], "records": records}


def shell_commands(proc) -> list[str]:
    """The ``Shell command:`` lines of a dry run with ``-p`` (one line per job)."""
    prefix = "Shell command: "
    return [line[len(prefix):] for line in proc.stdout.splitlines() if line.startswith(prefix)]


def test_planned_commands_keep_hostile_paths_whole(tmp_path):
    """Every planned command of a run with hostile names, split as bash splits it, carries each
    hostile path as one whole argument, and no argument holds a fragment of one: nothing in a
    file name is executed or splits a command (the dry run plans every real-input rule)."""
    inputs = hostile_inputs(tmp_path)
    for kind, cfg in inputs["configs"].items():
        proc = snakemake(tmp_path / f"run-{kind}", "-n", "-p", configfile=cfg)
        commands = [c for c in shell_commands(proc) if "PWNED" in c or "deriv out" in c]
        assert commands, proc.stdout[-2000:]
        rules = set()
        for cmd in commands:
            tokens = shlex.split(cmd)  # POSIX rules: what bash passes as argv (single quotes are literal)
            assert "touch" not in tokens, cmd
            for token in tokens:
                if "$(" in token or "annex;" in token:
                    assert token in inputs["paths"], (token, cmd)
                if "deriv out" in token:
                    assert token.startswith(str(tmp_path / "deriv out") + "/"), (token, cmd)
            rules.add(tokens[1])
        expected = {"fastmri": {"reconstruct", "denoise", "fastmri-score", "real-summary"},
                    "bids": {"prepare", "restore", "real-summary"}}[kind]
        assert expected <= rules, rules
    assert not list(tmp_path.rglob("PWNED"))


def test_a_brace_in_an_input_name_is_refused_at_plan_time(tmp_path):
    """``{`` in a file name is a wildcard to Snakemake: refused before any job, naming the file."""
    d = tmp_path / "fastmri"
    d.mkdir()
    write_fastmri_file(d / "file_brain_AXT1_{x}.h5", n_slices=2, acquisition="AXT1")
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**cfg, "input": {"kind": "fastmri", "dir": str(d), "accelerations": [4],
                                                     "center_fractions": [0.08]}}))
    proc = snakemake(tmp_path / "run", "-n", configfile=path, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "file_brain_AXT1_{x}.h5" in out and "WildcardError" not in out and "Traceback" not in out
