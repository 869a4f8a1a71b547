"""Config validation: bad config fails before any job, naming the key and the allowed values."""
import copy

import pytest
import yaml

from mrichain.plan.config import ConfigError, load_config, load_schema, validate_config

from dag import ROOT


@pytest.fixture(scope="module")
def default():
    return yaml.safe_load(open(ROOT / "config" / "config.yaml"))


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml", "bench.yaml", "bench_sweep.yaml", "bench_gpu.yaml"])
def test_shipped_configs_are_valid(name):
    load_config(ROOT / "config" / name)


def _err(cfg):
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    return str(exc.value)


def test_unknown_method_names_key_and_allowed(default):
    cfg = copy.deepcopy(default)
    cfg["reconstruct"]["methods"] = ["magic"]
    msg = _err(cfg)
    assert "reconstruct.methods[0]" in msg and "'magic'" in msg and "allowed values: zerofilled, cs, varnet" in msg


def test_negative_acceleration(default):
    cfg = copy.deepcopy(default)
    cfg["acquire"]["accelerations"] = [-4]
    msg = _err(cfg)
    assert "acquire.accelerations[0]" in msg and "-4" in msg and ">= 1" in msg


def test_zero_snr(default):
    cfg = copy.deepcopy(default)
    cfg["acquire"]["snr"] = 0
    msg = _err(cfg)
    assert "acquire.snr" in msg and "> 0" in msg


def test_missing_key(default):
    cfg = copy.deepcopy(default)
    del cfg["cohort"]["resolution_mm"]
    assert "config key 'cohort.resolution_mm' is missing" in _err(cfg)


def test_unknown_key(default):
    cfg = copy.deepcopy(default)
    cfg["acquire"]["snrr"] = 3
    msg = _err(cfg)
    assert "acquire" in msg and "snrr" in msg and "allowed keys" in msg


def test_cross_checks(default):
    cfg = copy.deepcopy(default)
    cfg["acquire"]["center_fractions"] = [0.08, 0.04, 0.02]
    cfg["cohort"]["split"] = {"train": 0.5, "val": 0.2, "test": 0.2}
    cfg["denoise"]["methods"] = ["antsnlm"]
    cfg["denoise"]["feed"] = "dncnn"  # a declared method, but not one this config runs
    cfg["segment"]["params"]["magic"] = {}
    msg = _err(cfg)
    assert "acquire.center_fractions" in msg and "cohort.split" in msg
    assert "config key 'denoise.feed': 'dncnn' must be one of the methods run; allowed values: antsnlm" in msg
    assert "config key 'segment.params.magic': no such method in segment.methods" in msg
    assert "denoise.params.dncnn" in msg  # params of a method the config no longer runs


def test_tuning_grids_are_checked(default):
    cfg = copy.deepcopy(default)
    cfg["reconstruct"]["tune"]["cs"] = {"lam": []}
    cfg["segment"].setdefault("tune", {})["atropos"] = {"mrf_weight": [0.1, -0.2]}
    cfg["denoise"]["tune"]["antsnlm"] = {"patch_size": [1]}
    cfg["register"].setdefault("tune", {})["voxelmorph"] = {"epochs": [1, 2]}  # learned: trained, not tuned
    msg = _err(cfg)
    assert "config key 'reconstruct.tune.cs.lam': [] should be non-empty" in msg
    assert "config key 'segment.tune.atropos.mrf_weight[1]': -0.2 is out of range; allowed values: >= 0" in msg
    assert "denoise.tune.antsnlm" in msg and "patch_size" in msg and "allowed keys: noise_model, patch_radius" in msg
    assert "register.tune" in msg and "voxelmorph" in msg and "allowed keys: antssyn" in msg
    cfg = copy.deepcopy(default)
    cfg["reconstruct"]["tune"]["cs"] = {"lam": [0.0]}
    assert "config key 'reconstruct.tune.cs.lam[0]': 0.0 is out of range; allowed values: > 0" in _err(cfg)
    cfg = copy.deepcopy(default)
    cfg["reconstruct"]["methods"] = ["zerofilled", "varnet"]
    cfg["reconstruct"]["params"].pop("cs")
    assert "config key 'reconstruct.tune.cs': no such method in reconstruct.methods" in _err(cfg)


def test_centre_larger_than_the_acceleration_allows(default):
    """R8 with 16 % of the lines in the centre cannot be sampled (fastMRI's mask functions would
    need a negative number of outer lines): a config error naming the key, not MONAI's ValueError
    from inside the acquire job."""
    cfg = copy.deepcopy(default)
    cfg["acquire"]["accelerations"] = [8, 4, 1]
    cfg["acquire"]["center_fractions"] = [0.16, 0.16, 0.16]
    msg = _err(cfg)
    assert "config key 'acquire.center_fractions': 0.16 at acceleration 8" in msg
    assert "acceleration 4" not in msg  # 16 % centre lines at R4 is valid (the default)


@pytest.mark.parametrize("inp, expected", [
    ({"kind": "bids"}, "config key 'input.bids_dir' is missing (required for input.kind bids)"),
    ({"kind": "fastmri", "dir": "x", "accelerations": [4]},
     "config key 'input.center_fractions' is missing (required for input.kind fastmri)"),
    ({"kind": "bids", "bids_dir": "x", "accelerations": [4]}, "config key 'input.accelerations': not used by input.kind bids"),
    ({"kind": "fastmri", "dir": "x", "accelerations": [4, 8], "center_fractions": [0.08]},
     "config key 'input.center_fractions': needs one value per acceleration (2), got 1"),
    ({"kind": "fastmri", "dir": "x", "accelerations": [8], "center_fractions": [0.16]},
     "config key 'input.center_fractions': 0.16 at acceleration 8"),
    ({"kind": "dicom"}, "config key 'input.kind': 'dicom' is not allowed; allowed values: simulated, bids, fastmri"),
    ({"kind": "bids", "bids_dir": "x", "participant_label": ["sub-01"]}, "config key 'input.participant_label[0]'"),
])
def test_input_section_names_the_key(default, inp, expected):
    """Each input kind takes its own keys; a missing, foreign or malformed one is a config error
    naming it (before any job)."""
    cfg = copy.deepcopy(default)
    cfg["input"] = inp
    assert expected in _err(cfg)


def test_valid_input_sections(default):
    for inp in ({"kind": "bids", "bids_dir": "/data/study", "participant_label": ["01"], "derivatives": ["/d"]},
                {"kind": "fastmri", "dir": "/data/brain", "accelerations": [4, 8], "center_fractions": [0.08, 0.04],
                 "output_dir": "out"}):
        validate_config({**copy.deepcopy(default), "input": inp})


def test_training_params_get_what_the_workflow_knows(default):
    """Unset, an age-bin model's bins are the cohort's age range and noise-blind training's coils
    the acquisition's; a configured value is kept; inference-only keys never reach the trainer."""
    from mrichain.plan.config import train_params

    cfg = copy.deepcopy(default)
    cfg["cohort"]["age_range"] = [18, 90]
    cfg["predict"]["params"]["sfcn"] = {"epochs": 3, "infer": {"mc_samples": 5}}
    assert train_params(cfg, "predict", "sfcn") == {"epochs": 3, "bin_range": [18.0, 90.0]}
    cfg["predict"]["params"]["sfcn"]["bin_range"] = [30, 60]
    assert train_params(cfg, "predict", "sfcn")["bin_range"] == [30, 60]
    cfg["denoise"]["params"]["dncnn"] = {"noise_snr_range": [20, 80]}
    assert train_params(cfg, "denoise", "dncnn")["noise_coils"] == cfg["acquire"]["n_coils"]
    assert "bin_range" not in train_params(cfg, "predict", "mlp")
