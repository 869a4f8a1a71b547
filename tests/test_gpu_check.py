"""GPU honesty: a job given a GPU whose torch cannot use CUDA fails, naming torch and the fix."""
from __future__ import annotations

import json

import pytest
import torch

from mrichain.cli import main
from mrichain.train import engine
from mrichain.train.engine import CudaUnavailableError, assigned_gpus, select_device
from mrichain.train.params import split_params


@pytest.fixture
def no_cuda(monkeypatch):
    """torch that cannot use CUDA, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("  ", None), ("-1", None), ("NoDevFiles", None), ("-1,0", None),
    ("0", "0"), ("1,3", "1,3"), ("GPU-5f0e2c4a", "GPU-5f0e2c4a"),
])
def test_assigned_gpus(value, expected):
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert assigned_gpus(env) == expected


def test_given_a_gpu_without_cuda_fails_with_what_to_do(no_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(CudaUnavailableError) as err:
        select_device("auto")
    msg = str(err.value)
    assert "CUDA_VISIBLE_DEVICES=0" in msg
    assert f"torch {torch.__version__}" in msg
    assert ("CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build") in msg
    assert "pip install torch==" in msg and "--index-url https://download.pytorch.org/whl/cu" in msg
    assert "device: cpu" in msg


def test_cpu_only_torch_is_named_as_such(no_cuda, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    msg = str(engine._cuda_unavailable("auto", {"CUDA_VISIBLE_DEVICES": "0"}))
    assert "torch 2.13.0+cpu (CPU-only build)" in msg
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" in msg


def test_device_cpu_is_a_deliberate_choice(no_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert select_device("cpu") == torch.device("cpu")


def test_auto_without_a_gpu_uses_the_cpu(no_cuda, monkeypatch):
    for value in (None, "", "-1", "NoDevFiles"):
        if value is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert select_device("auto") == torch.device("cpu"), value


def test_asking_for_cuda_without_cuda_fails(no_cuda, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(CudaUnavailableError, match="device: cuda asks for CUDA"):
        select_device("cuda")
    with pytest.raises(CudaUnavailableError):
        select_device("cuda:1")
    with pytest.raises(CudaUnavailableError, match="CUDA_VISIBLE_DEVICES='-1' gives this process no GPU"):
        select_device("cuda", environ={"CUDA_VISIBLE_DEVICES": "-1"})


def test_cuda_when_torch_has_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda:1")
    assert select_device("cpu") == torch.device("cpu")


def test_a_typo_is_not_a_silent_cpu_run():
    with pytest.raises(ValueError, match="allowed values: auto, cpu, cuda"):
        select_device("gpu")


def test_the_device_param_reaches_train_settings_not_the_model():
    """`device` in a learned method's params is a loop setting (TrainSettings.device), accepted by
    every trainer's split_params even where its defaults lack it, and never a model kwarg."""
    from mrichain.predict import sfcn
    from mrichain.register import voxelmorph

    for defaults in ({**sfcn.DEFAULT_LOOP, **sfcn.DEFAULT_HYPER}, {**voxelmorph.DEFAULT_LOOP, **voxelmorph.DEFAULT_HYPER}):
        settings, rest = split_params({"device": "cpu", "epochs": 1}, defaults, seed=0)
        assert settings.device == "cpu" and "device" not in rest


def test_a_training_job_fails_with_one_message_not_a_traceback(no_cuda, monkeypatch, tmp_path, capsys):
    """Through the CLI's error handling as the `train` rule runs it: exit status 2, one message on
    stderr. The trainer is a stand-in that does what every trainer does with its params."""
    import mrichain.cli as cli

    def cmd_train(a):
        settings, _ = split_params(json.loads(a.params), {}, a.seed)
        engine.select_device(settings.device)

    monkeypatch.setattr(cli, "cmd_train", cmd_train)  # build_parser binds it when main() runs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    argv = ["train", "--stage", "predict", "--method", "sfcn", "--manifest", str(tmp_path / "m.json"),
            "--out", str(tmp_path / "m.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("mrichain train: error: this job was given a GPU (CUDA_VISIBLE_DEVICES=0)")
    assert not any("Traceback" in line for line in err)

    assert main(argv + ["--params", '{"device": "cpu"}']) == 0
