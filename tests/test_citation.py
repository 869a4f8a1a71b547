"""The run's methods text and references (mrichain.citation, `mrichain citation`): every declared
method cites something that has a BibTeX entry, the text states what the cards say and the
installed versions, the .bib holds exactly what the text cites, a bad card is a one-line error."""
import json
import re
import subprocess
import sys
from importlib import metadata
from types import SimpleNamespace

import pytest
import yaml
from dag import ROOT

from mrichain import citation
from mrichain.cli import main
from mrichain.plan import layout
from mrichain.plan.config import load_schema
from mrichain.plan.manifests import Plan
from mrichain.plan.stages import ALL_STAGES

CITED = re.compile(r"(?<!`)\[(@[^\]]+)\]")  # not the `[@key]` of the header


def cited_keys(md: str) -> set[str]:
    return {k.strip().lstrip("@") for group in CITED.findall(md) for k in group.split(";")}


def bib_keys(bib: str) -> list[str]:
    return [key for _, key in citation.BIB_ENTRY.findall(bib)]


def installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


# ---- the declaration and the entries -------------------------------------------------------------

def test_every_declared_method_cites_an_entry_and_has_a_description():
    for s in ALL_STAGES:
        for key in s.cite:
            assert key in citation.BIBTEX, f"stage {s.name} cites {key!r}, which has no BibTeX entry"
        for m in s.methods:
            assert m.cite, f"{s.name}-{m.name} cites nothing"
            assert len(set(m.cite)) == len(m.cite), f"{s.name}-{m.name} cites a key twice"
            for key in m.cite:
                assert key in citation.BIBTEX, f"{s.name}-{m.name} cites {key!r}, which has no BibTeX entry"
            assert (s.name, m.name) in citation.DESCRIPTIONS, f"{s.name}-{m.name} has no description"
    declared = {(s.name, m.name) for s in ALL_STAGES for m in s.methods}
    assert set(citation.DESCRIPTIONS) <= declared, "descriptions of methods no stage declares"
    for dist, (_, key) in citation.LIBRARIES.items():
        assert key is None or key in citation.BIBTEX, dist


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


@pytest.mark.parametrize("key", sorted(citation.BIBTEX))
def test_bibtex_entry_parses(key):
    entry = citation.BIBTEX[key]
    heads = citation.BIB_ENTRY.findall(entry)
    assert len(heads) == 1 and entry.startswith("@"), f"{key}: one entry per key"
    kind, entry_key = heads[0]
    assert entry_key == key
    assert kind in ("article", "inproceedings", "misc", "book", "incollection")
    assert _balanced(entry) and entry.rstrip().endswith("}")
    fields = dict(re.findall(r"^\s+(\w+) = (.*?),?$", entry, re.MULTILINE))
    assert "title" in fields and "author" in fields, key
    # a software record with a versioned concept DOI states its version instead of a year
    assert "year" in fields or key in citation._VERSIONED_ENTRIES, key
    if "year" in fields:
        assert re.fullmatch(r"\{(19|20)\d\d\}", fields["year"]), fields["year"]
    if "doi" in fields:
        assert re.fullmatch(r"\{10\.\d{4,5}/\S+\}", fields["doi"]), fields["doi"]


def test_cite_is_not_in_the_config_schema():
    assert '"cite"' not in json.dumps(load_schema())


def test_import_is_light():
    code = "import sys, mrichain.citation; assert 'numpy' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_citation_paths():
    assert layout.citation() == "results/logs/CITATION.md"
    assert layout.citation(".bib", root="derivatives/mrichain/logs") == "derivatives/mrichain/logs/CITATION.bib"


# ---- the text from a run's manifest ---------------------------------------------------------------

STEPS = 1234
SAMPLES = 9872


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load(open(ROOT / "config" / "config.yaml"))


def fake_run(cfg, tmp_path, real=None) -> dict:
    """The manifest of the default config's run with its model and tuning cards faked under tmp_path."""
    man = citation.citation_manifest(Plan(cfg), real)
    for name, entry in man["stages"].items():
        for m in entry["models"]:
            path = tmp_path / f"{name}-{m}.json"
            path.write_text(json.dumps({
                "training": {"epochs": 50, "lr": 0.0003, "batch_size": 2, "optimiser": "adamw", "schedule": "step",
                             "weight_decay": 0.0},
                "validation_score": {"name": "score", "value": 0.8765, "epoch": 31, "start": 0.5},
                "beats_start": m != "mlp", "epochs_run": 41, "optimiser_steps": STEPS, "samples_seen": SAMPLES,
                "n_parameters": 4321, "device": "cpu", "seed": 7,
                "provenance": {"packages": {"torch": "0.0.1-trained"}}}))
            entry["models"][m] = str(path)
        for m in entry["tuning"]:
            grid = cfg[name]["tune"][m]
            path = tmp_path / f"tuning-{name}-{m}.json"
            path.write_text(json.dumps({
                "stage": name, "method": m, "acq": "R4", "subjects": ["sub-001", "sub-002", "sub-003"],
                "metric": "primary", "higher_is_better": True, "grid": grid,
                "chosen": {k: v[-1] for k, v in grid.items()}, "chosen_score": 0.4321,
                "fixed_params": cfg[name].get("params", {}).get(m, {})}))
            entry["tuning"][m] = str(path)
    return man


def write(man, tmp_path, name="manifest.json"):
    path = tmp_path / name
    path.write_text(json.dumps(man))
    return path


def test_methods_text_states_methods_versions_tuning_and_training(cfg, tmp_path):
    man = fake_run(cfg, tmp_path)
    manifest = write(man, tmp_path)
    md, bib = tmp_path / "out" / "CITATION.md", tmp_path / "out" / "CITATION.bib"
    assert main(["citation", "--manifest", str(manifest), "--out-md", str(md), "--out-bib", str(bib)]) == 0
    text = md.read_text()

    for s in ALL_STAGES:
        ran = man["stages"].get(s.name, {}).get("methods", [])
        for m in s.methods:
            if m.name not in ran:
                continue
            assert f"`{m.name}`" in text, f"{s.name}-{m.name} not named"
            for key in m.cite:
                assert f"@{key}" in text
                dist = next((d for d, (_, k) in citation.LIBRARIES.items() if k == key), None)
                if dist:
                    assert f"{citation.LIBRARIES[dist][0]} {installed(dist)}" in text, dist
    for dist, (name, _) in citation.LIBRARIES.items():
        assert f"| {name} | {installed(dist)} |" in text

    # the tuning cards' chosen values, the model cards' budgets and selections
    for name, entry in man["stages"].items():
        for m in entry["tuning"]:
            for k, values in cfg[name]["tune"][m].items():
                assert f"{k} = {citation._fmt(values[-1])}" in text, (name, m, k)
    assert text.count(f"{STEPS} optimiser steps") == sum(len(e["models"]) for e in man["stages"].values())
    assert f"{SAMPLES} samples seen" in text and "41 of 50 planned epochs" in text
    assert "epoch 31 were kept" in text and "0.8765" in text and "learning rate 0.0003 (step schedule)" in text
    assert "did not learn" in text  # the card with beats_start false
    assert "PyTorch 0.0.1-trained" in text  # trained under another version than the text states
    assert f"seed {cfg['seed']}" in text and "Real inputs" not in text

    # the .bib: exactly the keys the text cites, each once
    keys = bib_keys(bib.read_text())
    assert len(keys) == len(set(keys))
    assert set(keys) == cited_keys(text)
    assert "nibabel" in keys and f"version = {{{installed('nibabel')}}}" in bib.read_text()


def test_only_what_ran_is_cited(cfg, tmp_path):
    small = json.loads(json.dumps(cfg))
    small["predict"] = {"methods": ["mean", "linear"], "tune": {"linear": cfg["predict"]["tune"]["linear"]}}
    small["segment"]["methods"] = ["kmeans", "atropos"]
    small["segment"]["params"] = {"atropos": {"iterations": 3}}
    small["segment"].pop("tune", None)
    small["error_budget"] = {"sweep": False, "oracle": False}
    del small["mrf"]
    man = fake_run(small, tmp_path)
    text, keys = citation.methods_text(man)
    assert "`unet`" not in text and "`mlp`" not in text and "MR fingerprinting" not in text
    assert "ronneberger2015unet" not in keys and "cohen2018mr" not in keys
    assert "It was not tuned: iterations = 3." in text  # atropos without its grid
    assert "oracle" not in text


def test_real_inputs_paragraph(cfg, tmp_path):
    real = SimpleNamespace(active=True, kind="bids", inputs={"sub-01_T1w": 0, "sub-02_T1w": 1},
                           stages=("denoise", "segment", "predict"), root="derivatives/mrichain", voxel_mm=2.0, acqs={})
    man = fake_run(cfg, tmp_path, real)
    assert man["real"]["n_inputs"] == 2
    text, keys = citation.methods_text(man)
    assert "## Real inputs" in text and "2 T1w images" in text and "BIDS derivative" in text
    assert {"tustison2010n4", "smith2002fast"} <= set(keys)
    bib = citation.bibtex(keys)
    assert set(bib_keys(bib)) == set(keys)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"chosen": 3}', '{"chosen": {}}', None])
def test_bad_card_is_exit_2_naming_the_file(cfg, tmp_path, capsys, content):
    man = fake_run(cfg, tmp_path)
    card = tmp_path / "tuning-reconstruct-cs.json"
    if content is None:
        card.unlink()
    else:
        card.write_text(content)
    assert man["stages"]["reconstruct"]["tuning"]["cs"] == str(card)
    md, bib = tmp_path / "CITATION.md", tmp_path / "CITATION.bib"
    code = main(["citation", "--manifest", str(write(man, tmp_path)), "--out-md", str(md), "--out-bib", str(bib)])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mrichain citation: error:")]
    assert len(err) == 1 and str(card) in err[0]
    assert not md.exists() and not bib.exists()


def test_bad_model_card_names_the_file(cfg, tmp_path, capsys):
    man = fake_run(cfg, tmp_path)
    card = tmp_path / "reconstruct-varnet.json"
    card.write_text(json.dumps({"training": {"lr": "fast"}, "epochs_run": 3}))
    code = main(["citation", "--manifest", str(write(man, tmp_path)), "--out-md", str(tmp_path / "c.md"),
                 "--out-bib", str(tmp_path / "c.bib")])
    assert code == 2 and str(card) in capsys.readouterr().err
