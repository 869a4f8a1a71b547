"""benchmarks/run_bench.py's targets table: "beats" is the paired interval above zero, and a
learned method the "did it learn" check flagged meets no target."""
import importlib.util

import pandas as pd

from dag import ROOT

_spec = importlib.util.spec_from_file_location("run_bench", ROOT / "benchmarks" / "run_bench.py")
run_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_bench)


def _diff(acq, stage, metric, a, b, mean, low, high):
    return dict(acq=acq, stage=stage, metric=metric, method_a=a, method_b=b, n=20, mean_difference=mean,
                ci_low=low, ci_high=high)


def test_flagged_learned_methods_meet_nothing_and_intervals_decide():
    by_acq = {
        "R4": {"reconstruct": {"zerofilled": {"ssim_truth": 0.83}, "cs": {"ssim_truth": 0.84},
                               "varnet": {"ssim_truth": 0.86, "learned": True}},
               "segment": {"atropos": {"dice_mean": 0.78}, "unet": {"dice_mean": 0.80, "learned": False}}},
        "R1": {"predict": {"mean": {"mae_years": 17.0}, "linear": {"mae_years": 6.0},
                           "mlp": {"mae_years": 6.4, "learned": True}, "sfcn": {"mae_years": 5.0, "learned": False}}},
    }
    diffs = pd.DataFrame([
        _diff("R4", "reconstruct", "ssim_truth", "cs", "zerofilled", 0.007, -0.001, 0.012),
        _diff("R4", "reconstruct", "ssim_truth", "varnet", "cs", 0.02, 0.01, 0.03),
        _diff("R4", "segment", "dice_mean", "unet", "atropos", 0.02, 0.01, 0.03),
        _diff("R1", "predict", "mae_years", "mlp", "linear", 0.4, -0.2, 0.9),
    ])
    t = run_bench.targets(by_acq, diffs).set_index("target")
    assert not t.loc["reconstruct R4: cs beats zerofilled on ssim_truth", "met"]  # interval touches zero
    assert t.loc["reconstruct R4: varnet beats cs on ssim_truth", "met"]
    unet = t.loc["segment R4: unet beats atropos on dice_mean"]
    assert not unet.met and "did not learn" in unet.note  # its interval is above zero, but it is flagged
    # the flagged SFCN's lower MAE does not make it the best learned age model
    within = t.loc[[i for i in t.index if i.startswith("predict R1: best learned age model (mlp) MAE within")][0]]
    assert within.met and within.measured == 6.4


def test_markdown_table_has_a_row_per_target_with_interval_and_verdict():
    table = pd.DataFrame([
        {"target": "a beats b", "measured": 0.86, "reference": 0.84, "difference": 0.0123, "diff_ci_low": 0.007,
         "diff_ci_high": 0.018, "n_test": 20, "met": True, "note": ""},
        {"target": "speed", "measured": 0.81, "reference": float("nan"), "difference": float("nan"),
         "diff_ci_low": float("nan"), "diff_ci_high": float("nan"), "n_test": 0, "met": False, "note": "64x"},
    ])
    lines = run_bench.markdown(table).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| target |")
    assert lines[2] == "| a beats b | 0.86 | 0.84 | +0.0123 [+0.007, +0.018] | 20 | yes |  |"
    assert lines[3] == "| speed | 0.81 |  |  |  | no | 64x |"
