"""The conda environments per rule family list the same requirements as pyproject.toml."""
import re
import tomllib

import yaml

from dag import ROOT
from fresh_python import modules_imported


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip())[0].lower()


def test_envs_agree_with_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {_name(d): d for d in deps}
    seen = set()
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        for req in pip:
            if req.startswith("-e"):
                continue
            name = _name(req)
            assert name in by_name, f"{env.name}: {req} is not in pyproject.toml"
            assert req == by_name[name], f"{env.name}: {req} != pyproject's {by_name[name]}"
            seen.add(name)
    assert seen == set(by_name), f"pyproject packages in no env: {set(by_name) - seen}"


def test_every_rule_names_an_existing_env():
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for rel in re.findall(r'"\.\./\.\./(envs/[^"]+)"', smk.read_text()):
            assert (ROOT / rel).exists(), f"{smk.name}: {rel} missing"


PARSE_TIME = ["mrichain.plan.stages", "mrichain.plan.layout", "mrichain.plan.conditions", "mrichain.plan.cohort", "mrichain.plan.manifests",
              "mrichain.plan.config", "mrichain.provenance", "mrichain.realdata.plan", "mrichain.realdata.domain"]


def test_planning_a_run_imports_no_image_or_learning_library():
    """What the Snakefile imports at parse time (once per run, and again in every cluster job)
    pulls in numpy, YAML and jsonschema only: no nibabel, h5py, scipy, pandas, torch, MONAI or ANTs."""
    heavy = ["nibabel", "h5py", "scipy", "pandas", "torch", "monai", "ants", "sklearn", "bids", "matplotlib"]
    out = modules_imported(f"import {', '.join(PARSE_TIME)}", heavy)
    assert out == [], f"parse-time modules import {out}"


def test_the_planning_package_imports_without_numpy():
    """The parse-time modules of mrichain.plan import on a Python where numpy cannot be imported
    (a draw of the splits or ages needs it; importing the planner does not)."""
    import subprocess
    import sys

    plan_modules = [m for m in PARSE_TIME if m.startswith("mrichain.plan")]
    code = (f"import sys; sys.modules['numpy'] = None; import {', '.join(plan_modules)}; "
            "from mrichain.plan.manifests import Plan; print('imported')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "imported", proc.stderr[-2000:]


def test_a_classical_job_imports_no_learning_library(tmp_path):
    """A classical method's job (zero-filling; every job reads its tuning card through
    mrichain.train.tune) imports neither torch nor MONAI: each of the run's hundreds of jobs is its
    own process, and torch alone costs seconds of CPU to import."""
    import numpy as np

    from mrichain.io import KSpaceFile, write_kspace

    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((2, 2, 16, 12)) + 1j * rng.standard_normal((2, 2, 16, 12))).astype(np.complex64)
    write_kspace(tmp_path / "k.h5", KSpaceFile(kspace=kspace))
    code = ("from mrichain.cli import main; import mrichain.train.tune\n"
            f"assert main(['reconstruct', '--method', 'zerofilled', '--params', '{{}}', '--input', {str(tmp_path / 'k.h5')!r}, "
            f"'--output', {str(tmp_path / 'zf.nii.gz')!r}]) == 0")
    assert modules_imported(code, ["torch", "monai", "ants"]) == []
    assert (tmp_path / "zf.nii.gz").exists()
