"""MRF dictionary (grid, SVD, HDF5), config errors that name the key, and dictionary matching."""
import numpy as np
import pytest
import torch

from mrichain import UserError
from mrichain.mrf.dictionary import (
    Grid, build_dictionary, compress, dictionary_settings, load_dictionary, save_dictionary,
)
from mrichain.mrf.matching import match
from mrichain.mrf.sequence import FispSequence


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SEQ = FispSequence(n_timepoints=300, n_lobes=3)
GRID = Grid(t1_range_ms=(50.0, 5000.0), t1_steps=25, t2_range_ms=(10.0, 2500.0), t2_steps=25)


@pytest.fixture(scope="module")
def dictionary():
    return compress(build_dictionary(SEQ, GRID), 20)


def test_grid_keeps_only_t2_below_t1_and_is_log_spaced():
    t1, t2, b1 = GRID.points()
    assert np.all(t2 < t1) and np.all(b1 == 1.0) and len(GRID) == t1.size
    t1_axis, t2_axis, _ = GRID.axes()
    ratios = t1_axis[1:] / t1_axis[:-1]
    np.testing.assert_allclose(ratios, ratios[0])
    assert GRID.quantisation_error() == pytest.approx(np.sqrt(max(ratios[0], (2500 / 10) ** (1 / 24))) - 1)
    # a value halfway (in log) between two grid values is that far from both
    mid = np.sqrt(t1_axis[3] * t1_axis[4])
    assert mid / t1_axis[3] - 1 <= GRID.quantisation_error() + 1e-12
    with_b1 = Grid(t1_steps=5, t2_steps=5, b1_values=[0.9, 1.1])
    assert len(with_b1) == 2 * len(Grid(t1_steps=5, t2_steps=5))


def test_hdf5_round_trip(dictionary, tmp_path):
    path = save_dictionary(dictionary, tmp_path / "dict.h5")
    back = load_dictionary(path)
    for name in ("atoms", "norms", "t1", "t2", "b1", "basis", "compressed", "compressed_norms"):
        assert torch.equal(getattr(back, name), getattr(dictionary, name)), name
    assert back.sequence == SEQ and back.grid == GRID and back.n_states == dictionary.n_states


def test_atoms_are_normalised_and_basis_orthonormal(dictionary):
    torch.testing.assert_close(torch.linalg.vector_norm(dictionary.atoms, dim=1), torch.ones(len(dictionary)))
    v = dictionary.basis
    torch.testing.assert_close(v.conj().T @ v, torch.eye(v.shape[1], dtype=v.dtype), atol=1e-5, rtol=0)
    # 20 of 300 dimensions hold nearly all of the dictionary's energy (McGivney 2014)
    assert float(dictionary.compressed_norms.min()) > 0.99


@pytest.mark.parametrize("block,key", [
    ({"t1_steps": 0}, "mrf.dictionary.t1_steps"),
    ({"t2_steps": 0}, "mrf.dictionary.t2_steps"),
    ({"b1_values": []}, "mrf.dictionary.b1_values"),
    ({"t1_range_ms": [20, 100], "t2_range_ms": [200, 2000]}, "mrf.dictionary.t2_range_ms"),
    ({"t1_range_ms": [500, 100]}, "mrf.dictionary.t1_range_ms"),
    ({"svd_rank": 301}, "mrf.dictionary.svd_rank"),
    ({"svd_rank": 0}, "mrf.dictionary.svd_rank"),
    ({"t1_step": 10}, "mrf.dictionary.t1_step"),
])
def test_dictionary_config_errors_name_the_key(block, key):
    with pytest.raises(UserError, match=key.replace("[", r"\[")) as err:
        dictionary_settings(block, n_timepoints=300)
    assert str(err.value).startswith(key)


def test_dictionary_settings_defaults():
    s = dictionary_settings({"t1_steps": 10, "t2_steps": 10, "svd_rank": 5}, n_timepoints=300)
    assert s["grid"].t1_steps == 10 and s["svd_rank"] == 5 and s["n_states"] >= 1


def test_rank_above_time_points_or_atoms_is_refused(dictionary):
    with pytest.raises(UserError, match="mrf.dictionary.svd_rank: rank 301 is more than"):
        compress(dictionary, 301)
    tiny = build_dictionary(FispSequence(n_timepoints=50), Grid(t1_steps=2, t2_steps=2))
    with pytest.raises(UserError, match="atoms"):
        compress(tiny, 40)


@pytest.mark.parametrize("block,key", [
    ({"n_timepoints": 3}, "mrf.sequence.n_timepoints"),
    ({"n_timepoints": 100.5}, "mrf.sequence.n_timepoints"),
    ({"max_flip_deg": 0}, "mrf.sequence.max_flip_deg"),
    ({"te_ms": 13.0}, "mrf.sequence.te_ms"),
    ({"tr_min_ms": 15.0, "tr_max_ms": 12.0}, "mrf.sequence.tr_max_ms"),
    ({"inversion": "yes"}, "mrf.sequence.inversion"),
    ({"lobes": 4}, "mrf.sequence.lobes"),
])
def test_sequence_config_errors_name_the_key(block, key):
    with pytest.raises(UserError) as err:
        FispSequence.from_config(block)
    assert str(err.value).startswith(key)


def test_sequence_is_deterministic_from_its_seed():
    a, b, c = FispSequence.from_config({"seed": 3}), FispSequence(seed=3), FispSequence(seed=4)
    assert a == b
    np.testing.assert_array_equal(a.repetition_times_ms(), b.repetition_times_ms())
    assert not np.array_equal(a.repetition_times_ms(), c.repetition_times_ms())
    tr = a.repetition_times_ms()
    assert tr.min() >= 12.0 and tr.max() <= 15.0 and a.n_timepoints == 1000
    flips = a.flip_angles_deg()
    assert flips.max() <= 60.0 + 1e-9 and flips.min() >= 5.0 - 1e-9


def test_noiseless_atom_matches_itself_and_returns_its_pd(dictionary):
    idx = torch.arange(0, len(dictionary), 7)
    pd = torch.linspace(0.3, 1.2, idx.numel())
    f = dictionary.atoms[idx] * (pd * dictionary.norms[idx])[:, None]
    for compressed in (False, True):
        r = match(f, dictionary, compressed=compressed, memory_mb=0.05)  # several chunks
        same = r["index"] == idx
        # the only misses are atoms indistinguishable in float32 (|<d_i, d_j>| = 1 to 1e-6)
        overlap = (dictionary.atoms[idx].conj() * dictionary.atoms[r["index"]]).sum(1).abs()
        assert bool(torch.all(same | (overlap > 1 - 1e-6))), compressed
        assert float(same.float().mean()) > 0.95
        torch.testing.assert_close(r["pd"][same], pd[same], rtol=2e-3, atol=0)
        torch.testing.assert_close(r["t1"][same], dictionary.t1[idx][same])
        torch.testing.assert_close(r["t2"][same], dictionary.t2[idx][same])


def test_svd_matching_agrees_with_full_matching(dictionary):
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(dictionary), (200,), generator=gen)
    noise = 0.002 * torch.randn(200, SEQ.n_timepoints, dtype=torch.complex64, generator=gen)
    f = dictionary.atoms[idx] + noise
    full, svd = match(f, dictionary), match(f, dictionary, compressed=True)
    assert float((full["index"] == svd["index"]).float().mean()) > 0.97


def test_nearest_atom_on_the_log_grid(dictionary):
    idx = torch.arange(0, len(dictionary), 11)
    t1, t2 = dictionary.t1[idx], dictionary.t2[idx]
    assert torch.equal(dictionary.nearest(t1 * 1.01, t2 / 1.01), idx)
    # T2 above T1 falls back to the longest T2 below T1 of its row
    j = dictionary.nearest(torch.tensor([1000.0]), torch.tensor([3000.0]))
    assert float(dictionary.t2[j]) < float(dictionary.t1[j])
