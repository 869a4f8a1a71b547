"""The run report's first page (mrichain.scoring.overview), from the aggregate tables of synthetic
per-subject scores: the headline row per stage, intervals and "beats" only where n supports them,
the error-budget figure embedded whole."""
import base64

import numpy as np
import pandas as pd

from mrichain.scoring.aggregate import comparison, differences, summarise
from mrichain.scoring.overview import headline, overview_rst, write_overview


def _scores(n: int, unet_dice: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sub = f"sub-{i:03d}"
        for method, mean in (("kmeans", 0.60), ("atropos", 0.78), ("unet", unet_dice)):
            rows.append(dict(stage="segment", acq="R4", subject=sub, split="test", method=method,
                             metric="dice_mean", value=mean + 0.01 * rng.normal()))
        for method, mean in (("zerofilled", 0.82), ("cs", 0.84), ("varnet", 0.86)):
            rows.append(dict(stage="reconstruct", acq="R4", subject=sub, split="test", method=method,
                             metric="ssim_truth", value=mean + 0.005 * rng.normal()))
    return pd.DataFrame(rows)


def _tables(n, unet_dice=0.85):
    scores = _scores(n, unet_dice)
    diffs = differences(scores, seed=0)
    return comparison(summarise(scores, 0), "R4", diffs), diffs


def test_headline_has_one_row_per_stage_with_each_kind_and_the_paired_difference():
    comp, diffs = _tables(20)
    table = headline(comp, diffs, "R4").set_index("stage")
    assert list(table.index) == ["reconstruct", "segment"]  # declaration order
    seg = table.loc["segment"]
    assert seg["metric"] == "dice_mean" and seg["n_test"] == 20
    assert seg["floor"].startswith("kmeans 0.6") and seg["classical"].startswith("atropos 0.7")
    assert seg["learned"].startswith("unet 0.8") and "[" in seg["learned"]  # an interval at n = 20
    assert "unet − atropos" in seg["learned_vs_classical"] and "(beats)" in seg["learned_vs_classical"]


def test_small_n_prints_no_interval_and_no_beats_and_says_so():
    comp, diffs = _tables(2)
    table = headline(comp, diffs, "R4").set_index("stage")
    assert "[" not in table.loc["segment", "learned"] and "(beats)" not in table.loc["segment", "learned_vs_classical"]
    assert "2 test subjects: a demonstration, not evidence" in overview_rst(comp, diffs, "R4")


def test_a_learned_method_worse_than_classical_does_not_beat_it():
    comp, diffs = _tables(20, unet_dice=0.70)
    seg = headline(comp, diffs, "R4").set_index("stage").loc["segment"]
    assert "(beats)" not in seg["learned_vs_classical"] and "unet − atropos -0.0" in seg["learned_vs_classical"]


def test_overview_embeds_the_figure_and_is_valid_rst(tmp_path):
    from docutils.core import publish_parts
    from PIL import Image

    comp, diffs = _tables(12)
    comp.to_csv(tmp_path / "comparison.tsv", sep="\t", index=False)
    diffs.to_csv(tmp_path / "differences.tsv", sep="\t", index=False)
    noise = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)  # > 10,000 base64 characters
    Image.fromarray(noise).save(tmp_path / "budget.png")
    out = tmp_path / "report" / "overview.rst"
    write_overview(tmp_path / "comparison.tsv", tmp_path / "differences.tsv", "R4", out, tmp_path / "budget.png")
    html = publish_parts(out.read_text(), writer="html", settings_overrides={"report_level": 2,
                                                                                 "halt_level": 2})["html_body"]
    assert "<table" in html and "atropos" in html and "System Message" not in html
    src = html.split('<img ')[1].split('src="')[1].split('"')[0]
    assert src == "data:image/png;base64," + base64.b64encode((tmp_path / "budget.png").read_bytes()).decode()
