"""DRONE on SVD-compressed fingerprints: its input is the dictionary's rank-r projection (2r
values), it matches noiseless atoms after brief training, and it refuses a basis it was not
trained on."""
import json

import pytest
import torch

from mrichain import UserError
from mrichain.mrf import drone, run
from mrichain.mrf.dictionary import Grid, build_dictionary, compress, load_dictionary, save_dictionary
from mrichain.mrf.sequence import FispSequence

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEQ = FispSequence(n_timepoints=200, n_lobes=2)
GRID = Grid(t1_range_ms=(100.0, 5000.0), t1_steps=14, t2_range_ms=(20.0, 2500.0), t2_steps=14)
RANK = 12
# 140 atoms, 5 batches per epoch: up to 400 steps, a few seconds on one thread
BRIEF = {"epochs": 80, "batch_size": 32, "lr": 3e-3, "n_val": 200}
TISSUES = {"WM": (830.0, 80.0), "GM": (1330.0, 110.0), "CSF": (4000.0, 2000.0)}


@pytest.fixture(scope="module")
def dictionary():
    return compress(build_dictionary(SEQ, GRID, n_states=32), RANK)


@pytest.fixture(scope="module")
def trained(dictionary, tmp_path_factory):
    out = tmp_path_factory.mktemp("drone") / "mrf-drone.pt"
    drone.train({"dictionary": dictionary}, BRIEF, str(out), 0, progress=False)
    net, card = drone.load_model(str(out))
    return out, net, card


def test_the_input_is_the_rank_r_projection_2r_values(dictionary, trained):
    _, net, card = trained
    first = net.net[0]
    assert first.in_features == 2 * RANK == 24  # not 2 x 200 time points
    x = drone.network_input(drone.project(dictionary.atoms[:5], dictionary.basis))
    assert x.shape == (5, 2 * RANK) and x.dtype == torch.float32
    # normalised as matching normalises: the fingerprint's scale (PD) does not change the input
    torch.testing.assert_close(drone.network_input(drone.project(3.7 * dictionary.atoms[:5], dictionary.basis)), x)
    assert torch.linalg.vector_norm(x, dim=1) == pytest.approx([RANK ** 0.5] * 5, rel=1e-5)
    # the projection is SVD matching's: the dictionary's compressed atoms times their norms in the subspace
    torch.testing.assert_close(drone.project(dictionary.atoms, dictionary.basis),
                               dictionary.compressed * dictionary.compressed_norms[:, None], rtol=1e-5, atol=1e-6)
    # the card and the state dict record the rank and the basis
    assert card["hyper_parameters"] == {"rank": RANK, "hidden": 300}
    assert card["basis"] == {"rank": RANK, "n_timepoints": 200, "sha256": drone.basis_hash(dictionary.basis)}
    assert net.basis_hash == card["basis"]["sha256"] and len(net.basis_hash) == 64


def test_subspace_noise_is_the_projected_full_noise(dictionary):
    """Training draws the noise in the r-dimensional space: it must be distributed as noise on the
    full fingerprint projected onto the basis (SD per coefficient = SD per time point, uncorrelated)."""
    n = 6000
    atoms = dictionary.atoms[torch.arange(n) % len(dictionary)]
    snr = torch.full((n,), 20.0)
    gen = torch.Generator().manual_seed(1)
    full = drone.project(drone.noisy_atoms(atoms, snr, gen) - atoms, dictionary.basis)
    coeffs = drone.project(atoms, dictionary.basis)
    sub = drone.noisy_coefficients(coeffs, snr, SEQ.n_timepoints, gen) - coeffs
    expected = 10 ** (-20 / 20) / SEQ.n_timepoints ** 0.5  # RMS of the complex noise per sample
    for noise in (full, sub):
        power = (noise.abs() ** 2).mean(0)  # [r]: per coefficient
        assert power.sqrt() == pytest.approx([expected] * RANK, rel=0.05)
        cov = (noise.conj().T @ noise) / n
        off = cov - torch.diag(torch.diagonal(cov))
        assert float(off.abs().max()) < 0.1 * expected ** 2


def test_briefly_trained_svd_drone_matches_noiseless_atoms(dictionary, trained):
    _, net, _ = trained
    t1 = torch.tensor([v[0] for v in TISSUES.values()])
    t2 = torch.tensor([v[1] for v in TISSUES.values()])
    idx = dictionary.nearest(t1, t2)  # the tissues' grid atoms, noiseless, at PD 0.7
    f = dictionary.atoms[idx] * (0.7 * dictionary.norms[idx])[:, None]
    pred = drone.predict(net, f, dictionary)
    for k, name in enumerate(TISSUES):
        assert float(pred["t1"][k] / dictionary.t1[idx[k]]) == pytest.approx(1.0, abs=0.05), name
        assert float(pred["t2"][k] / dictionary.t2[idx[k]]) == pytest.approx(1.0, abs=0.05), name
    assert torch.equal(pred["index"], idx)  # so PD is that atom's scale, from the subspace inner product
    assert pred["pd"] == pytest.approx([0.7] * 3, rel=1e-3)
    everything = drone.predict(net, dictionary.atoms, dictionary, batch_size=33)
    rel = torch.cat([(everything["t1"] / dictionary.t1 - 1).abs(), (everything["t2"] / dictionary.t2 - 1).abs()])
    assert float(rel.median()) < 0.03  # every atom of the 20 %-quantised grid (T1 and T2)
    # coefficients already projected (shared with SVD matching) give the same maps
    same = drone.predict(net, drone.project(f, dictionary.basis), dictionary, projected=True)
    for key in ("t1", "t2", "pd", "index"):
        torch.testing.assert_close(same[key], pred[key])


def test_a_model_is_refused_with_another_basis(dictionary, trained, tmp_path):
    path, net, _ = trained
    save_dictionary(dictionary, tmp_path / "same.h5")
    drone.check_basis(net, load_dictionary(tmp_path / "same.h5"))  # the file round trip keeps the basis
    other_rank = compress(dictionary, RANK - 2)
    other_grid = compress(build_dictionary(SEQ, Grid(t1_range_ms=(100.0, 5000.0), t1_steps=12,
                                                     t2_range_ms=(20.0, 2500.0), t2_steps=12), n_states=32), RANK)
    flipped = compress(dictionary, RANK)
    flipped.basis = flipped.basis.clone()
    flipped.basis[:, 0] *= -1  # the same subspace, another sign: the network's input changes sign
    f = dictionary.atoms[:4]
    for other in (other_rank, other_grid, flipped):
        with pytest.raises(drone.BasisMismatchError) as ei:
            drone.predict(net, f, other)
        msg = str(ei.value)
        assert isinstance(ei.value, UserError) and "\n" not in msg
        assert net.basis_hash[:16] in msg and drone.basis_hash(other.basis)[:16] in msg and "retrain" in msg
    # the mapping job names the model and the dictionary file, and refuses before any fingerprint is simulated
    save_dictionary(other_grid, tmp_path / "other.h5")
    with pytest.raises(drone.BasisMismatchError) as ei:
        run.map_subject("drone", tmp_path / "no-subject-read", tmp_path / "other.h5", {}, 0, {}, contrast="T1w",
                        seq_params={}, model=str(path))
    assert f"{path} applied with {tmp_path / 'other.h5'}:" in str(ei.value)
    without = compress(dictionary, RANK)
    without.basis = None
    with pytest.raises(ValueError, match="svd_rank"):
        drone.predict(net, f, without)


def test_the_state_dict_carries_the_basis_hash(trained, tmp_path):
    """A network rebuilt from the card alone does not know its basis: the weights file does."""
    path, net, card = trained
    state = torch.load(path, weights_only=True)
    assert bytes(state["basis_sha256"].tolist()).hex() == card["basis"]["sha256"]
    fresh = drone.build(card["hyper_parameters"])
    assert fresh.basis_hash != net.basis_hash
    card_copy = json.loads(path.with_suffix(".json").read_text())
    assert card_copy["input"].startswith("sqrt(r) c / ||c||")
