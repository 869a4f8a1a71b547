"""MR fingerprinting: dictionary matching (full, SVD) vs DRONE, speed and T1/T2 error, side by side.

    python benchmarks/mrf_speed.py [--steps 68,174,348] [--voxels 2000] [--snr 30]
        [--robust-snrs 25,35] [--rank 25] [--epochs 30] [--coarse-epochs 100] [--threads 1]
        [--repeats 3] [--drone-repeats 10] [--out results/bench/mrf_speed.tsv] [--seed 0]

The reproduction of DRONE's claims (Cohen et al. 2018; the review's section 3.1.2): a fully
connected network maps fingerprints to T1/T2 much faster than dictionary matching with comparable
error, and is more robust to a coarse dictionary.

- Sequence: the default :class:`~mrichain.mrf.sequence.FispSequence` (1,000 time points).
- Dictionaries: one per ``--steps`` value n (an n x n log grid over T1 20-5,000 ms and T2
  5-2,500 ms, T2 < T1; ~3k, ~20k, ~80k atoms by default), SVD-compressed to ``--rank``. Each
  row reports the grid's quantisation error (the largest relative distance of a T1 or T2 in range
  to its nearest grid value, :meth:`~mrichain.mrf.dictionary.Grid.quantisation_error`).
- Voxels: ``--voxels`` pure-tissue voxels (CSF/GM/WM at 20/45/35 %), each with its own T1, T2, PD
  (the 3 T nominal values times 1 + N(0, 0.05), as the cohort draws per subject; off the grid),
  fingerprints from the EPG with complex noise at ``--snr`` dB
  (:func:`~mrichain.mrf.fingerprints.add_noise`). Pure voxels: no partial-volume error, so the
  errors are the methods'.
- DRONE: on the fingerprints' rank-``--rank`` SVD projection (the dictionary's basis, as SVD
  matching; ``drone_inputs`` = 2 x rank), trained (the shared engine, its default recipe, noise
  20-50 dB, ``--epochs`` without early stopping) on the first dictionary whose quantisation error
  is <= 2 % (``drone_on`` column), and once more (``--coarse-epochs``) on the coarsest dictionary
  for its row; ``drone_s`` is the projection, the network's T1/T2 and PD from the nearest atom.
  ``macs_ratio`` is the arithmetic bound of ``ratio``: full matching's real multiply-adds per
  voxel (4 x atoms x T) over DRONE's (4 x T x rank for the projection, then the three layers).
- Timing: the same voxels, the same process and CPU, ``--threads`` torch threads (1 by default:
  on a shared 2-core machine a second thread only waits), the minimum of ``--repeats`` runs of
  each matching and of ``--drone-repeats`` runs of DRONE (tens of milliseconds, where one
  scheduler slice of a loaded machine is a large share; the minimum is the estimate of the
  method's own cost either way); ``ratio`` = matching_s / drone_s, ``ratio_svd`` =
  matchingsvd_s / drone_s.
- Robustness: every ``--robust-snrs`` SNR, on the coarsest dictionary and the <= 2 % one,
  T1/T2 MAPE of matching and DRONE on fresh noise (``<out stem>_robustness.tsv``).

Prints both tables. Times and ratios are of this machine; the errors are deterministic given the
seed (the timings are not).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mrichain.mrf import drone  # noqa: E402
from mrichain.mrf.dictionary import Grid, build_dictionary, compress  # noqa: E402
from mrichain.mrf.epg import simulate_fisp  # noqa: E402
from mrichain.mrf.fingerprints import add_noise  # noqa: E402
from mrichain.mrf.matching import match  # noqa: E402
from mrichain.mrf.scores import mape  # noqa: E402
from mrichain.mrf.sequence import FispSequence  # noqa: E402
from mrichain.simulate.tissue import TISSUE_PARAMS_3T  # noqa: E402


def voxels(seq: FispSequence, n: int, seed: int):
    """Clean fingerprints [n, T] of pure-tissue voxels and their truth (T1, T2, PD, tissue)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 12, 2]))
    names = np.array(["CSF", "GM", "WM"])
    tissue = rng.choice(names, size=n, p=[0.2, 0.45, 0.35])
    truth = {k: np.array([TISSUE_PARAMS_3T[t][k] for t in tissue]) * np.maximum(1 + 0.05 * rng.standard_normal(n), 0.1)
             for k in ("T1", "T2", "PD")}
    clean = simulate_fisp(seq, truth["T1"], truth["T2"]) * torch.as_tensor(truth["PD"], dtype=torch.float32)[:, None]
    return clean, truth, tissue


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def errors(prefix: str, est: dict, truth: dict) -> dict:
    return {f"t1_mape_{prefix}": mape(est["t1"].numpy(), truth["T1"]),
            f"t2_mape_{prefix}": mape(est["t2"].numpy(), truth["T2"]),
            f"pd_mape_{prefix}": mape(est["pd"].numpy(), truth["PD"])}


def macs_ratio(n_atoms: int, net: drone.Drone, seq: FispSequence) -> float:
    """Real multiply-adds per voxel of full matching (4 x atoms x T) over DRONE's: the projection
    (4 x T x rank) and the network's dense layers (PD from the nearest atom adds 4 x rank)."""
    n_t = seq.n_timepoints
    layers = sum(m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear))
    return 4 * n_atoms * n_t / (4 * n_t * net.rank + layers + 4 * net.rank)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="68,174,348")
    ap.add_argument("--voxels", type=int, default=2000)
    ap.add_argument("--snr", type=float, default=30.0)
    ap.add_argument("--robust-snrs", default="25,35")
    ap.add_argument("--rank", type=int, default=25)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--coarse-epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--drone-repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "mrf_speed.tsv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    seq = FispSequence()
    clean, truth, tissue = voxels(seq, args.voxels, args.seed)
    noisy, _ = add_noise(clean, args.snr, np.random.default_rng([args.seed, 12, 3]))

    steps = [int(s) for s in args.steps.split(",")]
    dicts = {}
    for n in steps:
        t0 = time.perf_counter()
        d = compress(build_dictionary(seq, Grid(t1_steps=n, t2_steps=n)), args.rank)
        dicts[n] = d
        print(f"dictionary {n} x {n}: {len(d)} atoms, quantisation error {100 * d.grid.quantisation_error():.2f} %, "
              f"built in {time.perf_counter() - t0:.1f} s", flush=True)
    fine = next((n for n in steps if dicts[n].grid.quantisation_error() <= 0.02), steps[-1])
    coarse = steps[0]

    nets, tmp = {}, tempfile.mkdtemp(prefix="mrf_bench_")
    for n, epochs in ((fine, args.epochs), (coarse, args.coarse_epochs)):
        if n in nets:
            continue
        t0 = time.perf_counter()
        out = f"{tmp}/drone-{n}.pt"
        # a fixed budget: under the cosine decay the last epochs are where validation settles
        res = drone.train(dicts[n], {"epochs": epochs, "patience": epochs, "threads": args.threads},
                          out, args.seed, progress=False)
        nets[n] = drone.load_model(out)[0]
        print(f"DRONE on {len(dicts[n])} atoms: {res.epochs_run} epochs, val MAPE {-res.best_score:.2f} %, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

    rows = []
    for n in steps:
        d = dicts[n]
        net_n = n if n in nets else fine
        m_s, m = timed(lambda: match(noisy, d), args.repeats)
        s_s, s = timed(lambda: match(noisy, d, compressed=True), args.repeats)
        # a row without its own DRONE uses the one trained on the <= 2 % dictionary, with that
        # dictionary's basis and atoms (the network is meaningless in another basis)
        r_s, r = timed(lambda: drone.predict(nets[net_n], noisy, dicts[net_n]), args.drone_repeats)
        rows.append({"atoms": len(d), "grid": f"{n}x{n}", "voxels": args.voxels, "snr_db": args.snr,
                     "quantisation_error_pct": 100 * d.grid.quantisation_error(),
                     "matching_s": m_s, "matchingsvd_s": s_s, "drone_s": r_s,
                     "ratio": m_s / r_s, "ratio_svd": s_s / r_s, "macs_ratio": macs_ratio(len(d), nets[net_n], seq),
                     "drone_inputs": 2 * nets[net_n].rank, "drone_on": len(dicts[net_n]),
                     **errors("matching", m, truth), **errors("matchingsvd", s, truth), **errors("drone", r, truth)})
        print(f"  {len(d)} atoms: matching {m_s:.3f} s, svd {s_s:.3f} s, drone {r_s:.4f} s", flush=True)
    table = pd.DataFrame(rows)

    robust = []
    for snr in [float(s) for s in args.robust_snrs.split(",") if s]:
        f, _ = add_noise(clean, snr, np.random.default_rng([args.seed, 12, 4, int(snr * 10)]))
        for n in sorted({coarse, fine}):
            d = dicts[n]
            m, r = match(f, d), drone.predict(nets[n], f, d)
            robust.append({"snr_db": snr, "atoms": len(d), "quantisation_error_pct": 100 * d.grid.quantisation_error(),
                           **errors("matching", m, truth), **errors("drone", r, truth)})
    robust = pd.DataFrame(robust)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False, float_format="%.5g")
    robust.to_csv(out.with_name(out.stem + "_robustness.tsv"), sep="\t", index=False, float_format="%.4g")
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
        print(robust.to_string(index=False))
    print(f"wrote {out} and {out.with_name(out.stem + '_robustness.tsv')} in {time.perf_counter() - t_start:.0f} s "
          f"({args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
