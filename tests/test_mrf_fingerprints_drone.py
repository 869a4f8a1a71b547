"""MRF fingerprints from ground-truth maps (partial volume, seeded noise), DRONE (shapes, training,
resume) and the scores."""
import json

import numpy as np
import pytest
import torch

from mrichain.mrf import drone
from mrichain.mrf.dictionary import Grid, build_dictionary, compress
from mrichain.mrf.epg import simulate_fisp
from mrichain.mrf.fingerprints import subject_fingerprints
from mrichain.mrf.scores import map_scores, mape
from mrichain.mrf.sequence import FispSequence
from mrichain.mrf.synthesis import synthesise
from mrichain.simulate.cohort import Subject
from mrichain.simulate.signal import noise_free_image
from trainer_checks import assert_resumes_identically


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SEQ = FispSequence(n_timepoints=200, n_lobes=2)
PARAMS = {"CSF": {"T1": 4000.0, "T2": 2000.0, "PD": 1.0}, "GM": {"T1": 1330.0, "T2": 110.0, "PD": 0.8},
          "WM": {"T1": 830.0, "T2": 80.0, "PD": 0.7}}
RANK = 12
TRAIN = {"epochs": 3, "batch_size": 64, "n_val": 64, "lr": 1e-3}


def _subject():
    """4 x 3 x 2 voxels: pure CSF, GM, WM, a 50/50 GM/WM voxel, background; two slices."""
    shape = (4, 3, 2)
    probs = np.zeros((4,) + shape, np.float32)
    probs[0] = 1.0
    for x, mix in enumerate(([0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0.5, 0.5])):
        probs[:, x, :2, :] = np.asarray(mix, np.float32)[:, None, None]
    labels = np.argmax(probs, 0).astype(np.uint8)
    maps = {k: np.tensordot(np.array([0] + [PARAMS[t][k] for t in ("CSF", "GM", "WM")]), probs, 1).astype(np.float32)
            for k in ("T1", "T2", "PD")}
    return Subject("sub-001", 40.0, "test", probs, labels, (probs[0] < 0.5).astype(np.uint8), maps["T1"], maps["T2"],
                   maps["PD"], np.ones(shape, np.float32), np.zeros(shape + (3,), np.float32), np.eye(4), PARAMS)


def test_partial_volume_mixes_signals_not_parameters():
    subj = _subject()
    fp = subject_fingerprints(subj, SEQ, seed=1, snr_db=None)
    assert len(fp) == 4 * 2 * 2 and fp.signals.shape == (16, 200) and fp.signals.dtype == torch.complex64
    sig = {t: simulate_fisp(SEQ, [PARAMS[t]["T1"]], [PARAMS[t]["T2"]])[0] * PARAMS[t]["PD"] for t in PARAMS}
    at = {tuple(ix): i for i, ix in enumerate(fp.index)}
    torch.testing.assert_close(fp.signals[at[(1, 0, 0)]], sig["GM"])
    mixed = fp.signals[at[(3, 1, 1)]]
    torch.testing.assert_close(mixed, 0.5 * sig["GM"] + 0.5 * sig["WM"], rtol=1e-5, atol=1e-6)
    mean_params = simulate_fisp(SEQ, [0.5 * (1330 + 830)], [0.5 * (110 + 80)])[0] * 0.75
    assert float((mixed - mean_params).abs().max()) > 1e-3
    assert fp.truth["T1"][at[(3, 1, 1)]] == pytest.approx(1080.0)
    vol = fp.volume(fp.truth["T1"])
    np.testing.assert_array_equal(vol, subj.t1map * (subj.brain_mask > 0))
    assert set(fp.slices.tolist()) == {0, 1}
    only = subject_fingerprints(subj, SEQ, seed=1, snr_db=None, slices=[1])
    assert len(only) == 8 and set(only.slices.tolist()) == {1}


def test_seeded_noise_is_byte_identical_and_at_the_snr():
    subj = _subject()
    a = subject_fingerprints(subj, SEQ, seed=5, snr_db=20.0)
    b = subject_fingerprints(subj, SEQ, seed=5, snr_db=20.0)
    c = subject_fingerprints(subj, SEQ, seed=6, snr_db=20.0)
    clean = subject_fingerprints(subj, SEQ, seed=5, snr_db=None)
    assert a.signals.numpy().tobytes() == b.signals.numpy().tobytes()
    assert not torch.equal(a.signals, c.signals)
    noise = (a.signals - clean.signals).numpy()
    rms_signal = np.linalg.norm(clean.signals.numpy(), axis=1).mean() / np.sqrt(SEQ.n_timepoints)
    assert a.sigma == pytest.approx(rms_signal / 10.0)  # 20 dB
    assert np.sqrt(np.mean(np.abs(noise) ** 2)) == pytest.approx(a.sigma, rel=0.05)


def test_b1_field_changes_the_fingerprints():
    subj = _subject()
    plain = subject_fingerprints(subj, SEQ, seed=1, snr_db=None)
    b1 = subject_fingerprints(subj, SEQ, seed=1, snr_db=None, b1_amplitude=0.2)
    assert not np.allclose(b1.truth["B1"], 1.0) and b1.truth["B1"].max() <= 1.2 + 1e-6
    assert not torch.allclose(plain.signals, b1.signals)


def test_scores_and_synthesis():
    assert mape([110.0, 90.0], [100.0, 100.0]) == pytest.approx(10.0)
    labels = np.array([1, 2, 3, 3], np.uint8)
    truth = np.array([4000.0, 1330.0, 830.0, 830.0])
    s = map_scores(truth * 1.1, truth, truth, truth, labels, seconds=2.0, n_slices=4)
    assert s["t1_mape"] == pytest.approx(10.0) and s["t2_mape"] == 0.0 and s["t1_mape_WM"] == pytest.approx(10.0)
    assert s["seconds_per_slice"] == 0.5
    subj = _subject()
    seq = {"tr_ms": 20.0, "te_ms": 4.0, "flip_deg": 25.0}
    img = synthesise(subj.t1map, subj.t2map, subj.pdmap, "T1w", seq, mask=subj.brain_mask)
    ref = noise_free_image(subj, "T1w", seq)
    pure = subj.probs[1:].max(0) == 1.0
    np.testing.assert_allclose(img[pure], ref[pure], rtol=1e-5)
    assert img[subj.brain_mask == 0].max() == 0


@pytest.fixture(scope="module")
def small_dictionary():
    return compress(build_dictionary(SEQ, Grid(t1_range_ms=(100.0, 5000.0), t1_steps=14, t2_range_ms=(20.0, 2500.0),
                                               t2_steps=14)), RANK)


def test_drone_forward_backward_shapes(small_dictionary):
    torch.manual_seed(0)
    net = drone.build({"rank": RANK, "hidden": 300})
    x = drone.network_input(drone.project(small_dictionary.atoms[:8], small_dictionary.basis))
    assert x.shape == (8, 2 * RANK) and x.dtype == torch.float32
    out = net(x)
    assert out.shape == (8, 2)
    loss = drone.loss_fn(net, {"input": x, "target": torch.zeros(8, 2)}, "cpu")
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == 2 * RANK * 300 + 300 + 300 * 300 + 300 + 300 * 2 + 2


def test_drone_training_lowers_the_error_and_writes_its_card(small_dictionary, tmp_path):
    out = tmp_path / "mrf-drone.pt"
    res = drone.train({"dictionary": small_dictionary}, {**TRAIN, "epochs": 12, "n_val": 200}, str(out), 0,
                      progress=False)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["method"] == "drone" and len(card["training_data_hash"]) == 64
    assert card["noise_levels"]["snr_range_db"] == [20.0, 50.0]
    net, _ = drone.load_model(str(out))
    torch.manual_seed(0)
    untrained = drone.build(card["hyper_parameters"])
    untrained.log_mean.copy_(net.log_mean)
    untrained.log_std.copy_(net.log_std)
    val = drone.validation_set(small_dictionary, 200, 35.0, seed=123)  # not the training run's val set
    err_trained = -drone.score_fn(net, val, "cpu")
    err_untrained = -drone.score_fn(untrained, val, "cpu")
    assert err_trained < 0.5 * err_untrained, (err_trained, err_untrained)
    assert res.best_score == pytest.approx(max(r["val_neg_mape"] for r in res.curve))
    # prediction: T1/T2 per voxel, PD from the nearest atom
    idx = torch.arange(0, len(small_dictionary), 5)
    f = small_dictionary.atoms[idx] * (0.8 * small_dictionary.norms[idx])[:, None]
    pred = drone.predict(net, f, small_dictionary, batch_size=7)
    assert pred["t1"].shape == (idx.numel(),) and pred["pd"].shape == (idx.numel(),)
    assert float(pred["pd"].median()) == pytest.approx(0.8, rel=0.1)


def test_drone_interrupted_training_resumes_to_the_same_state(small_dictionary, tmp_path):
    assert_resumes_identically(drone.train, {"dictionary": small_dictionary}, TRAIN, tmp_path, 3)
