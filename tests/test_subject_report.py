"""Per-subject visual reports (mrichain.scoring.subject_report, reportlets): built from small synthetic
files, through the module and the command line; the page's manifests for the simulated cohort and
for BIDS subjects, built from the test config's plan."""
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from browser import chromium, severe_errors, wait_for  # noqa: F401  (chromium: the fixture "browser")

from mrichain import UserError
from mrichain.cli import main
from mrichain.io import InputImageError
from mrichain.scoring import reportlets
from mrichain.scoring.subject_report import (
    ReportError,
    build_page,
    load_manifest,
    manifest_inputs,
    read_prediction,
    real_manifest,
    real_targets,
    sim_manifest,
    sim_targets,
)

N = 24
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _save(data, path, affine=None):
    img = nib.Nifti1Image(np.asarray(data), np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
    nib.save(img, str(path))
    return str(path)


def write_subject(root: Path) -> dict:
    """24^3 volumes: a sphere 'brain' with three label shells (1 CSF outside, 2 GM, 3 WM inside),
    an image with tissue contrast, a noisy copy, a template, predictions, scores and cards."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    g = np.indices((N, N, N)).astype(np.float32) - (N - 1) / 2
    r = np.sqrt((g ** 2).sum(0))
    labels = np.zeros((N, N, N), np.uint8)
    labels[r < 10] = 1
    labels[r < 8] = 2
    labels[r < 5] = 3
    image = np.choose(labels, [0.0, 0.3, 0.6, 1.0]).astype(np.float32)
    noisy = image + rng.normal(0, 0.1, image.shape).astype(np.float32)
    f = {"image": _save(image, root / "sub-01_T1w.nii.gz"), "noisy": _save(noisy, root / "sub-01_desc-noisy_T1w.nii.gz"),
         "labels": _save(labels, root / "sub-01_dseg.nii.gz"),
         "mask": _save((labels > 0).astype(np.uint8), root / "sub-01_desc-brain_mask.nii.gz"),
         "template": _save(np.roll(image, 1, axis=0), root / "tpl_T1w.nii.gz")}
    (root / "pred_sfcn.tsv").write_text("subject\tsplit\tage\tpredicted_age\tpredicted_lower\tpredicted_upper\n"
                                        "sub-00\ttrain\t30\t31\t25\t37\nsub-01\ttest\t50\t47.5\t41\t55\n")
    (root / "pred_mean.tsv").write_text("subject\tsplit\tage\tpredicted_age\nsub-01\ttest\t50\t44\n")
    f["pred_sfcn"], f["pred_mean"] = str(root / "pred_sfcn.tsv"), str(root / "pred_mean.tsv")
    (root / "scores.tsv").write_text(
        "stage\tacq\tsubject\tsplit\tmethod\tmetric\tvalue\n"
        "denoise\tR4\tsub-01\ttest\tinput\tpsnr\t21.5\n"
        "denoise\tR4\tsub-01\ttest\tdncnn\tpsnr\t27.25\n"
        "denoise\tR4\tsub-01\ttest\tdncnn\tcheck_change_vs_input\t0.3\n"
        "denoise\tR4\tsub-02\ttest\tdncnn\tpsnr\t99\n")
    f["scores"] = str(root / "scores.tsv")
    (root / "denoise-dncnn.json").write_text(json.dumps(
        {"architecture": "DnCNN", "optimiser_steps": 1234, "samples_seen": 56789, "seed": 7, "beats_start": True,
         "validation_score": {"name": "val_psnr", "value": 27.1, "epoch": 3, "start": 20.0},
         "provenance": {"git_commit": "0123456789abcdef"}}))
    (root / "denoise-antsnlm.json").write_text(json.dumps(
        {"stage": "denoise", "method": "antsnlm", "acq": "R4", "split": "val", "subjects": ["sub-03"],
         "metric": "psnr", "higher_is_better": True, "grid": {"shrink_factor": [1, 2]},
         "chosen": {"shrink_factor": 2}, "chosen_score": 25.5, "seed": 7}))
    f["model_card"], f["tuning_card"] = str(root / "denoise-dncnn.json"), str(root / "denoise-antsnlm.json")
    return f


def manifest(f: dict, *, real: bool = False) -> dict:
    scores = None if real else {"tsv": f["scores"], "subject": "sub-01"}
    return {"subject": "sub-01", "source": "synthetic", "sections": [
        {"title": "Brain mask", "stage": "prepare", "scores": None, "no_reference": "no ground truth",
         "figures": [{"kind": "contours", "name": "sub-01_desc-brain_mask", "image": f["image"], "labels": f["mask"],
                      "label_names": {"1": "brain"}, "caption": "brain mask"}]},
        {"title": "Denoising", "stage": "denoise", "scores": scores,
         "figures": [{"kind": "compare", "name": "sub-01_desc-denoise_T1w", "caption": "before / after",
                      "panels": [{"title": "input", "image": f["noisy"]}, {"title": "dncnn", "image": f["image"]}]}],
         "methods": [{"method": "dncnn", "kind": "learned", "model_card": f["model_card"]},
                     {"method": "antsnlm", "kind": "classical", "tuning_card": f["tuning_card"],
                      "params": {"shrink_factor": 1}}]},
        {"title": "Segmentation", "stage": "segment", "scores": scores,
         "figures": [{"kind": "contours", "name": "sub-01_desc-atropos_dseg", "image": f["image"],
                      "labels": f["labels"]}]},
        {"title": "Registration", "stage": "register", "scores": scores,
         "figures": [{"kind": "edges", "name": "sub-01_space-template_desc-affine_T1w", "image": f["image"],
                      "template": f["template"], "template_labels": f["labels"]}]},
        {"title": "Brain age", "stage": "predict", "scores": None,
         "figures": [{"kind": "brain_age", "name": "sub-01_desc-brainage", "subject": "sub-01", "true_age": None,
                      "predictions": {"sfcn": f["pred_sfcn"], "mean": f["pred_mean"]}}]},
    ]}


class _Parser(HTMLParser):
    """Collects <img> sources and checks that every opened element is closed in order."""

    VOID = frozenset({"img", "meta", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack, self.imgs, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_subject(tmp_path_factory.mktemp("subject") / "in")


@pytest.fixture(scope="module")
def page(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("page")
    html = build_page(manifest(files), out / "sub-01.html", out / "sub-01" / "figures")
    return html


def test_page_lists_every_reportlet_as_a_valid_small_png(page):
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    parser = _Parser()
    parser.feed(text)
    assert not parser.errors and parser.stack == []
    names = ["sub-01_desc-brain_mask", "sub-01_desc-denoise_T1w", "sub-01_desc-atropos_dseg",
             "sub-01_space-template_desc-affine_T1w", "sub-01_desc-brainage"]
    assert [Path(i["src"]).name for i in parser.imgs] == [f"{n}.png" for n in names]
    for img in parser.imgs:
        assert img["src"].startswith("sub-01/figures/")  # relative, beside the page
        png = page.parent / img["src"]
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and 2_000 < len(data) < reportlets.MAX_PNG_BYTES
        w, h = int(img["width"]), int(img["height"])
        assert 150 <= w <= 1200 and 100 <= h <= 1200
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_page_shows_scores_provenance_and_brain_age(page):
    text = page.read_text()
    assert "27.25" in text and "21.5" in text  # sub-01's denoising scores
    assert "check_change" not in text and "99" not in re.findall(r"<td>(\d+)</td>", text)  # evidence rows, sub-02
    assert "1,234" in text and "56,789" in text and "val_psnr 27.1 at epoch 3" in text  # model card
    assert "{&quot;shrink_factor&quot;: 2}" in text and "25.5" in text  # tuning card's chosen values and score
    assert "47.5" in text and "41 – 55" in text and "50" in text  # prediction, interval, true age
    assert text.count("no reference") == 2  # brain mask and brain age sections


@pytest.mark.integration
def test_page_renders_in_chromium(browser, page):
    """The page opened from the file system: no console error, every figure loaded."""
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    wait_for(browser, lambda: browser.execute_script("return document.readyState") == "complete", what="the page")
    imgs = browser.find_elements(By.TAG_NAME, "img")
    assert len(imgs) == 5
    widths = [browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in imgs]
    assert all(w and w > 0 for w in widths), widths
    assert "Brain age" in browser.find_element(By.TAG_NAME, "body").text
    errors = severe_errors(browser)
    assert not errors, errors


def test_contours_are_drawn(files, tmp_path):
    """The contour reportlet differs from the same views drawn with an empty label map."""
    from PIL import Image

    empty = _save(np.zeros((N, N, N), np.uint8), tmp_path / "empty.nii.gz")
    a = reportlets.contours(files["image"], files["labels"], tmp_path / "a.png")
    b = reportlets.contours(files["image"], empty, tmp_path / "b.png")
    pa, pb = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (a, b))
    assert pa.shape == pb.shape
    # tissue contour colours appear in a, none of them in b (b is grey)
    colourful = lambda p: np.sum(np.ptp(p, axis=2) > 80)
    assert colourful(pa) > 200 and colourful(pb) < 20


def test_views_are_reoriented_to_ras(files, tmp_path):
    """A volume stored in LPS voxel order draws as the same figure as its RAS original."""
    img = nib.load(files["labels"])
    to_lps = np.array([[-1, 0, 0, N - 1], [0, -1, 0, N - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    lps = nib.Nifti1Image(np.asarray(img.dataobj)[::-1, ::-1, :], img.affine @ to_lps)
    nib.save(lps, str(tmp_path / "lps.nii.gz"))
    ras, _ = reportlets.load_volume(files["labels"])
    back, _ = reportlets.load_volume(tmp_path / "lps.nii.gz")
    assert np.array_equal(ras, back)


def test_real_scan_page_says_no_reference(files, tmp_path):
    m = manifest(files, real=True)
    for sec in m["sections"][1:]:  # one figure is enough here: the sections' text is what is checked
        sec["figures"] = []
    html = build_page(m, tmp_path / "sub-01.html", tmp_path / "sub-01" / "figures")
    assert html.read_text().count("no reference") == 5


def test_cli_builds_the_page_and_refuses_a_missing_file(files, tmp_path, capsys):
    m = tmp_path / "m.json"
    small = manifest(files)
    small["sections"] = small["sections"][:2]
    m.write_text(json.dumps(small))
    out = tmp_path / "out"
    assert main(["subject-report", "--manifest", str(m), "--out-html", str(out / "sub-01.html"),
                 "--out-figures", str(out / "sub-01" / "figures")]) == 0
    assert len(list((out / "sub-01" / "figures").glob("*.png"))) == 2
    broken = small
    missing = str(tmp_path / "gone" / "sub-01_T1w.nii.gz")
    broken["sections"][1]["figures"][0]["panels"][1]["image"] = missing
    m.write_text(json.dumps(broken))
    capsys.readouterr()
    assert main(["subject-report", "--manifest", str(m), "--out-html", str(tmp_path / "x.html"),
                 "--out-figures", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and missing in err[0] and str(m) in err[0]
    assert not (tmp_path / "x.html").exists()
    assert main(["subject-report", "--manifest", str(tmp_path / "nope.json"), "--out-html", str(tmp_path / "y.html"),
                 "--out-figures", str(tmp_path / "y")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_corrupt_or_absurd_inputs_are_named(files, tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not a nifti")
    with pytest.raises(InputImageError, match=re.escape(str(bad))):
        reportlets.contours(files["image"], bad, tmp_path / "c.png")
    # a header that claims 4096 x 4096 x 4096 voxels is refused before any voxel is read
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 4096))
    hdr.set_data_dtype(np.float32)
    huge = tmp_path / "huge.nii"
    huge.write_bytes(hdr.binaryblock + b"\x00" * 4 + b"\x00" * 64)
    with pytest.raises(InputImageError, match=r"huge\.nii.*4096"):
        reportlets.load_volume(huge)
    other = _save(np.zeros((N, N, N - 2), np.float32), tmp_path / "other.nii.gz")
    with pytest.raises(InputImageError, match="other.nii.gz"):
        reportlets.compare([("a", files["image"]), ("b", other)], tmp_path / "d.png")
    m = manifest(files)
    m["sections"][2]["figures"][0]["labels"] = str(bad)
    with pytest.raises(UserError, match=re.escape(str(bad))):
        build_page(m, tmp_path / "p.html", tmp_path / "p")
    with pytest.raises(ReportError, match="pred_mean.tsv.*sub-09"):
        read_prediction(files["pred_mean"], "sub-09")
    (tmp_path / "m.json").write_text(json.dumps({"subject": "sub-01", "sections": [{"title": "x", "figures": [
        {"kind": "mosaic", "name": "a"}]}]}))
    with pytest.raises(ReportError, match=r"m\.json.*kind must be one of"):
        load_manifest(tmp_path / "m.json")


def test_manifests_of_the_test_config_name_every_input():
    """The simulated cohort's pages (one per test subject) and a BIDS subject's page, as the rules
    build them: every file named in the layout, each section as documented."""
    from dag import TEST_CONFIG

    from mrichain.plan.config import load_config
    from mrichain.plan.manifests import Plan
    from mrichain.realdata.plan import RealInput, RealPlan

    cfg = load_config(TEST_CONFIG)
    plan = Plan(cfg)
    assert sim_targets(plan) == [f"results/reports/{s}.html" for s in plan.test_subjects]
    sub = plan.test_subjects[0]
    m = sim_manifest(plan, sub)
    assert [s["stage"] for s in m["sections"]] == ["reconstruct", "denoise", "segment", "register", "predict"]
    files = manifest_inputs(m)
    assert "results/metrics/acq-R4_stage-register.tsv" in files and "models/denoise-dncnn.json" in files
    assert f"results/register/{sub}/{sub}_acq-R4_space-MNI152NLin2009aSym_desc-voxelmorph_T1w.nii.gz" in files
    assert "results/predict/acq-R4_desc-sfcn_predictions.tsv" in files
    assert f"results/groundtruth/{sub}/{sub}_acq-R4_desc-noisefree_T1w.nii.gz" in files
    assert all(f.startswith(("results/", "models/")) for f in files)

    cfg["input"] = {"kind": "bids", "bids_dir": "/data/study", "output_dir": "out/deriv"}
    inputs = [RealInput("sub-01_ses-1", "/data/study/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
                        {"subject": "01", "session": "1"}, age=41.0),
              RealInput("sub-01_ses-2", "/data/study/sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
                        {"subject": "01", "session": "2"}),
              RealInput("sub-02", "/data/study/sub-02/anat/sub-02_T1w.nii.gz", {"subject": "02"})]
    real = RealPlan(cfg, Plan(cfg), inputs)
    assert real_targets(real) == ["out/deriv/sub-01.html", "out/deriv/sub-02.html", "out/deriv/.bidsignore"]
    rm = real_manifest(real, "01")
    assert [s["title"] for s in rm["sections"][:4]] == ["sub-01_ses-1: brain mask", "sub-01_ses-1: denoising",
                                                       "sub-01_ses-1: segmentation", "sub-01_ses-1: brain age"]
    assert len(rm["sections"]) == 8 and all(s["scores"] is None for s in rm["sections"])
    assert "results/realdata/brainmask/sub-01_ses-2/sub-01_ses-2_brainmask.nii.gz" in manifest_inputs(rm)
