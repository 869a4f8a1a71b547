"""The stage declaration (mrichain.plan.stages) is the one source: packages, schema, scorers and DVC
plots agree with it, and every entry point it names exists."""
import importlib

import pytest
import yaml

from mrichain.plan import stages
from mrichain.plan.config import load_schema
from dag import ROOT


def test_entry_points_and_trainers_resolve():
    for s in stages.METHOD_STAGES:
        package = importlib.import_module(s.package)
        registry = set(package.METHODS) | set(getattr(package, "LEARNED_METHODS", {}))
        assert registry == set(s.method_names), s.name
        assert set(package.TRAINERS) == {m.name for m in s.methods if m.learned}, s.name
        for m in s.methods:
            assert m.kind in (stages.FLOOR, stages.CLASSICAL, stages.LEARNED), (s.name, m.name)
            assert (m.trainer is not None) == m.learned and (m.val_metric is not None) == m.learned, m.name
            impl = (package.METHODS if m.name in package.METHODS else package.LEARNED_METHODS)[m.name]
            assert callable(impl) or hasattr(impl, "fit"), (s.name, m.name)
            if m.learned:
                assert callable(package.TRAINERS[m.name])


def test_method_names_are_bids_labels():
    """Every method name is alphanumeric: it is the ``desc``/``rec`` label of its files and the
    rules' ``method`` wildcard, with no mapping in between."""
    import re

    names = [m.name for s in stages.ALL_STAGES for m in s.methods]
    assert all(re.fullmatch(r"[a-z0-9]+", n) for n in names), names


def test_mrf_methods_dispatch_through_the_declaration():
    from mrichain import mrf

    declared = stages.stage("mrf")
    assert declared is stages.MRF_STAGE and declared not in stages.STAGES  # the branch, not a link of the chain
    assert importlib.import_module(declared.package) is mrf
    assert list(mrf.METHODS) == list(declared.method_names)
    assert set(mrf.TRAINERS) == {m.name for m in declared.methods if m.learned}
    assert all(callable(mrf.METHODS[name]) for name in mrf.METHODS) and callable(mrf.TRAINERS["drone"])
    assert len({m.entry for m in declared.methods}) == len(declared.methods)  # one entry per method
    for m in declared.methods:
        assert (m.trainer is not None) == m.learned and (m.val_metric is not None) == m.learned, m.name


def test_every_stage_has_a_scorer_and_every_reference_is_known():
    from mrichain.plan import layout

    known_kinds = {"kspace", "noisefree", "gt", "template", "feed", "age", "dictionary"}
    for s in stages.ALL_STAGES:
        assert callable(stages.SCORERS[s.name] if s in stages.STAGES else stages.Registry({s.name: s.scorer})[s.name])
        refs = [*s.reads.values(), *s.score_reads.values(), *s.train_reads.values(), *s.train_extra.values()]
        refs += [r for m in s.methods for r in [*(m.reads or {}).values(), *(m.train_reads or {}).values()]]
        for ref in refs:
            kind, _, key = ref.partition(".")
            assert kind in known_kinds, (s.name, ref)
            if kind == "gt":
                assert key in layout.GROUNDTRUTH, ref
            if kind == "template":
                assert key in layout.TEMPLATE, ref
            if kind == "feed":
                fed = stages.stage(key)
                assert fed.has_feed and stages.STAGE_NAMES.index(key) < stages.STAGE_NAMES.index(s.name), ref
        if s.methods:
            assert s.outputs and s.directory, s.name


def test_schema_method_enums_are_the_declared_methods():
    schema = load_schema()
    for s in stages.METHOD_STAGES:
        section = schema["properties"][s.name]
        assert section["properties"]["methods"]["items"]["enum"] == list(s.method_names)
        assert ("feed" in section["properties"]) == s.has_feed
        assert s.name in schema["required"]


def test_kinds():
    assert stages.kind("reconstruct", "zerofilled") == "floor"
    assert stages.kind("denoise", "input") == "floor"  # the scorer's own floor
    assert stages.kind("segment", "unet") == "learned" and stages.kind("register", "antssyn") == "classical"
    assert stages.kind("acquire", "simulated") == "simulation"
    assert stages.kind("mrf", "constant") == "floor" and stages.kind("mrf", "drone") == "learned"  # the MRF branch
    with pytest.raises(KeyError, match="no method 'magic'"):
        stages.kind("segment", "magic")
    with pytest.raises(KeyError, match="unknown stage"):
        stages.stage("unknown")


def test_dvc_yaml_follows_the_declaration():
    """dvc.yaml's plots are the learned methods' curves and their selection metrics, and its
    stages depend on the config sections of the declared method stages."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    plots = {name: spec for p in dvc["plots"] for name, spec in p.items()}
    expected_loss = {f"models/{s}-{m.name}_curve.tsv": "train_loss" for s, m in stages.learned_methods()}
    expected_val = {f"models/{s}-{m.name}_curve.tsv": m.val_metric for s, m in stages.learned_methods()}
    assert plots["training loss"]["y"] == expected_loss
    assert plots["validation score (model selection)"]["y"] == expected_val
    method_sections = [s.name for s in stages.METHOD_STAGES]
    # models also builds the MRF dictionary and DRONE (mrf); evaluate also runs the error budget's
    # conditions (error_budget), the MRF maps (mrf) and any real inputs (input)
    for name, extra in (("models", ["mrf"]), ("evaluate", ["error_budget", "mrf", "input"])):
        params = dvc["stages"][name]["params"][0]["config/config.yaml"]
        assert params == ["seed", *method_sections, *extra], name


def test_registry_imports_lazily():
    reg = stages.Registry({"dumps": "json:dumps", "json": "json"})
    assert set(reg) == {"dumps", "json"} and len(reg) == 2
    assert reg["dumps"]({}) == "{}" and reg["json"].loads("1") == 1
