"""`mrichain profile install`: the repository's profiles where `snakemake --profile <name>` finds them."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from mrichain.cli import main
from mrichain.profile import PROFILES_DIR, ProfileError, install_profile, user_profile_dir

from dag import ROOT


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    """An empty XDG_CONFIG_HOME (and XDG_CONFIG_DIRS, so no site profile interferes)."""
    home = tmp_path / "xdg"
    home.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg-site"))
    return home


def test_user_profile_dir_follows_xdg_config_home_like_snakemake(xdg, monkeypatch, tmp_path):
    assert user_profile_dir("slurm") == xdg / "snakemake" / "slurm"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_profile_dir("slurm") == tmp_path / "home" / ".config" / "snakemake" / "slurm"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # ignored by platformdirs, as by Snakemake
    assert user_profile_dir("slurm") == tmp_path / "home" / ".config" / "snakemake" / "slurm"


def test_install_copies_the_profile_and_reinstall_is_a_no_op(xdg, capsys):
    assert main(["profile", "install", "slurm"]) == 0
    dest = xdg / "snakemake" / "slurm"
    assert (dest / "config.yaml").read_bytes() == (PROFILES_DIR / "slurm" / "config.yaml").read_bytes()
    assert "installed" in capsys.readouterr().out
    mtime = (dest / "config.yaml").stat().st_mtime_ns
    assert main(["profile", "install", "slurm"]) == 0
    assert "identical: nothing to do" in capsys.readouterr().out
    assert (dest / "config.yaml").stat().st_mtime_ns == mtime


def test_a_different_profile_is_refused_without_force_and_replaced_with_it(xdg, capsys):
    dest = xdg / "snakemake" / "slurm"
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text("executor: slurm\njobs: 7\n")  # a lab's own profile
    with pytest.raises(SystemExit) as exit_:
        main(["profile", "install", "slurm"])
    assert exit_.value.code not in (0, None)
    err = str(exit_.value.code)
    assert str(dest) in err and "--force" in err and "config.yaml" in err
    assert (dest / "config.yaml").read_text() == "executor: slurm\njobs: 7\n"  # untouched

    assert main(["profile", "install", "slurm", "--force"]) == 0
    assert "replaced" in capsys.readouterr().out
    assert (dest / "config.yaml").read_bytes() == (PROFILES_DIR / "slurm" / "config.yaml").read_bytes()


def test_an_extra_file_counts_as_a_difference(xdg):
    install_profile("slurm")
    (user_profile_dir("slurm") / "notes.txt").write_text("ours")
    with pytest.raises(ProfileError, match="notes.txt"):
        install_profile("slurm")
    assert install_profile("slurm", force=True).action == "replaced"
    assert not (user_profile_dir("slurm") / "notes.txt").exists()


def test_an_empty_directory_at_dest_is_filled_without_force(tmp_path):
    dest = tmp_path / "snakemake" / "slurm"
    dest.mkdir(parents=True)
    assert install_profile("slurm", dest=dest).action == "installed"
    assert (dest / "config.yaml").read_bytes() == (PROFILES_DIR / "slurm" / "config.yaml").read_bytes()


def test_dest_and_unknown_names(xdg, tmp_path):
    res = install_profile("slurm", dest=tmp_path / "site" / "slurm")
    assert res.action == "installed" and (tmp_path / "site" / "slurm" / "config.yaml").is_file()
    assert f"--profile {tmp_path / 'site' / 'slurm'}" in res.message  # not found by name there
    with pytest.raises(ProfileError, match="available: .*slurm"):
        install_profile("slrum")


def test_cli_refusal_exits_non_zero_with_one_message_and_no_traceback(tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "mrichain.cli", "profile", "install", "slrum"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "mrichain profile install: error: no profile named 'slrum'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_snakemake_finds_the_installed_profile_by_name(tmp_path):
    """`snakemake --profile slurm` from the repository root, before and after the install: the
    profile's set-resources for `train` must show up in the dry run's resources and reach the job
    (run with the local executor: the rule writes the resources it was given; Snakemake 9.15's dry
    run shows string resources such as slurm_partition as <TBD>)."""
    (tmp_path / "Snakefile").write_text(
        'rule train:\n    output: "model.pt"\n'
        '    shell: "echo {resources.slurm_partition} {resources.gpu} {resources.cpus_per_gpu} > {output}"\n')
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_DIRS": str(tmp_path / "site")}
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--workflow-profile", "none",
           "--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), "-n"]

    before = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert before.returncode != 0
    # Snakemake's wording of "no such profile": 9.27 "no profile.yaml (or config.yaml) found", 9.15 "no config.yaml found"
    assert re.search(r"Error: profile given but no (profile\.yaml \(or config\.yaml\)|config\.yaml) found",
                     before.stderr), before.stderr

    install = subprocess.run([sys.executable, "-m", "mrichain.cli", "profile", "install", "slurm"],
                             capture_output=True, text=True, env=env)
    assert install.returncode == 0, install.stderr
    after = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    out = after.stdout + after.stderr
    assert after.returncode == 0, out
    assert "Using profile slurm" in out
    assert "gpu=1" in out and "cpus_per_gpu=2" in out, out
    run = subprocess.run(cmd[:-1] + ["--executor", "local"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0 and "Using profile slurm" in run.stdout + run.stderr, run.stdout + run.stderr
    assert (tmp_path / "model.pt").read_text().split() == ["gpu", "1", "2"]


GRES_MARK = re.compile(r"^ *# =+ slurm-gres =+\n.*?^ *# =+ end slurm-gres =+\n", flags=re.MULTILINE | re.DOTALL)


def test_slurm_gres_profile_is_the_slurm_profile_but_the_gpu_request():
    """profiles/slurm-gres is a copy of profiles/slurm (Snakemake 9.15 cannot make one profile
    include another) that must not drift: outside its blocks between `slurm-gres` markers it is
    the slurm profile line for line, less the one `gpu: 1` line of `train`; as settings, the two
    differ only in train's `gpu` (0) and `gres` (gpu:1)."""
    slurm = (PROFILES_DIR / "slurm" / "config.yaml").read_text()
    gres = (PROFILES_DIR / "slurm-gres" / "config.yaml").read_text()
    assert len(GRES_MARK.findall(gres)) == 2  # the header and the train block
    assert slurm.count("\n    gpu: 1\n") == 1
    assert GRES_MARK.sub("", gres) == slurm.replace("\n    gpu: 1\n", "\n")

    a, b = yaml.safe_load(slurm), yaml.safe_load(gres)
    train_a, train_b = a["set-resources"].pop("train"), b["set-resources"].pop("train")
    assert a == b
    assert train_a.pop("gpu") == 1 and "gres" not in train_a
    assert train_b.pop("gpu") == 0 and train_b.pop("gres") == "gpu:1"
    assert train_a == train_b
    assert sorted(os.listdir(PROFILES_DIR / "slurm-gres")) == sorted(os.listdir(PROFILES_DIR / "slurm"))


def test_slurm_gres_profile_installs_and_gives_train_gres_not_gpus(tmp_path):
    """`mrichain profile install slurm-gres`, then `snakemake --profile slurm-gres` by name: the
    train rule gets `gres=gpu:1` and `gpu=0` (the plugin then writes --gres=gpu:1 and no --gpus;
    tests/test_slurm.py checks the allocation on a real SLURM)."""
    (tmp_path / "Snakefile").write_text(
        'rule train:\n    output: "model.pt"\n    resources: gpu=1\n'
        '    shell: "echo {resources.slurm_partition} {resources.gpu} {resources.gres} > {output}"\n')
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_DIRS": str(tmp_path / "site")}
    install = subprocess.run([sys.executable, "-m", "mrichain.cli", "profile", "install", "slurm-gres"],
                             check=False, capture_output=True, text=True, env=env)
    assert install.returncode == 0, install.stderr
    assert "snakemake --profile slurm-gres" in install.stdout
    dest = tmp_path / "xdg" / "snakemake" / "slurm-gres"
    assert (dest / "config.yaml").read_bytes() == (PROFILES_DIR / "slurm-gres" / "config.yaml").read_bytes()
    run = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm-gres", "--workflow-profile", "none",
                          "--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path),
                          "--executor", "local"], check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "Using profile slurm-gres" in out, out
    assert (tmp_path / "model.pt").read_text().split() == ["gpu", "0", "gpu:1"]
