"""Untrusted data: file names, checkpoints, headers, model cards, config params and directories
from elsewhere run no code, exhaust no memory, overwrite nothing of the user's, do not change a
result by how an image is stored, and fail with one line naming the file (exit status 2)."""
from __future__ import annotations

import copy
import dataclasses
import gzip
import importlib
import inspect
import io
import json
import os
import re
import pathlib
import shlex
import tracemalloc
from pathlib import Path

import h5py
import jsonschema
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from bids_dataset import write_bids_dataset
from dag import ROOT, TEST_CONFIG, snakemake
from fastmri_files import header_xml, write_fastmri_file
from mrichain import UserError, cli
from mrichain.plan import stages
from mrichain.cli import main
from mrichain.plan.config import ConfigError, load_config, validate_config
from mrichain.io import (MAX_IMAGE_BYTES_ENV, PLAUSIBLE_VOXEL_MM, InputImageError, KSpaceFile, check_volume,
                         load_image, nifti_image, read_kspace, read_reconstruction_rss, save_image, save_json,
                         write_kspace)
from mrichain.plan.manifests import Plan
from mrichain.profile import PROFILES_DIR, ProfileError, install_profile
from mrichain.realdata.plan import RealInput, RealPlan
from mrichain.realdata.structural import to_ras
from mrichain.plan.stages import MRF_STAGE, stage
from mrichain.train import TrainSettings, fit, seed_everything
from mrichain.train.engine import checkpoint_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ==== file names never reach a shell unquoted ========================================================

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


def test_every_file_in_a_rule_shell_is_quoted():
    """Statically, beside the planned commands above: no rule file names an input, output or log
    in a shell command without ``:q`` (a rule the hostile dry runs do not plan is covered too)."""
    pattern = re.compile(r"\{(?:input|output|log)(?:\.[A-Za-z_]\w*)?\}")
    unquoted = [f"{f.name}: {m.group(0)}" for f in sorted((ROOT / "workflow" / "rules").glob("*.smk"))
                for m in pattern.finditer(f.read_text())]
    assert unquoted == []


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


# ==== checkpoints and model files, profile install, the raw BIDS dataset =============================


class Payload:
    """Unpickling this writes ``marker``: what a planted pickle would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _plant(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


# ---- checkpoints and model files ---------------------------------------------------------------
def _toy_fit(out: Path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=g)
    y = x.sum(1)
    data = torch.utils.data.TensorDataset(x, y)
    seed_everything(0)
    model = torch.nn.Linear(4, 1)

    def loss_fn(m, batch, device):
        return torch.nn.functional.mse_loss(m(batch[0]).squeeze(-1), batch[1])

    def score_fn(m, d, device):
        return -loss_fn(m, d.tensors, device).item()

    return fit(model, data, data, loss_fn=loss_fn, score_fn=score_fn, out_path=out, card={"architecture": "linear"},
               settings=TrainSettings(epochs=2, batch_size=8, seed=0), progress=False)


def test_a_planted_checkpoint_is_ignored_and_never_run(tmp_path, capsys):
    out = tmp_path / "models" / "toy-linear.pt"
    marker = tmp_path / "PWNED"
    ckpt = checkpoint_path(out)
    _plant(ckpt, {"fingerprint": "anything", "epoch": 0, "payload": Payload(marker)})
    res = _toy_fit(out)
    assert not marker.exists()
    assert res.resumed_from_epoch is None and res.epochs_run == 2
    log = capsys.readouterr().out
    assert f"ignoring checkpoint {ckpt}" in log and "weights_only" in log


@pytest.mark.parametrize("content, why", [
    ([1, 2, 3], "not a dict"),
    (b"not a torch file", "cannot be loaded"),
])
def test_a_checkpoint_that_is_not_ours_is_ignored_with_the_reason(tmp_path, capsys, content, why):
    out = tmp_path / "toy-linear.pt"
    ckpt = checkpoint_path(out)
    if isinstance(content, bytes):
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(content)
    else:
        _plant(ckpt, content)
    res = _toy_fit(out)
    assert res.resumed_from_epoch is None and res.epochs_run == 2
    log = capsys.readouterr().out
    assert f"ignoring checkpoint {ckpt}" in log and why in log


def test_a_planted_model_file_is_refused_naming_it_and_never_run(tmp_path, capsys):
    from mrichain.cli import main
    from mrichain.io import save_image

    import numpy as np

    marker = tmp_path / "PWNED"
    pt = tmp_path / "models" / "denoise-dncnn.pt"
    _plant(pt, {"layer.weight": Payload(marker)})
    pt.with_suffix(".json").write_text(json.dumps({"hyper_parameters": {"depth": 3, "channels": 4}}))
    image = tmp_path / "in.nii.gz"
    save_image(np.arange(512, dtype=np.float32).reshape(8, 8, 8), np.eye(4), image)
    rc = main(["denoise", "--method", "dncnn", "--input", str(image), "--output", str(tmp_path / "out.nii.gz"),
               "--model", str(pt), "--params", '{"device": "cpu"}'])
    assert rc == 2 and not marker.exists() and not (tmp_path / "out.nii.gz").exists()
    err = capsys.readouterr().err
    assert f"mrichain denoise: error: {pt}" in err and "weights_only" in err and len(err.strip().splitlines()) == 1


def test_a_model_file_of_the_wrong_kind_is_a_user_error(tmp_path):
    from mrichain.denoise.dncnn import load_model

    pt = tmp_path / "denoise-dncnn.pt"
    pt.with_suffix(".json").write_text(json.dumps({"hyper_parameters": {"depth": 3, "channels": 4}}))
    _plant(pt, [torch.zeros(3)])  # loads under weights_only, but is no state dict
    with pytest.raises(UserError, match=f"{pt}: .*not a state dict"):
        load_model(str(pt))
    _plant(pt, {"other.weight": torch.zeros(3)})  # a state dict of another network
    with pytest.raises(UserError, match=f"{pt}: .*does not match"):
        load_model(str(pt))


# ---- profile install --force ---------------------------------------------------------------------
def _profiles_parent(tmp_path) -> tuple[Path, dict[str, str]]:
    """A Snakemake config directory: two profiles and a file of the user's."""
    parent = tmp_path / "snakemake"
    files = {"slurm/config.yaml": "executor: slurm\njobs: 7\n", "local/config.yaml": "cores: 2\n",
             "notes.txt": "the lab's notes\n"}
    for rel, text in files.items():
        (parent / rel).parent.mkdir(parents=True, exist_ok=True)
        (parent / rel).write_text(text)
    return parent, files


def _unchanged(root: Path, files: dict[str, str]) -> bool:
    return all((root / rel).read_text() == text for rel, text in files.items())


def test_force_on_the_parent_of_profiles_deletes_nothing(tmp_path):
    parent, files = _profiles_parent(tmp_path)
    for force in (False, True):
        with pytest.raises(ProfileError, match=f"{parent} is not a Snakemake profile.*holds the profiles local, slurm"):
            install_profile("slurm", dest=parent, force=force)
        assert _unchanged(parent, files)
    (parent / "config.yaml").write_text("cores: 1\n")  # a profile file at the top, and profiles below it
    with pytest.raises(ProfileError, match=f"{parent} holds other profiles .*local, slurm"):
        install_profile("slurm", dest=parent, force=True)
    assert _unchanged(parent, files) and (parent / "config.yaml").read_text() == "cores: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snakemake"]  # no staging left behind
    # the profile itself, beside its siblings: replaced, and only it
    assert install_profile("slurm", dest=parent / "slurm", force=True).action == "replaced"
    assert (parent / "slurm" / "config.yaml").read_bytes() == (PROFILES_DIR / "slurm" / "config.yaml").read_bytes()
    del files["slurm/config.yaml"]
    assert _unchanged(parent, files)
    assert sorted(p.name for p in parent.iterdir()) == ["config.yaml", "local", "notes.txt", "slurm"]


def test_force_refuses_a_profile_with_other_directories_and_a_file(tmp_path):
    dest = tmp_path / "slurm"
    (dest / "data").mkdir(parents=True)
    (dest / "config.yaml").write_text("jobs: 1\n")
    (dest / "data" / "scan.nii.gz").write_text("x")
    with pytest.raises(ProfileError, match=f"{dest} holds directories a profile does not: data"):
        install_profile("slurm", dest=dest, force=True)
    assert (dest / "data" / "scan.nii.gz").read_text() == "x"
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(ProfileError, match=f"{a_file} is not a Snakemake profile"):
        install_profile("slurm", dest=a_file, force=True)
    assert a_file.read_text() == "mine"


def test_a_symlinked_profile_is_replaced_as_a_link_never_through_it(tmp_path):
    target = tmp_path / "lab" / "slurm"
    target.mkdir(parents=True)
    (target / "config.yaml").write_text("jobs: 7\n")
    dest = tmp_path / "snakemake" / "slurm"
    dest.parent.mkdir()
    dest.symlink_to(target)
    assert install_profile("slurm", dest=dest, force=True).action == "replaced"
    assert not dest.is_symlink()
    assert (dest / "config.yaml").read_bytes() == (PROFILES_DIR / "slurm" / "config.yaml").read_bytes()
    assert (target / "config.yaml").read_text() == "jobs: 7\n"
    # a link to the parent of profiles: refused, its target untouched
    parent, files = _profiles_parent(tmp_path / "other")
    link = tmp_path / "link"
    link.symlink_to(parent)
    with pytest.raises(ProfileError, match="not a Snakemake profile"):
        install_profile("slurm", dest=link, force=True)
    assert link.is_symlink() and _unchanged(parent, files)


def test_a_failed_swap_leaves_the_old_profile_in_place(tmp_path, monkeypatch):
    dest = tmp_path / "snakemake" / "slurm"
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text("executor: slurm\njobs: 7\n")
    rename = pathlib.Path.rename
    failed = []

    def rename_failing_once_onto_dest(self, target):
        if Path(target) == dest and not failed:  # installing the new copy fails (disk full, say)
            failed.append(self)
            raise OSError(28, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", rename_failing_once_onto_dest)
    with pytest.raises(OSError, match="No space left"):
        install_profile("slurm", dest=dest, force=True)
    assert failed and (dest / "config.yaml").read_text() == "executor: slurm\njobs: 7\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["slurm"]  # staging and backup cleaned up


# ---- nothing written inside a BIDS dataset ------------------------------------------------------
@pytest.fixture(scope="module")
def test_config():
    return yaml.safe_load(open(ROOT / "config" / "test.yaml"))


def _bids_config(cfg, bids: Path, output_dir: str | None) -> dict:
    c = copy.deepcopy(cfg)
    c["input"] = {"kind": "bids", "bids_dir": str(bids), **({"output_dir": output_dir} if output_dir else {})}
    return c


@pytest.fixture
def bids(tmp_path):
    root = tmp_path / "study"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "study", "BIDSVersion": "1.9.0"}')
    return root


@pytest.mark.parametrize("output_dir", ["{bids}", "{bids}/sub-01", "{bids}/derivatives", "{bids}/./sub-01/..",
                                        "{link}", "{link}/code"])
def test_output_dir_inside_the_dataset_is_a_config_error(test_config, bids, tmp_path, output_dir):
    (tmp_path / "link").symlink_to(bids)
    value = output_dir.format(bids=bids, link=tmp_path / "link")
    msg = str(pytest.raises(ConfigError, validate_config, _bids_config(test_config, bids, value)).value)
    assert f"config key 'input.output_dir': {value} is inside input.bids_dir {bids}" in msg
    assert "derivatives/<pipeline>" in msg


def test_output_dir_is_resolved_from_the_working_directory_and_allowed_outside_or_in_derivatives(
        test_config, bids, tmp_path, monkeypatch):
    for allowed in (bids / "derivatives" / "mrichain", tmp_path / "out", tmp_path / "study-derivatives"):
        validate_config(_bids_config(test_config, bids, str(allowed)))
    monkeypatch.chdir(bids)
    with pytest.raises(ConfigError, match="config key 'input.output_dir': out is inside input.bids_dir"):
        validate_config(_bids_config(test_config, Path("."), "out"))
    # the default, results/derivatives/mrichain, is inside the dataset when the run is started there
    with pytest.raises(ConfigError, match="config key 'input.output_dir': results/derivatives/mrichain"):
        validate_config(_bids_config(test_config, bids, None))
    validate_config(_bids_config(test_config, Path("."), "derivatives/mrichain"))


def _real_plan(cfg, bids, output_dir):
    c = _bids_config(cfg, bids, output_dir)
    inputs = [RealInput("sub-01", str(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"), {"subject": "01"}, age=40.0)]
    return RealPlan(c, Plan(c), inputs)


def _files(real: RealPlan) -> list[str]:
    summary = real.summary_files()
    return real.outputs() + [v for k, v in summary.items() if k != "scans"] + summary["scans"]


def test_real_plan_writes_nothing_inside_the_dataset(test_config, bids, monkeypatch):
    monkeypatch.chdir(bids.parent)
    real = _real_plan(test_config, bids, str(bids / "derivatives" / "mrichain"))
    resolved_bids = bids.resolve()
    for f in _files(real):
        p = Path(f).resolve()
        assert not p.is_relative_to(resolved_bids) or p.is_relative_to(resolved_bids / "derivatives" / "mrichain"), f
    for output_dir in (str(bids), "study/sub-01"):
        with pytest.raises(UserError, match=f"{bids / 'dataset_description.json'}|is inside the BIDS dataset"):
            _real_plan(test_config, bids, output_dir)
    monkeypatch.chdir(bids)  # the work files (results/realdata) would land in the dataset
    with pytest.raises(UserError, match="results/realdata.* is inside the BIDS dataset"):
        _real_plan(test_config, bids, str(bids / "derivatives" / "mrichain"))


# ==== headers, cards and degenerate volumes: sizes checked before allocation =========================


MiB = 1024 ** 2


def lying_nifti(path: Path, shape, dtype=np.float32, voxel_mm=1.0) -> Path:
    """A NIfTI whose header claims ``shape`` voxels of ``dtype`` but that holds 8 voxels' worth of
    bytes (a .gz name: gzip-compressed, the trailer's ISIZE honest about the little it holds)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + np.zeros(8, dtype).tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def peak_bytes(fn) -> tuple[BaseException | None, int]:
    """(the exception ``fn()`` raised or None, the peak of Python/numpy allocations while it ran)."""
    tracemalloc.start()
    err = None
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        err = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return err, peak


def one_line_naming(exc: BaseException, path) -> str:
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


# ---- NIfTI headers ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["claims512mib.nii.gz", "claims512mib.nii"])
def test_nifti_header_claiming_more_than_the_file_holds_fails_before_reading(tmp_path, name):
    path = lying_nifti(tmp_path / name, (512, 512, 512), np.float32)  # 512 MiB claimed, under the limit
    assert path.stat().st_size < 1000
    err, peak = peak_bytes(lambda: load_image(path))
    assert isinstance(err, InputImageError)
    msg = one_line_naming(err, path)
    assert "claims" in msg and str(512 ** 3 * 4) in msg
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB allocated before refusing"


def test_nifti_above_the_byte_limit_is_refused_and_the_limit_is_configurable(tmp_path, monkeypatch):
    path = save_image(np.ones((16, 16, 16), np.float32), np.eye(4), tmp_path / "big.nii.gz")  # 16 KiB of voxels
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, "4096")
    with pytest.raises(InputImageError) as ei:
        load_image(path)
    msg = one_line_naming(ei.value, path)
    assert MAX_IMAGE_BYTES_ENV in msg and "4096" in msg
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, str(1 * MiB))
    assert load_image(path).shape == (16, 16, 16)
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, "lots")
    with pytest.raises(UserError, match=f"{MAX_IMAGE_BYTES_ENV}.*'lots'"):
        load_image(path)


def test_implausible_voxel_sizes_are_refused_where_real_images_enter(tmp_path):
    from mrichain.realdata.run import prepare_file

    ok = save_image(np.ones((8, 8, 8), np.float32), np.diag([1.0, 1.2, 3.0, 1.0]), tmp_path / "ok.nii.gz")
    assert load_image(ok, voxel_mm_range=PLAUSIBLE_VOXEL_MM).shape == (8, 8, 8)
    # a file written in micrometres: 1,000 "mm" voxels (prepare would build a 7,501^3 grid at 1 mm)
    um = save_image(np.ones((8, 8, 8), np.float32), np.diag([1000.0, 1000.0, 1000.0, 1.0]), tmp_path / "um.nii.gz")
    tiny = save_image(np.ones((8, 8, 8), np.float32), np.diag([1.0, 1.0, 0.01, 1.0]), tmp_path / "tiny.nii.gz")
    for path, bad in ((um, "1000"), (tiny, "0.01")):
        with pytest.raises(InputImageError) as ei:
            load_image(path, voxel_mm_range=PLAUSIBLE_VOXEL_MM)
        msg = one_line_naming(ei.value, path)
        assert bad in msg and "0.1" in msg and "10" in msg
    out = tmp_path / "out"
    with pytest.raises(InputImageError) as ei:
        prepare_file(um, target_mm=1.0, out_image=out / "i.nii.gz", out_mask=out / "m.nii.gz",
                     out_prep=out / "p.json", out_info=out / "info.json")
    one_line_naming(ei.value, um)
    assert not out.exists()


def test_resampling_refuses_an_output_grid_above_the_limit(monkeypatch):
    from mrichain.realdata.structural import resample_to_resolution

    img = nifti_image(np.ones((4, 4, 4), np.float32), np.diag([100.0, 100.0, 100.0, 1.0]))
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, str(10 * MiB))  # the 1 mm grid: 301^3 float32 = 104 MiB
    err, peak = peak_bytes(lambda: resample_to_resolution(img, 1.0))
    assert isinstance(err, InputImageError), err
    msg = str(err)
    assert "301" in msg and MAX_IMAGE_BYTES_ENV in msg and "\n" not in msg
    assert peak < 8 * MiB
    assert resample_to_resolution(img, 50.0).shape == (7, 7, 7)


# ---- HDF5 (fastMRI) --------------------------------------------------------------------------

def _replace(path: Path, name: str, **create) -> Path:
    """``path`` with its dataset ``name`` replaced by ``create_dataset(name, **create)`` (no data
    written unless ``data`` is given: the file stays small, reading returns the fill value)."""
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, **create)
    return path


def test_fastmri_file_claiming_1000_coils_is_refused_before_reading(tmp_path):
    from mrichain.realdata import fastmri as fm

    path = _replace(write_fastmri_file(tmp_path / "coils.h5", n_slices=1), "kspace",
                    shape=(1, 1000, 640, 368), dtype="complex64")
    assert path.stat().st_size < 1 * MiB  # the old, small k-space's bytes included
    for read in (lambda: fm.reconstruct_fastmri(path), lambda: read_kspace(path),
                 lambda: list(fm.iter_kspace_batches(path))):
        err, peak = peak_bytes(read)
        assert isinstance(err, InputImageError), err
        msg = one_line_naming(err, path)
        assert "1000 coils" in msg and "128" in msg
        assert peak < 16 * MiB


@pytest.mark.parametrize("shape, named", [
    ((2000, 4, 80, 32), "2000 slices"),
    ((2, 4, 4096, 32), "4096 rows"),
    ((2, 4, 80, 5000), "5000 columns"),
    ((2, 4, 80, 32), "no data"),  # in range, but nothing stored: every value the fill value
])
def test_kspace_dataset_bounds_are_each_refused_by_name(tmp_path, shape, named):
    from mrichain.realdata import fastmri as fm

    path = _replace(write_fastmri_file(tmp_path / "k.h5", n_slices=2), "kspace", shape=shape, dtype="complex64")
    for read in (lambda: fm.kspace_shape(path), lambda: read_kspace(path)):
        with pytest.raises(InputImageError) as ei:
            read()
        assert named in one_line_naming(ei.value, path)


def test_kspace_above_the_byte_limit_is_refused(tmp_path, monkeypatch):
    path = write_kspace(tmp_path / "sim.h5", KSpaceFile(np.ones((2, 2, 16, 16), np.complex64)))
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, "1000")
    with pytest.raises(InputImageError) as ei:
        read_kspace(path)
    assert MAX_IMAGE_BYTES_ENV in one_line_naming(ei.value, path)


def test_reconstruction_rss_and_mask_claims_are_checked(tmp_path):
    from mrichain.realdata import fastmri as fm

    path = _replace(write_fastmri_file(tmp_path / "rss.h5", n_slices=2), "reconstruction_rss",
                    shape=(2, 8192, 8192), dtype="float32")
    for read in (lambda: read_reconstruction_rss(path), lambda: fm.read_target(path)):
        err, peak = peak_bytes(read)
        assert isinstance(err, InputImageError), err
        assert "reconstruction_rss" in one_line_naming(err, path) and peak < 16 * MiB
    masked = write_fastmri_file(tmp_path / "mask.h5", n_slices=2, fully_sampled=False)
    _replace(masked, "mask", shape=(10 ** 8,), dtype="bool")
    with pytest.raises(InputImageError) as ei:
        fm.read_file_mask(masked)
    assert "mask" in one_line_naming(ei.value, masked)


@pytest.mark.parametrize("space", ["encoded", "recon"])
def test_header_matrix_sizes_are_bounded(space):
    from mrichain.realdata.fastmri import parse_header

    matrices = {"encoded": (80, 32, 1), "recon": (40, 32, 1)}
    matrices[space] = (40, 100_000, 1)
    xml = header_xml(encoded_matrix=matrices["encoded"], recon_matrix=matrices["recon"],
                     encoded_fov_mm=(72, 35, 5), recon_fov_mm=(36, 35, 5), limits=(0, 31, 16))
    with pytest.raises(InputImageError) as ei:
        parse_header(xml, "hdr.h5")
    msg = one_line_naming(ei.value, "hdr.h5")
    assert "100000" in msg and f"{space}Space" in msg and "1024" in msg


# ---- model cards -----------------------------------------------------------------------------

def _load(module: str):
    import importlib

    return importlib.import_module(f"mrichain.{module}").load_model


BAD_CARDS = [
    ("recon.varnet", {"cascades": 1e6, "channels": 4, "sens_channels": 2, "pad_factor": 16}, "cascades"),
    ("recon.varnet", {"cascades": 2, "channels": 4, "sens_channels": 2, "pad_factor": 16, "depth": 3}, "depth"),
    ("denoise.dncnn", {"depth": 8, "channels": 100_000, "in_channels": 1, "norm": None}, "channels"),
    ("denoise.dncnn", {"depth": 8, "channels": 32, "in_channels": 1, "norm": "import os"}, "norm"),
    ("segment.unet", {"channels": [16, 32, 64, 128], "num_res_units": 1, "dropout": 0.0, "in_channels": 1,
                      "out_channels": 4, "bogus": 1}, "bogus"),
    ("segment.unet", {"channels": [16, "32"], "num_res_units": 1, "dropout": 0.0, "in_channels": 1,
                      "out_channels": 4}, "channels"),
    ("register.voxelmorph", {"channels": [16] * 1000}, "channels"),
    ("predict.sfcn", {"input_shape": [100_000, 52, 44]}, "input_shape"),
    ("predict.sfcn", {"dropout": 7.0}, "dropout"),
    ("mrf.drone", {"rank": -5, "hidden": 300}, "rank"),
    ("mrf.drone", {"rank": 10, "hidden": True}, "hidden"),
]


@pytest.mark.parametrize("module, hyper, key", BAD_CARDS, ids=[f"{m}-{k}" for m, _, k in BAD_CARDS])
def test_card_hyper_parameters_are_checked_before_the_network_is_built(tmp_path, module, hyper, key):
    model = tmp_path / "m.pt"
    model.write_bytes(b"not a state dict: never read when the card is refused")
    card = model.with_suffix(".json")
    card.write_text(json.dumps({"hyper_parameters": hyper}))
    with pytest.raises(UserError) as ei:
        _load(module)(str(model))
    msg = one_line_naming(ei.value, card)
    assert repr(key) in msg or f"{key}:" in msg or f" {key} " in msg, msg


def test_a_valid_card_loads_and_one_bad_value_of_it_is_refused(tmp_path):
    import torch

    from mrichain.denoise import dncnn as dn

    hyper = {"depth": 3, "channels": 4, "in_channels": 1, "norm": None}
    model = tmp_path / "denoise-dncnn.pt"
    torch.save(dn.build(hyper).state_dict(), model)
    card = model.with_suffix(".json")
    card.write_text(json.dumps({"hyper_parameters": hyper}))
    net, _ = dn.load_model(str(model))
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in dn.build(hyper).parameters())
    card.write_text(json.dumps({"hyper_parameters": {**hyper, "depth": 1}}))
    with pytest.raises(UserError, match=r"depth.*1 is less than the minimum of 2"):
        dn.load_model(str(model))


# ---- degenerate volumes ----------------------------------------------------------------------

def test_single_slice_and_empty_volumes_are_named_errors_for_3d_stages(tmp_path):
    rng = np.random.default_rng(0)
    good = save_image(rng.random((8, 8, 8)), np.eye(4), tmp_path / "good.nii.gz")
    assert check_volume(load_image(good), good).shape == (8, 8, 8)
    for name, data, named in [("slice.nii.gz", rng.random((64, 64, 1)), "(64, 64, 1)"),
                              ("zero.nii.gz", np.zeros((8, 8, 8)), "all zero"),
                              ("flat.nii.gz", np.full((8, 8, 8), 3.0), "constant")]:
        path = save_image(data, np.eye(4), tmp_path / name)
        with pytest.raises(InputImageError) as ei:
            check_volume(load_image(path), path)
        assert named in one_line_naming(ei.value, path)


def test_atropos_refuses_an_all_zero_image_with_a_message(tmp_path):
    from mrichain.segment.atropos import atropos

    with pytest.raises(InputImageError, match="brain mask is empty"):
        atropos(nifti_image(np.zeros((12, 12, 12), np.float32), np.eye(4)))
    sparse = np.zeros((12, 12, 12), np.float32)
    sparse[2, 3, 4] = sparse[8, 8, 8] = 1.0  # one voxel left in the mask: Atropos exits with status 1
    path = save_image(sparse, np.eye(4), tmp_path / "sparse.nii.gz")
    with pytest.raises(InputImageError) as ei:
        atropos(load_image(path))
    assert "brain mask has only 1 voxel" in one_line_naming(ei.value, path)


# ---- atomic writes ---------------------------------------------------------------------------

def test_save_image_writes_the_same_bytes_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    path = save_image(data, np.eye(4), tmp_path / "img.nii.gz")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:  # no time, no name: stable bytes
        gz.write(nifti_image(data, np.eye(4)).to_bytes())
    assert path.read_bytes() == buf.getvalue()
    before = path.read_bytes()
    raw = save_image(data, np.eye(4), tmp_path / "img.nii")
    assert raw.read_bytes() == nifti_image(data, np.eye(4)).to_bytes()

    def fail(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(gzip.GzipFile, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        save_image(data * 2, np.eye(4), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii", "img.nii.gz"]


def test_save_json_and_write_kspace_keep_the_old_file_when_a_write_fails(tmp_path):
    path = save_json({"a": 1}, tmp_path / "x.json")
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_json({"a": 1, "b": [1, 2, object()]}, path)  # fails half-way through the dump
    assert path.read_bytes() == before

    k = KSpaceFile(np.ones((2, 2, 8, 8), np.complex64), attrs={"acquisition": "AXT1"})
    h5 = write_kspace(tmp_path / "k.h5", k)
    first = h5.read_bytes()
    assert write_kspace(h5, k).read_bytes() == first  # deterministic
    bad = KSpaceFile(np.zeros((2, 2, 8, 8), np.complex64), attrs={"z_unstorable": {"a": 1}})
    with pytest.raises(TypeError):
        write_kspace(h5, bad)  # fails after the datasets are written
    assert h5.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.h5", "x.json"]


# ---- through the command line ----------------------------------------------------------------

def test_cli_refuses_a_bad_header_in_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    from mrichain.cli import main

    bad = lying_nifti(tmp_path / "bad.nii.gz", (512, 512, 512))
    out = tmp_path / "out.nii.gz"
    rc = []
    err, peak = peak_bytes(lambda: rc.append(main(["denoise", "--method", "antsnlm", "--input", str(bad),
                                                   "--output", str(out)])))
    assert err is None and rc == [2] and peak < 16 * MiB
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "claims" in lines[0]
    big = save_image(np.ones((16, 16, 16), np.float32), np.eye(4), tmp_path / "big.nii.gz")
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, "4096")
    assert main(["denoise", "--method", "antsnlm", "--input", str(big), "--output", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(big) in lines[0] and MAX_IMAGE_BYTES_ENV in lines[0]
    assert not out.exists()


# ==== method params and tuning cards: declared keys only =============================================


SHIPPED = sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "schema.yaml")


@pytest.fixture(scope="module")
def test_cfg():
    return yaml.safe_load(open(ROOT / "config" / "test.yaml"))


def _err(cfg) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    return str(exc.value)


def _with(cfg, dotted: str, value):
    """A copy of ``cfg`` with ``dotted`` (``a.b.c``) set to ``value``, creating mappings on the way."""
    cfg = copy.deepcopy(cfg)
    *parents, leaf = dotted.split(".")
    node = cfg
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return cfg


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_still_validates(name):
    load_config(ROOT / "config" / name)


def test_a_typo_in_a_classical_methods_params_names_the_key_and_the_allowed_keys(test_cfg):
    msg = _err(_with(test_cfg, "denoise.params.antsnlm.serach_radius", 2))
    assert "config key 'denoise.params.antsnlm'" in msg and "'serach_radius'" in msg
    allowed = msg.split("allowed keys:")[1].split("\n")[0]
    assert [k.strip() for k in allowed.split(",")] == sorted(stages.method("denoise", "antsnlm").params)
    assert "search_radius" in allowed


@pytest.mark.parametrize("dotted, value, reason", [
    ("segment.params.atropos.threads", 4, "'threads' is set by the workflow (rule threads)"),
    ("register.params.antssyn.seed", 1, "'seed' is set by the workflow (config key 'seed')"),
    ("register.params.antssyn.labels", "x.nii.gz", "'labels' is set by the workflow"),
    ("segment.params.kmeans.contrast", "T2w", "'contrast' is set by the workflow (config key 'acquire.contrast')"),
    ("denoise.params.dncnn.infer.model", "x.pt", "'model' is set by the workflow"),
    ("reconstruct.params.cs.acceleration", 4, "'acceleration' is set by the workflow"),
    ("register.params.voxelmorph.seed", 3, "'seed' is set by the workflow (config key 'seed')"),
])
def test_a_key_the_workflow_sets_is_refused_saying_so(test_cfg, dotted, value, reason):
    msg = _err(_with(test_cfg, dotted, value))
    section = dotted.rsplit(".", 1)[0]
    assert f"config key '{section}'" in msg and reason in msg and "not by the config" in msg


@pytest.mark.parametrize("dotted, value, needle", [
    ("register.params.antssyn.reg_iterations", "40x20x0", "register.params.antssyn.reg_iterations"),
    ("segment.params.atropos.iterations", 0, "segment.params.atropos.iterations"),
    ("reconstruct.params.varnet.cascades", 1000000, "reconstruct.params.varnet.cascades"),
    ("reconstruct.params.varnet.epoch", 3, "'epoch'"),
    ("segment.params.unet.infer.batch_size", 0, "segment.params.unet.infer.batch_size"),
    ("segment.params.unet.infer.threads", 2, "'threads' is set by the workflow"),
    ("predict.params.sfcn.infer.interval", 1.5, "predict.params.sfcn.infer.interval"),
    ("predict.params.linear.features", ["csf", "skull"], "predict.params.linear.features[1]"),
    ("mrf.params.drone.hiden", 100, "'hiden'"),
])
def test_learned_and_classical_values_and_keys_are_checked(test_cfg, dotted, value, needle):
    cfg = copy.deepcopy(test_cfg)
    if dotted.startswith("mrf."):
        cfg["mrf"] = {"methods": ["matching", "drone"]}
    msg = _err(_with(cfg, dotted, value))
    assert needle in msg


# --------------------------------------------------------------------- the declaration is the code's
#: Where each learned method's trainer keeps its defaults (what ``split_params`` accepts besides
#: the ``TrainSettings`` fields): ``{method: attribute names in the trainer's module}``.
TRAINER_DEFAULTS = {
    "varnet": ("TRAIN_DEFAULTS", "MODEL_DEFAULTS"),
    "dncnn": ("DEFAULTS",),
    "voxelmorph": ("DEFAULT_LOOP", "DEFAULT_HYPER"),
    "mlp": ("DEFAULT_LOOP", "DEFAULT_HYPER"),
    "unet": ("DEFAULTS",),
    "sfcn": ("DEFAULT_LOOP", "DEFAULT_HYPER"),
    "drone": ("DEFAULTS",),
}

ALL_METHODS = [(s.name, m) for s in stages.ALL_STAGES for m in s.methods]


def _keyword_params(fn) -> dict:
    """Named parameters of ``fn`` (not ``*args``/``**kw``) -> default (``inspect.Parameter.empty`` if none)."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _inference_function(stage_name: str, m):
    """What the job calls with the config params: the entry, or a module's ``fit`` (brain age)."""
    obj = stages.Registry({m.name: m.entry})[m.name]
    return obj.fit if inspect.ismodule(obj) else obj


def _jsonable(value):
    return json.loads(json.dumps(value, default=list))


def _assert_defaults_valid(m, schemas: dict, defaults: dict, where: str):
    for key, schema in schemas.items():
        if key in defaults and defaults[key] is not inspect.Parameter.empty:
            try:
                jsonschema.validate(_jsonable(defaults[key]), schema)
            except jsonschema.ValidationError as err:
                raise AssertionError(f"{m.name}: the code's default of {where}{key} is outside its schema: "
                                     f"{err.message}") from None


@pytest.mark.parametrize("stage_name, m", ALL_METHODS, ids=[f"{s}-{m.name}" for s, m in ALL_METHODS])
def test_the_declared_params_are_the_codes(stage_name, m):
    """Classical/floor: the inference function's keyword arguments minus the workflow's; learned:
    the trainer's defaults + ``TrainSettings`` fields but ``seed``, and ``infer`` = the inference
    function's minus the workflow's. Each code default lies inside its declared schema."""
    from mrichain.mrf.run import map_subject
    from mrichain.train.engine import TrainSettings

    if stage_name == stages.MRF:
        # map_subject passes no config params to a mapping method; only DRONE's trainer takes some
        assert "params" not in inspect.signature(map_subject).parameters
        inference = {}
    else:
        inference = {k: v for k, v in _keyword_params(_inference_function(stage_name, m)).items()
                     if k not in stages.RESERVED}
    if not m.learned:
        assert set(m.params) == set(inference), f"{stage_name}.params.{m.name}"
        assert not m.infer
        _assert_defaults_valid(m, m.params, inference, "")
        assert set(m.tunable) <= set(m.params)
        return
    assert m.name in TRAINER_DEFAULTS, f"{m.name}: say above where its trainer keeps its defaults"
    module = importlib.import_module(m.trainer.partition(":")[0])
    defaults = {}
    for attr in TRAINER_DEFAULTS[m.name]:
        defaults.update(getattr(module, attr))
    loop = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    loop.pop("seed")
    assert set(m.params) == set(defaults) | set(loop), f"{stage_name}.params.{m.name}"
    assert set(m.infer) == set(inference), f"{stage_name}.params.{m.name}.infer"
    _assert_defaults_valid(m, m.params, {**loop, **defaults}, "")
    _assert_defaults_valid(m, m.infer, inference, "infer.")
    assert "infer" not in m.params and not m.tunable


# ------------------------------------------------------------------------------------- tuning cards
def _card(tmp_path, **over) -> Path:
    card = {"stage": "denoise", "method": "antsnlm", "chosen": {"noise_model": "Gaussian", "search_radius": 2}}
    card.update(over)
    path = tmp_path / "results" / "tuning" / "denoise-antsnlm.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card))
    return path


def test_a_valid_card_overrides_the_params(tmp_path):
    from mrichain.train.tune import tuned_params

    path = _card(tmp_path)
    assert tuned_params({"noise_model": "Rician", "shrink_factor": 1}, path, stage="denoise", method="antsnlm") == {
        "noise_model": "Gaussian", "search_radius": 2, "shrink_factor": 1}


@pytest.mark.parametrize("over, needle", [
    ({"chosen": {"threads": 64}}, "'threads'"),
    ({"chosen": {"shrink_factor": 2}}, "'shrink_factor'"),  # declared, but not tunable
    ({"chosen": {"search_radius": 500}}, "search_radius"),
    ({"chosen": {"noise_model": "Poisson"}}, "noise_model"),
    ({"chosen": ["search_radius"]}, "chosen"),
    ({"chosen": None}, "chosen"),
    ({"method": "dncnn"}, "dncnn"),
    ({"stage": "segment"}, "segment"),
])
def test_a_bad_card_is_refused_naming_the_file_and_key(tmp_path, over, needle):
    from mrichain.train.tune import tuned_params

    path = _card(tmp_path, **over)
    with pytest.raises(UserError) as exc:
        tuned_params({}, path, stage="denoise", method="antsnlm")
    assert str(path) in str(exc.value) and needle in str(exc.value)


def test_a_card_without_chosen_or_not_json_is_refused(tmp_path):
    from mrichain.train.tune import tuned_params

    path = _card(tmp_path)
    path.write_text(json.dumps({"stage": "denoise", "method": "antsnlm"}))
    with pytest.raises(UserError, match="chosen") as exc:
        tuned_params({}, path, stage="denoise", method="antsnlm")
    assert str(path) in str(exc.value)
    path.write_text("{'chosen': not json")
    with pytest.raises(UserError) as exc:
        tuned_params({}, path, stage="denoise", method="antsnlm")
    assert str(path) in str(exc.value) and "JSON" in str(exc.value)


@pytest.mark.parametrize("over, needle", [
    ({"chosen": {"threads": 64}}, "'threads'"),
    ({"stage": "segment", "method": "atropos", "chosen": {"mrf_weight": 0.2}}, "segment"),  # another job's card
])
def test_the_command_line_refuses_a_bad_card_in_one_line(tmp_path, capsys, over, needle):
    """``mrichain denoise --tuning``: exit 2 and one line naming the card, before the method runs."""
    from mrichain.cli import main
    from mrichain.io import save_image

    image = save_image(np.ones((8, 8, 8), np.float32), np.eye(4), tmp_path / "in_T1w.nii.gz")
    path = _card(tmp_path, **over)
    rc = main(["denoise", "--method", "antsnlm", "--input", str(image), "--output", str(tmp_path / "out.nii.gz"),
               "--params", "{}", "--tuning", str(path)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert str(path) in err[-1] and needle in err[-1]
    assert not (tmp_path / "out.nii.gz").exists()


# ==== the per-stage command line: choices, outputs over inputs, voxel order ==========================


N = 24
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = [-22.0, -26.0, -18.0]


def _last_error_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ": error: " in ln]
    assert lines, "no error line on stderr"
    return lines[-1]


# ------------------------------------------------------------------ choices


def _bad_choice_cases(tmp):
    f = str(tmp / "missing.nii.gz")
    reg = ["--moving", f, "--fixed", f, "--out-image", str(tmp / "o1.nii.gz"), "--out-jacobian",
           str(tmp / "o2.nii.gz"), "--out-timing", str(tmp / "o3.json")]
    mrf = ["--gt-dir", str(tmp), "--dictionary", f, "--mrf", "{}", "--seed", "0", "--sequence", "{}",
           *[a for o in ("t1map", "t2map", "pdmap", "synthetic", "timing") for a in (f"--out-{o}", str(tmp / o))]]
    return {
        "register --method": ["register", "--method", "foo", *reg],
        "train --stage": ["train", "--stage", "foo", "--method", "unet", "--manifest", f, "--out", str(tmp / "m.pt")],
        "train --method": ["train", "--stage", "segment", "--method", "foo", "--manifest", f,
                           "--out", str(tmp / "m.pt")],
        "predict --method": ["predict", "--method", "foo", "--manifest", f, "--out-predictions", str(tmp / "p.tsv"),
                             "--out-model", str(tmp / "p.json")],
        "mrf-map --method": ["mrf-map", "--method", "foo", "--contrast", "T1w", *mrf],
        "mrf-map --contrast": ["mrf-map", "--method", "matching", "--contrast", "PD", *mrf],
        "fastmri-score --methods": ["fastmri-score", "--kspace", f, "--methods", "foo", "--recons", f,
                                    "--out", str(tmp / "s.tsv")],
        "budget --feed": ["budget", "--conditions", "{}", "--feed", "foo", "--scores", f,
                          *[a for o in ("budget", "sweep", "limits", "budget-png", "sweep-png")
                            for a in (f"--out-{o}", str(tmp / o))]],
    }


BAD_CHOICES = ("register --method", "train --stage", "train --method", "predict --method", "mrf-map --method",
               "mrf-map --contrast", "fastmri-score --methods", "budget --feed")


@pytest.mark.parametrize("case", BAD_CHOICES)
def test_an_unknown_name_is_refused_by_the_parser(case, tmp_path, capsys):
    cases = _bad_choice_cases(tmp_path)
    assert set(cases) == set(BAD_CHOICES)
    argv = cases[case]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = _last_error_line(capsys)
    assert f"argument {case.split()[1]}: invalid choice" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_choices_are_the_declared_names():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    opt = lambda cmd, dest: next(a for a in sub[cmd]._actions if a.dest == dest).choices  # noqa: E731
    assert list(opt("register", "method")) == list(stage("register").method_names)
    assert list(opt("predict", "method")) == list(stage("predict").method_names)
    assert list(opt("mrf-map", "method")) == list(MRF_STAGE.method_names)
    assert list(opt("motion", "method")) == list(stage("motion").method_names)
    trained = ("reconstruct", "denoise", "register", "segment", "predict", "mrf", "motion")
    assert set(opt("train", "stage")) == {s for s in trained if any(m.learned for m in stage(s).methods)}
    from mrichain.simulate.signal import CONTRASTS

    assert tuple(opt("mrf-map", "contrast")) == tuple(opt("segment", "contrast")) == CONTRASTS


def test_train_method_of_another_stage_is_a_one_line_error_listing_the_learned_methods(tmp_path, capsys):
    code = main(["train", "--stage", "segment", "--method", "varnet", "--manifest", str(tmp_path / "m.json"),
                 "--out", str(tmp_path / "segment-varnet.pt")])
    assert code == 2
    err = _last_error_line(capsys)
    learned = [m.name for m in stage("segment").methods if m.learned]
    assert "varnet" in err and "segment" in err and all(m in err for m in learned)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ outputs never equal inputs


@pytest.fixture
def user_image(tmp_path):
    """A user's image in its own directory; returns (path, its bytes)."""
    d = tmp_path / "data"
    d.mkdir()
    p = save_image(np.random.default_rng(0).random((8, 8, 8), np.float32), AFFINE, d / "sub-01_T1w.nii.gz")
    return p, p.read_bytes()


def _another_name(path, spelling: str) -> str:
    """``path`` under another name that is the same file."""
    if spelling == "same":
        return str(path)
    if spelling == "dot-dot":
        return str(path.parent / ".." / path.parent.name / path.name)
    if spelling == "relative":
        return os.path.relpath(path)
    other = path.parent / f"{spelling}.nii.gz"
    if spelling == "symlink":
        other.symlink_to(path)
    else:
        os.link(path, other)
    return str(other)


SPELLINGS = ("same", "dot-dot", "relative", "symlink", "hardlink")


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_denoise_output_that_is_its_input_is_refused_and_the_input_kept(spelling, user_image, capsys):
    path, before = user_image
    out = _another_name(path, spelling)
    code = main(["denoise", "--method", "antsnlm", "--input", str(path), "--output", out])
    assert code == 2
    err = _last_error_line(capsys)
    assert "--output" in err and "--input" in err and str(path) in err
    assert path.read_bytes() == before


@pytest.mark.parametrize("command", ["register", "restore", "tune", "train", "segment"])
def test_every_command_refuses_an_output_over_an_input(command, user_image, tmp_path, capsys):
    path, before = user_image
    p, o = str(path), lambda n: str(tmp_path / n)
    argv, options = {
        "register": (["register", "--method", "affine", "--moving", o("m.nii.gz"), "--fixed", p, "--out-image",
                      o("w.nii.gz"), "--out-jacobian", p, "--out-timing", o("t.json")], ("--out-jacobian", "--fixed")),
        "restore": (["restore", "--input", o("i.nii.gz"), "--prep", p, "--output", p], ("--output", "--prep")),
        "tune": (["tune", "--manifest", p, "--grid", "{}", "--out", p], ("--out", "--manifest")),
        "train": (["train", "--stage", "segment", "--method", "unet", "--manifest", p, "--out", p],
                  ("--out", "--manifest")),
        "segment": (["segment", "--method", "kmeans", "--input", o("i.nii.gz"), "--model", p, "--output", p],
                    ("--output", "--model")),
    }[command]
    assert main(argv) == 2
    err = _last_error_line(capsys)
    assert all(opt in err for opt in options) and str(path) in err
    assert path.read_bytes() == before


def test_every_path_option_is_known_as_an_input_or_an_output():
    """The refusal walks the options by name: a new option that names a file must be one of them."""
    not_paths = {"help", "method", "methods", "params", "threads", "seed", "contrast", "real_input", "acceleration",
                 "center_fraction", "resolution", "config_json", "sub", "stage", "grid", "mrf", "sequence", "key",
                 "acq", "age", "primary_acq", "conditions", "feed", "domain", "force", "dest", "command", "action",
                 "name", "motion_level", "levels"}
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    unknown = {(cmd, a.dest) for cmd, p in sub.items() for a in p._actions
               if a.dest not in not_paths and a.dest not in cli.INPUT_OPTIONS and not cli._is_output_option(a.dest)}
    assert unknown == set()


# ------------------------------------------------------------------ orientation: RAS in, stored order out


def _lps(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """``img`` (stored RAS) stored LPS: voxel axes 0 and 1 reversed, the affine changed so every
    voxel keeps its position in mm."""
    data = np.asarray(img.dataobj)[::-1, ::-1]
    flip = np.eye(4)
    flip[0, 0], flip[1, 1] = -1.0, -1.0
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    out = nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ flip)
    out.set_data_dtype(img.get_data_dtype())
    return out


def _phantom(shift=(0.0, 0.0, 0.0), scale=1.0, seed=0):
    """A T1w-like brain (WM core, GM shell, CSF ventricle and rim), off-centre and noisy (no
    mirror symmetry), and its labels, on an N^3 grid. Returns (image float32, labels uint8)."""
    g = np.stack(np.meshgrid(*[np.arange(N, dtype=np.float64)] * 3, indexing="ij"))
    c = (N - 1) / 2 + np.asarray([1.5, -1.0, 0.5]) + np.asarray(shift)
    r = np.sqrt((((g - c[:, None, None, None]) / np.array([1.0, 1.2, 0.9])[:, None, None, None]) ** 2).sum(0)) / scale
    lab = np.zeros((N,) * 3, np.uint8)
    lab[r < 9.5] = 1
    lab[r < 8.5] = 2
    lab[r < 6.0] = 3
    lab[(r < 2.5) & (g[0] > c[0])] = 1  # a one-sided ventricle
    img = np.choose(lab, [0.0, 0.3, 0.6, 1.0]).astype(np.float32)
    rng = np.random.default_rng(seed)
    img = np.abs(img + 0.04 * rng.standard_normal(img.shape) + 0.04j * rng.standard_normal(img.shape))
    return img.astype(np.float32), lab


def _write_pair(d, name, img, lab):
    save_image(img, AFFINE, d / f"{name}_T1w.nii.gz")
    save_image(lab, AFFINE, d / f"{name}_dseg.nii.gz", dtype=np.uint8)
    return {"image": str(d / f"{name}_T1w.nii.gz"), "labels": str(d / f"{name}_dseg.nii.gz")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training phantoms, one test subject stored RAS and LPS, a template stored RAS and LPS."""
    d = tmp_path_factory.mktemp("orient")
    train = [_write_pair(d, f"tr{i}", *_phantom(sh, sc, seed=10 + i))
             for i, (sh, sc) in enumerate([((1, 0, -1), 1.05), ((-1, 1, 0), 0.95), ((0, -1, 1), 1.1)])]
    out = {"dir": d, "train": train}
    for name, (sh, sc, seed) in {"sub": ((1.0, -1.0, 0.5), 0.92, 1), "tpl": ((0, 0, 0), 1.0, 2)}.items():
        ras = _write_pair(d, f"{name}-ras", *_phantom(sh, sc, seed=seed))
        lps = {}
        for key, path in ras.items():
            p = d / os.path.basename(path).replace("-ras", "-lps")
            nib.save(_lps(nib.load(path)), str(p))
            lps[key] = str(p)
        out[name] = {"RAS": ras, "LPS": lps}
    assert nib.aff2axcodes(nib.load(out["sub"]["LPS"]["image"]).affine) == ("L", "P", "S")
    return out


@pytest.fixture(scope="module")
def models(data):
    """Tiny trained networks (seconds): a DnCNN whose convolutions are redrawn so it changes the
    image visibly, a U-Net, and a VoxelMorph whose flow head is scaled up so it deforms visibly (an
    identity output would not show the orientation)."""
    from mrichain.denoise import dncnn
    from mrichain.register import voxelmorph as vxm
    from mrichain.segment import unet

    d = data["dir"]
    it = data["train"]
    clean = []
    for i, item in enumerate(it):  # the noisy phantoms are the inputs, their noise-free labels' image the target
        p = d / f"tr{i}_clean.nii.gz"
        lab = np.asarray(nib.load(item["labels"]).dataobj)
        save_image(np.choose(lab, [0.0, 0.3, 0.6, 1.0]), AFFINE, p)
        save_image(lab > 0, AFFINE, d / f"tr{i}_mask.nii.gz", dtype=np.uint8)
        clean.append(str(p))
    dn_items = [{"input": x["image"], "target": c, "mask": str(d / f"tr{i}_mask.nii.gz")}
                for i, (x, c) in enumerate(zip(it, clean))]
    dncnn.train({"train": dn_items[:2], "val": dn_items[2:]},
                {"epochs": 2, "batch_size": 4, "max_batches_per_epoch": 3, "depth": 3, "channels": 8, "lr": 1e-2},
                str(d / "denoise-dncnn.pt"), seed=0, progress=False)
    net, _ = dncnn.load_model(str(d / "denoise-dncnn.pt"))
    with torch.no_grad():  # 6 steps may not beat the untrained (identity) start: give it a visible effect
        torch.manual_seed(0)
        for conv in (m for m in net.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.weight.normal_(0.0, 0.3)
    torch.save(net.state_dict(), d / "denoise-dncnn.pt")
    un_items = [{"input": x["image"], "target": x["labels"]} for x in it]
    unet.train({"train": un_items[:2], "val": un_items[2:]},
               {"epochs": 3, "batch_size": 4, "max_batches_per_epoch": 4, "channels": [4, 8], "num_res_units": 0,
                "lr": 1e-2}, str(d / "segment-unet.pt"), seed=0, progress=False)
    reg_items = [{"moving": x["image"], "labels": x["labels"]} for x in it]
    vxm_path = d / "register-voxelmorph.pt"
    vxm.train({"fixed": data["tpl"]["RAS"]["image"], "fixed_labels": data["tpl"]["RAS"]["labels"],
               "train": reg_items[:2], "val": reg_items[2:]},
              {"epochs": 1, "lr": 2e-3, "channels": [4, 8, 8, 8], "final_conv_channels": [8], "int_steps": 4,
               "lambda": 0.5, "ncc_kernel": 5}, str(vxm_path), seed=0, progress=False)
    net, _ = vxm.load_model(vxm_path)
    head = [m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        torch.manual_seed(0)
        head.weight.normal_(0.0, 1.0)  # ~1 voxel of displacement on these phantoms
    torch.save(net.state_dict(), vxm_path)
    return {"dncnn": str(d / "denoise-dncnn.pt"), "unet": str(d / "segment-unet.pt"), "voxelmorph": str(vxm_path)}


def _arr(path_or_img):
    img = nib.load(path_or_img) if isinstance(path_or_img, (str, os.PathLike)) else path_or_img
    return np.asarray(img.dataobj)


def _ras_data(path) -> np.ndarray:
    return _arr(to_ras(nib.load(path)))


def _check_stored_like(out_path, like_path):
    """The output is written in the voxel order and affine of the image whose grid it is on."""
    out, like = nib.load(out_path), nib.load(like_path)
    assert out.shape == like.shape and np.allclose(out.affine, like.affine, atol=1e-6)


def _model_args(method, models):
    return ["--model", models[method]] if method in models else []


def _run_both_storages(command, method, suffix, data, models, tmp_path) -> dict:
    """``mrichain <command>`` on the RAS and the LPS copy of the subject: {codes: output path}."""
    out = {}
    for codes in ("RAS", "LPS"):
        out[codes] = str(tmp_path / f"{codes}_{suffix}.nii.gz")
        assert main([command, "--method", method, "--input", data["sub"][codes]["image"], "--output", out[codes],
                     *_model_args(method, models)]) == 0
    return out


@pytest.mark.parametrize("method", stage("segment").method_names)
def test_segmentation_does_not_depend_on_the_stored_voxel_order(method, data, models, tmp_path):
    out = _run_both_storages("segment", method, "dseg", data, models, tmp_path)
    _check_stored_like(out["LPS"], data["sub"]["LPS"]["image"])
    ras, lps = _arr(out["RAS"]), _ras_data(out["LPS"])
    assert len(np.unique(ras)) >= 3  # a real segmentation, not a constant map
    agree = float(np.mean(ras == lps))
    assert agree >= 0.999, f"{method}: RAS vs LPS storage label agreement {agree:.4f}"


@pytest.mark.parametrize("method", stage("denoise").method_names)
def test_denoising_does_not_depend_on_the_stored_voxel_order(method, data, models, tmp_path):
    out = _run_both_storages("denoise", method, "T1w", data, models, tmp_path)
    _check_stored_like(out["LPS"], data["sub"]["LPS"]["image"])
    ras, lps, inp = _arr(out["RAS"]), _ras_data(out["LPS"]), _arr(data["sub"]["RAS"]["image"])
    assert np.abs(ras - inp).max() > 1e-3  # the method changed the image
    np.testing.assert_allclose(lps, ras, rtol=1e-5, atol=1e-6 * float(np.abs(ras).max()))


REG_PARAMS = {"antssyn": {"reg_iterations": [20, 10, 0]}}


@pytest.mark.parametrize("method", stage("register").method_names)
def test_registration_does_not_depend_on_the_stored_voxel_order(method, data, models, tmp_path):
    """Moving image, its labels and the template all stored LPS: the same warped labels as all RAS,
    written in the template's stored voxel order."""
    out = {}
    for codes in ("RAS", "LPS"):
        o = {k: str(tmp_path / f"{codes}_{k}") for k in ("image.nii.gz", "labels.nii.gz", "jac.nii.gz", "t.json")}
        out[codes] = o
        assert main(["register", "--method", method, "--moving", data["sub"][codes]["image"],
                     "--labels", data["sub"][codes]["labels"], "--fixed", data["tpl"][codes]["image"],
                     "--params", json.dumps(REG_PARAMS.get(method, {})), "--out-image", o["image.nii.gz"],
                     "--out-labels", o["labels.nii.gz"], "--out-jacobian", o["jac.nii.gz"], "--out-timing", o["t.json"],
                     *_model_args(method, models)]) == 0
    for k in ("image.nii.gz", "labels.nii.gz", "jac.nii.gz"):
        _check_stored_like(out["LPS"][k], data["tpl"]["LPS"]["image"])
    ras, lps = _arr(out["RAS"]["labels.nii.gz"]), _ras_data(out["LPS"]["labels.nii.gz"])
    moved = float(np.mean(ras != _arr(data["sub"]["RAS"]["labels"])))
    assert moved > 0.01, f"{method} barely moved the labels ({moved:.4f}): the check would prove nothing"
    agree = float(np.mean(ras == lps))
    assert agree >= 0.999, f"{method}: RAS vs LPS storage warped-label agreement {agree:.4f}"


def test_an_image_stored_ras_passes_through_byte_for_byte(data, tmp_path):
    """What the tuner and the pipeline run (their images are stored RAS): the job writes exactly
    what the method returns, as before any reorientation step existed."""
    from mrichain.io import load_image
    from mrichain.segment import METHODS

    path = data["sub"]["RAS"]["image"]
    job = tmp_path / "job_dseg.nii.gz"
    assert main(["segment", "--method", "kmeans", "--input", path, "--output", str(job)]) == 0
    direct = METHODS["kmeans"](load_image(path), threads=1)
    ref = save_image(np.asarray(direct.dataobj), direct.affine, tmp_path / "direct_dseg.nii.gz", dtype=np.uint8)
    assert job.read_bytes() == ref.read_bytes()
