"""BIDS discovery (pybids) and BIDS derivatives naming.

On the dataset of tests/bids_dataset.py at its smallest (2 subjects simulated and written at 4 mm,
stored sagittally 'PIL'; sub-01 with two sessions; participants.tsv; a ground-truth derivatives
folder whose desc-brain_mask files serve as user masks), and on small hand-made trees (empty
NIfTI files: discovery reads names, not images) for the cases the generator does not make.
"""
from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import pytest

from bids_dataset import write_bids_dataset
from mrichain import UserError
from mrichain.plan.config import load_config
from mrichain.realdata import bids as bd
from mrichain.realdata import derivatives as dv

from dag import ROOT


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids") / "ds"
    records = write_bids_dataset(root, load_config(ROOT / "config" / "test.yaml"), n_subjects=2,
                                 simulate_mm=4.0, voxel_mm=4.0)
    return root, records


def _tree(root: Path, files: list[str], participants: str | None = None) -> Path:
    """A BIDS tree of empty files under ``root`` with a dataset_description.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    if participants is not None:
        (root / "participants.tsv").write_text(participants)
    return root


# ------------------------------------------------------------------ discovery


def test_discovery_finds_each_image(dataset):
    root, records = dataset
    items = bd.discover_t1w(root)
    assert [it.key for it in items] == ["sub-01_ses-01", "sub-01_ses-02", "sub-02"]
    by_path = {Path(r["T1w"]).resolve(): r for r in records}
    assert [it.path for it in items] == sorted(by_path)
    assert [it.entities for it in items] == [{"subject": "01", "session": "01"}, {"subject": "01", "session": "02"},
                                             {"subject": "02"}]
    assert [it.session for it in items] == ["ses-01", "ses-02", None]
    assert [it.subject for it in items] == ["sub-01", "sub-01", "sub-02"]
    for it in items:  # participants.tsv has the ages to 2 decimals
        assert it.age == pytest.approx(by_path[it.path]["age"], abs=0.006)
        assert it.mask is None
        assert bd.KEY_RE.fullmatch(it.key)
        assert dv.entities_from_key(it.key) == it.entities
    assert items[0].age == items[1].age != items[2].age
    assert bd.discover_t1w(root) == items  # deterministic


def test_user_masks_from_derivatives(dataset):
    root, records = dataset
    deriv = root / "derivatives" / "groundtruth"
    items = bd.discover_t1w(root, derivatives_dirs=[deriv])
    want = {Path(r["T1w"]).resolve(): Path(r["brain_mask"]).resolve() for r in records}
    assert {it.path: it.mask for it in items} == want
    # the first folder with a mask wins; a folder without one adds nothing
    other = _tree(root.parent / "other_deriv", ["sub-02/anat/sub-02_desc-brain_mask.nii.gz",
                                                "sub-01/ses-01/anat/sub-01_ses-01_space-MNI_desc-brain_mask.nii.gz"])
    items = bd.discover_t1w(root, derivatives_dirs=[other, deriv])
    assert items[2].mask == (other / "sub-02/anat/sub-02_desc-brain_mask.nii.gz").resolve()
    assert items[0].mask == want[items[0].path]  # the space-MNI mask is on another grid: not used
    with pytest.raises(UserError, match="derivatives folder .*nowhere.* does not exist"):
        bd.discover_t1w(root, derivatives_dirs=[root / "nowhere"])


def test_participant_filter(dataset):
    root, _ = dataset
    assert [it.key for it in bd.discover_t1w(root, participant_label="01")] == ["sub-01_ses-01", "sub-01_ses-02"]
    assert [it.key for it in bd.discover_t1w(root, participant_label=["sub-02"])] == ["sub-02"]
    with pytest.raises(UserError) as e:
        bd.discover_t1w(root, participant_label=["01", "07"])
    msg = str(e.value)
    assert "sub-07" in msg and "sub-01, sub-02" in msg and str(root) in msg and "sub-01 " not in msg


def test_keys_runs_order_and_misnamed(tmp_path):
    root = _tree(tmp_path / "ds", [
        "sub-03/anat/sub-03_acq-mprage_run-2_T1w.nii.gz",
        "sub-03/anat/sub-03_acq-mprage_run-10_T1w.nii.gz",
        "sub-03/anat/sub-03_acq-fast_T1w.nii",
        "sub-03/anat/sub-03_T2w.nii.gz",
        "sub-03/anat/sub-03_foo_T1w.nii.gz",  # not BIDS: left out, with a warning
    ], participants="participant_id\tage\tsex\nsub-03\tn/a\tF\n")
    with pytest.warns(UserWarning, match="sub-03_foo_T1w"):
        items = bd.discover_t1w(root)
    assert [it.key for it in items] == ["sub-03_acq-fast", "sub-03_acq-mprage_run-10", "sub-03_acq-mprage_run-2"]
    assert items[1].entities == {"subject": "03", "acquisition": "mprage", "run": "10"}
    assert all(it.age is None for it in items)
    # the same image twice (.nii and .nii.gz): one key, refused
    (root / "sub-03/anat/sub-03_acq-fast_T1w.nii.gz").write_bytes(b"")
    with pytest.raises(UserError, match="two files for the image sub-03_acq-fast"), pytest.warns(UserWarning):
        bd.discover_t1w(root)


@pytest.mark.parametrize("case", ["missing", "file", "no_description", "bad_json", "no_t1w", "no_t1w_for_label"])
def test_bad_dataset(tmp_path, case):
    root = tmp_path / "ds"
    label = None
    if case == "file":
        root.write_text("x")
    elif case == "no_description":
        _tree(root, ["sub-01/anat/sub-01_T1w.nii.gz"])
        (root / "dataset_description.json").unlink()
    elif case == "bad_json":
        _tree(root, ["sub-01/anat/sub-01_T1w.nii.gz"])
        (root / "dataset_description.json").write_text("{not json")
    elif case == "no_t1w":
        _tree(root, ["sub-01/anat/sub-01_T2w.nii.gz"])
    elif case == "no_t1w_for_label":
        _tree(root, ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T2w.nii.gz"])
        label = "02"
    with pytest.raises(UserError) as e:
        bd.discover_t1w(root, participant_label=label)
    msg = str(e.value)
    assert str(root) in msg
    expect = {"missing": "does not exist", "file": "not a directory", "no_description": "dataset_description.json",
              "bad_json": "not a valid json", "no_t1w": "no T1w image", "no_t1w_for_label": "no T1w image for sub-02"}
    assert expect[case] in msg
    assert "\n" not in msg  # one line (mrichain.cli prints it as is)


@pytest.mark.parametrize("row, line_part", [("sub-02\tforty\n", "'forty'"), ("sub-02\t-3\n", "'-3'"),
                                           ("sub-02\n", "1 columns")])
def test_bad_participants_tsv(tmp_path, row, line_part):
    root = _tree(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii.gz"],
                 participants="participant_id\tage\nsub-01\t30\n" + row)
    with pytest.raises(UserError) as e:
        bd.discover_t1w(root)
    msg = str(e.value)
    assert str(root / "participants.tsv") in msg and "line 3" in msg and line_part in msg
    # the broken row belongs to sub-02: sub-01 alone is still discovered, with its age
    assert [(it.key, it.age) for it in bd.discover_t1w(root, participant_label="01")] == [("sub-01", 30.0)]


def test_participants_tsv_optional_and_na(tmp_path):
    root = _tree(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii.gz"])
    assert [it.age for it in bd.discover_t1w(root)] == [None, None]
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\tn/a\nsub-02\t41.5\n")
    assert [it.age for it in bd.discover_t1w(root)] == [None, 41.5]
    (root / "participants.tsv").write_text("age\tsex\n30\tM\n")
    with pytest.raises(UserError, match="participants.tsv has no participant_id"):
        bd.discover_t1w(root)


# ------------------------------------------------------------------ manifest


def test_manifest_round_trip(dataset, tmp_path):
    root, _ = dataset
    items = bd.discover_t1w(root, derivatives_dirs=[root / "derivatives" / "groundtruth"])
    path = bd.write_manifest(items, tmp_path / "m" / "bids.json")
    rows = json.loads(path.read_text())
    assert isinstance(rows, list) and [r["key"] for r in rows] == [it.key for it in items]
    assert set(rows[0]) == set(bd.MANIFEST_FIELDS)
    assert bd.read_manifest(path) == items
    os.utime(path, (1_000_000, 1_000_000))
    bd.write_manifest(list(reversed(items)), path)  # same cohort: file untouched
    assert path.stat().st_mtime == 1_000_000
    bd.write_manifest(items[:1], path)
    assert bd.read_manifest(path) == items[:1] and path.stat().st_mtime != 1_000_000
    (tmp_path / "bad.json").write_text('{"key": 1}')
    with pytest.raises(UserError, match="bad.json"):
        bd.read_manifest(tmp_path / "bad.json")
    with pytest.raises(UserError, match="missing.json"):
        bd.read_manifest(tmp_path / "missing.json")


# ------------------------------------------------------------------ derivatives


def test_entity_order_from_schema():
    order = list(dv.entity_order())
    used = ["subject", "session", "acquisition", "ceagent", "reconstruction", "run", "space", "description"]
    assert [order.index(e) for e in used] == sorted(order.index(e) for e in used)
    assert dv.entity_order()["acquisition"] == "acq" and order[-1] == "description"


def test_derivative_path():
    ents = {"run": "1", "acq": "mprage", "session": "ses-02", "subject": "01"}  # any order, short or long keys
    p = dv.derivative_path("d", ents, space="MNI152NLin2009aSym", desc="unet", suffix="dseg", extension=".nii.gz")
    assert p == Path("d/sub-01/ses-02/anat/"
                     "sub-01_ses-02_acq-mprage_run-1_space-MNI152NLin2009aSym_desc-unet_dseg.nii.gz")
    scans = dv.derivative_path("d", {"subject": "01"}, suffix="scans", extension=".tsv")
    assert scans == Path("d/sub-01/sub-01_scans.tsv")
    assert dv.derivative_path("d", {}, suffix="dseg", extension=".tsv") == Path("d/dseg.tsv")
    for bad in [dict(desc="brain-mask"), dict(desc="a_b"), dict(desc="a+b"), dict(run="x"), dict(foo="1"),
                dict(suffix="T1w_x"), dict(extension="nii.gz"), dict(description="other")]:
        kw = {"suffix": "T1w", "extension": ".nii.gz", "desc": "preproc"}
        ents = {"subject": "01"}
        for k, v in bad.items():
            if k in ("run", "foo", "description"):
                ents[k] = v
            else:
                kw[k] = v
        with pytest.raises(ValueError):
            dv.derivative_path("d", ents, **kw)


def _write_derivatives(root: Path, items, fastmri_files, source: Path) -> list[Path]:
    """Every output name of OUTPUTS for ``items`` and fastMRI files, as empty files, plus the
    dataset-level files and a brain-age table; returns the image paths."""
    dv.write_dataset_description(root, source_dir=source)
    dv.write_dseg_tsv(root)
    cols = dv.scans_columns(["mean", "linear", "sfcn"], interval_methods=["sfcn"], motion=True)
    dv.write_scans_json(root, cols)
    made = []
    for it in items:
        for key, fill in [("preproc", {}), ("brain_mask", {}), ("denoise", {"method": "antsnlm"}),
                          ("denoise", {"method": "dncnn"}), ("segment", {"method": "unet"}),
                          ("segment", {"method": "atropos"})]:
            p = dv.output_path(root, key, it.entities, **fill)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
            made.append(p)
        dv.write_sidecar(dv.output_path(root, "brain_mask", it.entities), {"Type": "Brain"})
        table = dv.output_path(root, "brainage", it.entities)
        pre = dv.output_path(root, "preproc", it.entities)
        dv.write_scans_table(table, [{"filename": pre.relative_to(table.parent).as_posix(), "age": it.age,
                                      "brainage_mean": 50.0, "brainage_sfcn": float("nan"), "motion_efc": 0.61,
                                      "motion_flagged": "false"}], cols)
    for f in fastmri_files:
        for acc in (1, 4):
            ents = dv.fastmri_entities(f, acc)
            for p in (dv.output_path(root, "recon", ents, method="cs", suffix=dv.fastmri_suffix("AXT2")),
                      dv.output_path(root, "recon_denoise", ents, recon="cs", method="dncnn", suffix="FLAIR")):
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"")
                made.append(p)
    return made


def test_derivative_names_pass_the_validator(dataset, tmp_path):
    from bids import BIDSLayout
    from bids_validator import BIDSValidator

    root_in, _ = dataset
    items = bd.discover_t1w(root_in)
    out = tmp_path / "derivatives" / "mrichain"
    fastmri = ["in/file_brain_AXT2_200_2000019.h5", "in/file_brain_AXFLAIR_201_6002.h5"]
    made = _write_derivatives(out, items, fastmri, root_in)
    assert len(made) == 6 * 3 + 2 * 2 * 2
    assert dv.check_names(out) == []
    # the bids-validator package alone knows raw names only: it refuses every derivative name
    assert BIDSValidator().is_bids("/sub-01/anat/sub-01_T1w.nii.gz")
    assert not BIDSValidator().is_bids("/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz")
    # deliberately bad names are reported, and only they
    bad = ["sub-01/ses-01/anat/sub-01_ses-01_desc-brain-mask_mask.nii.gz",  # '-' inside a label
           "sub-filebrainAXT22002000019/anat/sub-filebrainAXT22002000019_rec-cs_acq-R4_T2w.nii.gz",  # order
           "sub-02/anat/sub-01_desc-preproc_T1w.nii.gz",  # subject of the name is not the folder's
           "sub-02/anat/sub-02_desc-sfcn_brainage.tsv",  # no such suffix
           "sub-02/anat/sub-02_desc-preproc_T1w.nii.gz.bak"]
    for b in bad:
        (out / b).write_bytes(b"")
    assert dv.check_names(out) == sorted(bad)
    for b in bad:
        (out / b).unlink()
    # what .bidsignore lists is passed over: a file glob, a folder (and all under it), a folder glob
    extra = ["sub-01.html", "group/cohort_comparison.tsv", "sub-01/figures/sub-01_desc-brain_mask.png",
             "work/results/x.nii.gz"]
    for e in extra:
        (out / e).parent.mkdir(parents=True, exist_ok=True)
        (out / e).write_bytes(b"")
    assert sorted(dv.check_names(out)) == sorted(extra)
    (out / ".bidsignore").write_text("sub-*.html\ngroup/\nsub-*/figures/\n")
    assert dv.check_names(out) == ["work/results/x.nii.gz"]
    (out / "work/results/x.nii.gz").unlink()
    # pybids indexes the tree as a valid derivatives dataset (it checks GeneratedBy) with our entities
    layout = BIDSLayout(out, validate=True, is_derivative=True)
    got = layout.get(subject="01", session="02", desc="unet", suffix="dseg", return_type="filename")
    assert [Path(g) for g in got] == [dv.output_path(out, "segment", items[1].entities, method="unet")]
    table = (out / "sub-01/ses-01/sub-01_ses-01_scans.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["filename", "age", "brainage_mean", "brainage_linear", "brainage_sfcn",
                                    "brainage_sfcn_lower", "brainage_sfcn_upper", "motion_efc", "motion_flagged"]
    row = table[1].split("\t")
    assert row[0] == "anat/sub-01_ses-01_desc-preproc_T1w.nii.gz" and (out / "sub-01/ses-01" / row[0]).exists()
    assert row[2:] == ["50", "n/a", "n/a", "n/a", "n/a", "0.61", "false"] and float(row[1]) == items[0].age
    lut = (out / "dseg.tsv").read_text().splitlines()
    assert lut == ["index\tname\tabbreviation", "1\tCerebrospinal fluid\tCSF", "2\tGray matter\tGM",
                   "3\tWhite matter\tWM"]


def test_dataset_description(dataset, tmp_path):
    root_in, _ = dataset
    d = dv.dataset_description(source_dir=root_in)
    assert d["BIDSVersion"] == dv.BIDS_VERSION == "1.9.0"
    assert d["DatasetType"] == "derivative" and d["Name"]
    assert d["GeneratedBy"][0]["Name"] == "mrichain"
    assert d["GeneratedBy"][0]["Version"] == metadata.version("mrichain")
    assert d["SourceDatasets"] == [{"URL": root_in.resolve().as_uri()}]
    assert "SourceDatasets" not in dv.dataset_description("9.9")
    assert dv.dataset_description("9.9", code_url="https://x")["GeneratedBy"][0] == {
        "Name": "mrichain", "Version": "9.9", "CodeURL": "https://x",
        "Description": dv.dataset_description("9.9")["GeneratedBy"][0]["Description"]}
    # a source with a DOI and a version: both carried
    src = _tree(tmp_path / "src", [])
    (src / "dataset_description.json").write_text(json.dumps(
        {"Name": "s", "BIDSVersion": "1.9.0", "DatasetDOI": "doi:10.1/x", "DatasetVersion": "2"}))
    assert dv.dataset_description("1", src)["SourceDatasets"] == [{"URL": src.resolve().as_uri(),
                                                                   "DOI": "doi:10.1/x", "Version": "2"}]
    path = dv.write_dataset_description(tmp_path / "out", "1", src)
    assert json.loads(path.read_text()) == dv.dataset_description("1", src)


def test_fastmri_labels(tmp_path):
    files = [tmp_path / "file_brain_AXT2_200_2000019.h5", tmp_path / "file_brain_AXT1POST_201_6002.h5"]
    assert list(dv.fastmri_subjects(files)) == ["filebrainAXT1POST2016002", "filebrainAXT22002000019"]
    with pytest.raises(UserError, match="same BIDS subject label sub-filebrainAXT22002000019"):
        dv.fastmri_subjects(files + [tmp_path / "file-brain-AXT2-200-2000019.h5"])
    assert dv.fastmri_suffix("AXFLAIR") == "FLAIR" and dv.fastmri_suffix("CORPD_FBK") == "PDw"
    with pytest.raises(UserError, match="x.h5.*'SAGT1'"):
        dv.fastmri_suffix("SAGT1", tmp_path / "x.h5")
