"""Motion on simulated heads: how much autofocus corrects, and how well its per-shot gains find
the moved shots, per ordering, acceleration and severity.

    python benchmarks/motion_autofocus.py --workdir <finished run> [--config config/bench.yaml]
        [--subjects 4] [--out results/bench/motion_autofocus.tsv]

Reads the ground truth of a finished run (``<workdir>/results/groundtruth``: any config's cohort;
the first ``--subjects`` subjects), acquires each subject again with the head moving (the config's
coils, noise, masks and accelerations; 8 shots; the levels below, sequential and interleaved:
:func:`mrichain.simulate.acquire.simulate_acquisition`), and per acquisition scores

- ``ssim_none`` / ``ssim_autofocus``: ``ssim_truth`` (the reconstruction stage's score: against the
  noise-free still head, inside the brain mask) of the zero-filled image as acquired and after
  :func:`mrichain.motion.autofocus.autofocus`;
- ``auc``: the per-shot gains as a detector of the moved shots, pooled over the subjects
  (``sklearn.metrics.roc_auc_score``; shot 0, the reference, left out);
- ``seconds``: autofocus per volume (8 slices searched, then the whole volume corrected).

Levels: ``mild`` (one shot moved, up to 1.5 degrees and 1 mm), ``severe`` (two shots, 5 degrees,
3 mm in-plane, 1 mm through-plane), ``shift`` (two shots, 3 mm in-plane only: what autofocus models
exactly). Prints a Markdown table; writes it as TSV to ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

LEVELS = {"mild": {"rotation_deg": 1.5, "translation_mm": 1.0, "movements": 1},
          "severe": {"rotation_deg": 5.0, "translation_mm": 3.0, "through_plane_mm": 1.0, "movements": 2},
          "shift": {"translation_mm": 3.0, "movements": 2}}


def main(argv=None) -> int:
    from sklearn.metrics import roc_auc_score

    from mrichain.io import load_image
    from mrichain.motion.autofocus import autofocus
    from mrichain.plan.layout import groundtruth
    from mrichain.recon.zerofilled import zerofilled
    from mrichain.scoring.metrics import ssim
    from mrichain.simulate.acquire import simulate_acquisition

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "config" / "bench.yaml"))
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--out", default="results/bench/motion_autofocus.tsv")
    args = p.parse_args(argv)

    cfg = yaml.safe_load(Path(args.config).read_text())
    gt = args.workdir / "results" / "groundtruth"
    subs = sorted(d.name for d in gt.iterdir() if d.is_dir() and d.name.startswith("sub-"))[: args.subjects]
    if not subs:
        sys.exit(f"{gt}: no subject folders")
    rows = []
    for ordering in ("interleaved", "sequential"):
        cfg["acquire"]["motion"] = {"shots": 8, "ordering": ordering, "levels": LEVELS}
        for acc, cf in zip(cfg["acquire"]["accelerations"], cfg["acquire"]["center_fractions"]):
            for level in LEVELS:
                per, scores, truth_shots = [], [], []
                for sub in subs:
                    kf, nf = simulate_acquisition(gt / sub, sub, cfg, float(acc), float(cf), motion_level=level)
                    truth = np.moveaxis(np.asarray(nf.dataobj, np.float32), -1, 0)
                    brain = np.moveaxis(np.asarray(load_image(groundtruth("brain_mask", sub, str(gt)))
                                                   .dataobj) > 0, -1, 0)
                    t0 = time.perf_counter()
                    image, gains = autofocus(kf.kspace, kf.mask, kf.motion_shot)
                    secs = time.perf_counter() - t0
                    none = zerofilled(kf.kspace, kf.mask)
                    per.append((ssim(truth, none, mask=brain), ssim(truth, image, mask=brain), secs))
                    scores += list(gains[1:])
                    truth_shots += list(np.any(kf.motion_poses[1:] != 0, axis=1))
                a = np.array(per)
                rows.append({"ordering": ordering, "acceleration": acc, "level": level, "n_subjects": len(subs),
                             "ssim_none": a[:, 0].mean(), "ssim_autofocus": a[:, 1].mean(),
                             "gain_min": (a[:, 1] - a[:, 0]).min(),
                             "auc": roc_auc_score(truth_shots, scores) if 0 < sum(truth_shots) < len(truth_shots)
                             else float("nan"),
                             "seconds": a[:, 2].mean()})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False, float_format="%.4f")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
