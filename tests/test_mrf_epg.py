"""The EPG simulator of inversion-prepared FISP: against an independent simulator (MRzeroCore's
phase distribution graph), against the closed form of a perfectly spoiled train, and its sanity."""
import math

import numpy as np
import pytest
import torch

from mrichain.mrf.epg import DEFAULT_STATES, simulate_fisp
from mrichain.mrf.sequence import FispSequence


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Constant TR: MRzeroCore's phase distribution graph tells states apart by their dephasing time as
# well as their gradient moment, so a pseudo-random TR multiplies its states past what it keeps (at
# 60 random TRs it already differs by 0.3-10 %); with a constant TR its states are the EPG's.
REF_SEQ = FispSequence(n_timepoints=150, n_lobes=2, max_flip_deg=60.0, tr_min_ms=12.0, tr_max_ms=12.0, ti_ms=40.0)


def _mrzero_signal(seq: FispSequence, t1_ms: float, t2_ms: float) -> np.ndarray:
    """The FISP train of ``seq`` simulated by MRzeroCore (AGPL; test-only) on one box voxel of 1 m:
    a 1 /m gradient moment per TR is one dephasing cycle across it, as the EPG shift."""
    mr0 = pytest.importorskip("MRzeroCore")
    flips = np.deg2rad(seq.flip_angles_deg())
    trs = seq.repetition_times_ms() / 1000.0
    te = seq.te_ms / 1000.0
    s = mr0.Sequence(normalized_grads=False)
    rep = s.new_rep(1)  # ideal inversion, crusher, TI
    rep.pulse.usage, rep.pulse.angle, rep.pulse.phase = mr0.PulseUsage.UNDEF, math.pi, 0.0
    rep.event_time[0], rep.gradm[0, 2] = seq.ti_ms / 1000.0, 37.0
    for i in range(seq.n_timepoints):
        rep = s.new_rep(2)
        rep.pulse.usage, rep.pulse.angle, rep.pulse.phase = mr0.PulseUsage.EXCIT, float(flips[i]), 0.0
        rep.event_time[0], rep.adc_usage[0], rep.adc_phase[0] = te, 1, 0.0
        rep.event_time[1], rep.gradm[1, 2] = trs[i] - te, 1.0
    phantom = mr0.CustomVoxelPhantom([[0.0, 0.0, 0.0]], PD=1.0, T1=t1_ms / 1000, T2=t2_ms / 1000, T2dash=1e9,
                                     D=0.0, B0=0.0, B1=1.0, voxel_size=1.0, voxel_shape="box")
    data = phantom.build()
    graph = mr0.compute_graph(s, data, max_state_count=200, min_state_mag=1e-6)
    sig = mr0.execute_graph(graph, s, data, min_emitted_signal=1e-6, min_latent_signal=1e-6, print_progress=False)
    return sig[:, 0].numpy().astype(np.complex128)


def _check_against_mrzero(t1, t2):
    ref = _mrzero_signal(REF_SEQ, t1, t2)
    for n_states in (REF_SEQ.n_timepoints // 2 + 1, DEFAULT_STATES):
        ours = simulate_fisp(REF_SEQ, [t1], [t2], n_states=n_states, double=True)[0].numpy()
        # same convention (phase, scale): compared as they are, no fitted factor
        err = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
        assert err < 0.01, (t1, t2, n_states, err)


@pytest.mark.parametrize("t1,t2", [(830.0, 80.0), (1330.0, 110.0), (300.0, 30.0)])
def test_epg_agrees_with_mrzero_within_1_percent(t1, t2):
    _check_against_mrzero(t1, t2)


@pytest.mark.integration
def test_epg_agrees_with_mrzero_for_csf():
    """CSF (long T2: many states matter; MRzeroCore takes ~20 s)."""
    _check_against_mrzero(4000.0, 2000.0)


def test_short_t2_is_the_perfectly_spoiled_closed_form():
    """T2 << TR leaves no transverse coherence at the next pulse: the train is the spoiled-GRE
    recursion S_i = sin(a_i) Mz_i exp(-TE/T2), Mz_(i+1) = cos(a_i) Mz_i E1_i + 1 - E1_i."""
    seq = FispSequence(n_timepoints=300, n_lobes=3, seed=4)
    t1, t2 = 900.0, 0.5
    flips, trs = np.deg2rad(seq.flip_angles_deg()), seq.repetition_times_ms()
    e1_ti = math.exp(-seq.ti_ms / t1)
    mz, expected = -e1_ti + 1 - e1_ti, []
    for a, tr in zip(flips, trs):
        expected.append(math.sin(a) * mz * math.exp(-seq.te_ms / t2))
        e1 = math.exp(-tr / t1)
        mz = math.cos(a) * mz * e1 + 1 - e1
    ours = simulate_fisp(seq, [t1], [t2], double=True)[0].numpy()
    # F+_0 = -i sin(a) Mz (Weigel's convention): the signal is -i times the closed form
    np.testing.assert_allclose(ours, -1j * np.asarray(expected), atol=1e-12)


def test_inversion_makes_the_signal_recover_through_zero():
    seq = FispSequence(n_timepoints=400, n_lobes=2)
    inverted = simulate_fisp(seq, [1300.0], [100.0])[0].imag.numpy()
    plain = simulate_fisp(FispSequence(n_timepoints=400, n_lobes=2, inversion=False), [1300.0], [100.0])[0].imag.numpy()
    # the imaginary part is -sin(a) Mz: positive while Mz < 0, negative once it has recovered
    assert inverted[0] > 0 and inverted[-1] < 0 and np.any(np.diff(np.sign(inverted)) != 0)
    assert np.all(plain < 0)
    # the inversion is forgotten after several T1: the ends of the trains agree
    assert abs(inverted[-1] - plain[-1]) < 0.02 * abs(plain[-1])


def test_long_t2_keeps_echoes_that_short_t2_loses():
    seq = FispSequence(n_timepoints=300, n_lobes=2)
    s = simulate_fisp(seq, [1000.0, 1000.0, 1000.0], [1.0, 100.0, 1e6], double=True)
    norms = torch.linalg.vector_norm(s, dim=1)
    assert norms[0] < norms[1] < norms[2]
    # with T2 -> infinity the transverse states never decay: stimulated echoes change the shape too
    corr = (s[0].conj() @ s[2]).abs() / (norms[0] * norms[2])
    assert corr < 0.99


def test_batched_equals_one_at_a_time_and_is_chunk_independent():
    seq = FispSequence(n_timepoints=200, n_lobes=2)
    t1 = [300.0, 830.0, 1330.0, 4000.0, 60.0]
    t2 = [30.0, 80.0, 110.0, 2000.0, 40.0]
    together = simulate_fisp(seq, t1, t2, double=True)
    chunked = simulate_fisp(seq, t1, t2, double=True, chunk=2)
    single = torch.cat([simulate_fisp(seq, [a], [b], double=True) for a, b in zip(t1, t2)])
    torch.testing.assert_close(together, single, rtol=0, atol=1e-12)
    torch.testing.assert_close(together, chunked, rtol=0, atol=1e-12)
    assert together.shape == (5, 200) and together.dtype == torch.complex128
    assert simulate_fisp(seq, t1, t2).dtype == torch.complex64


def test_b1_per_atom_path_equals_grouped_path():
    seq = FispSequence(n_timepoints=120, n_lobes=2)
    t1, t2 = [800.0] * 3, [70.0] * 3
    b1 = torch.tensor([0.8, 1.0, 1.2], dtype=torch.float64)
    grouped = simulate_fisp(seq, t1, t2, b1, double=True)
    from mrichain.mrf import epg

    per_atom = epg._simulate(seq, torch.tensor(t1, dtype=torch.float64), torch.tensor(t2, dtype=torch.float64),
                             b1, DEFAULT_STATES)
    torch.testing.assert_close(grouped.imag, per_atom, rtol=0, atol=1e-12)
    assert not torch.allclose(grouped[0], grouped[2])  # B1 matters


def test_default_truncation_is_within_its_documented_error():
    seq = FispSequence()
    exact = simulate_fisp(seq, [4000.0, 1330.0], [2000.0, 110.0], n_states=seq.n_timepoints // 2 + 1, double=True)
    trunc = simulate_fisp(seq, [4000.0, 1330.0], [2000.0, 110.0], double=True)
    err = torch.linalg.vector_norm(trunc - exact, dim=1) / torch.linalg.vector_norm(exact, dim=1)
    assert err[0] < 0.004 and err[1] < 1e-8


def test_bad_inputs_raise():
    seq = FispSequence(n_timepoints=20)
    with pytest.raises(ValueError, match="> 0"):
        simulate_fisp(seq, [0.0], [10.0])
    with pytest.raises(ValueError, match="n_states"):
        simulate_fisp(seq, [100.0], [10.0], n_states=0)
