"""The chain's outputs on real scans as a BIDS derivatives dataset.

One path builder, :func:`derivative_path` (like snakebids' ``bids()`` in hippunfold), so a file
name is defined once::

    derivative_path("results/derivatives/mrichain", {"subject": "01", "session": "02"},
                    desc="unet", suffix="dseg", extension=".nii.gz")
    -> results/derivatives/mrichain/sub-01/ses-02/anat/sub-01_ses-02_desc-unet_dseg.nii.gz

Entity order is the BIDS schema's (``bidsschematools``' ``rules.entities``, read at run time from
the schema the package ships: no hand-written list to drift). Values are checked against BIDS 1.9's
formats (labels ``[0-9a-zA-Z]+``, indices ``[0-9]+``; the 1.10 ``+`` in labels is refused, so
every name is valid under the ``BIDSVersion`` we declare, :data:`BIDS_VERSION`).

Names of the outputs (:data:`OUTPUTS`; every one accepted by :func:`check_names`, tested):

- ``desc-preproc_T1w`` - the input T1w after N4 bias correction, skull on, on the input's grid
  and voxel order (fMRIPrep's meaning of ``preproc``);
- ``desc-brain_mask`` - the brain mask used (the user's, or BET's), on the input's grid;
- ``desc-<method>_T1w`` - the denoised brain (method ``antsnlm``, ``dncnn``; the method's name
  is the description, as the simulated chain names its outputs), on the input's grid;
- ``desc-<method>_dseg`` - tissue labels (0 background, 1 CSF, 2 GM, 3 WM), with one dataset-level
  ``dseg.tsv`` look-up table (:func:`write_dseg_tsv`; BIDS inheritance applies it to every dseg);
- brain age and motion - ``sub-<l>/[ses-<l>/]sub-<l>[_ses-<l>]_scans.tsv``: BIDS' per-subject
  (per-session) table of files, one row per image (``filename`` relative to that folder), a column
  per prediction and the input's motion score and flag (:func:`scans_columns`), described once in a
  dataset-level ``scans.json``. BIDS
  has no ``brainage`` suffix, and a ``.tsv`` beside the image with an image suffix
  (``desc-sfcn_T1w.tsv``) is refused by the schema; ``scans.tsv`` is the file BIDS gives for
  per-image values that are not images;
- fastMRI reconstructions - ``sub-<stem>/anat/sub-<stem>_acq-R<acceleration>_rec-<method>_<suffix>``
  (:func:`fastmri_entities`): a fastMRI file is not BIDS raw, but its reconstruction is an
  anatomical image, so it gets BIDS names too (in the same derivatives tree, validated the same
  way) rather than a non-BIDS folder. The subject label is the file stem with everything but
  letters and digits removed (``file_brain_AXT2_200_2000019`` -> ``filebrainAXT22002000019``),
  the suffix comes from the file's ``acquisition`` attribute (:data:`FASTMRI_SUFFIX`). ``acq``
  before ``rec``: BIDS' order (``rec-cs_acq-R4`` is refused by the validator). A denoised
  reconstruction adds ``desc-<method>`` (``acq-R4_rec-cs_desc-dncnn_T2w``).

Images written here are on the input's grid (restored by :func:`mrichain.realdata.structural.restore`),
so they carry no ``space`` entity; an output on another grid passes ``space=`` (a template) or
``res`` in ``entities``.

:func:`check_names` is the validation a test runs over a derivatives tree. The ``bids-validator``
Python package (1.14) checks names against bidsschematools' regular expressions, but only the
``common`` and ``raw`` rule groups: it rejects every derivative name (``desc-preproc_T1w``,
``desc-brain_mask``, ``dseg``; checked). :func:`derivatives_validator` is that same validator with
the schema's ``deriv`` rule group added, as the Deno validator does for ``DatasetType:
derivative``. The rules check entity order, allowed entities per suffix, label formats and that
``sub-``/``ses-`` in a name match its folders; sidecar ``.json``/``.tsv`` names are checked more
loosely (any subset of entities, by BIDS inheritance).
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
from importlib import metadata
from pathlib import Path

from mrichain import LABELS, UserError

BIDS_VERSION = "1.9.0"
"""The BIDS version ``dataset_description.json`` declares (the derivatives spec these names follow)."""
DERIVATIVES_ROOT = "results/derivatives/mrichain"
"""Default root of the derivatives dataset (relative to the Snakemake working directory)."""
NAME = "mrichain"
LABEL_RE = re.compile(r"[0-9a-zA-Z]+")
INDEX_RE = re.compile(r"[0-9]+")
SUFFIX_RE = re.compile(r"[0-9a-zA-Z]+")
SUBJECT_LEVEL_SUFFIXES = ("scans", "sessions")
"""Suffixes whose file sits in the subject (session) folder, not in a datatype folder."""

OUTPUTS = {
    "preproc": {"desc": "preproc", "suffix": "T1w", "extension": ".nii.gz"},
    "brain_mask": {"desc": "brain", "suffix": "mask", "extension": ".nii.gz"},
    "denoise": {"desc": "{method}", "suffix": "T1w", "extension": ".nii.gz"},
    "segment": {"desc": "{method}", "suffix": "dseg", "extension": ".nii.gz"},
    "brainage": {"suffix": "scans", "extension": ".tsv"},
    "recon": {"reconstruction": "{method}", "suffix": "{suffix}", "extension": ".nii.gz"},
    "recon_denoise": {"reconstruction": "{recon}", "desc": "{method}", "suffix": "{suffix}", "extension": ".nii.gz"},
}
"""The derivative outputs by key: :func:`derivative_path` arguments, ``{...}`` filled by :func:`output_path`.
A fastMRI file's outputs take their ``subject`` and ``acquisition`` (``R<acceleration>``) from
:func:`fastmri_entities`; ``recon_denoise`` is a denoised reconstruction (``rec`` names the
reconstruction it was computed from)."""

FASTMRI_SUFFIX = {
    "AXT1": "T1w", "AXT1PRE": "T1w", "AXT1POST": "T1w", "AXT2": "T2w", "AXFLAIR": "FLAIR",
    "CORPD_FBK": "PDw", "CORPDFS_FBK": "PDw",
}
"""fastMRI's ``acquisition`` attribute (brain: axial T1/T1 pre/post contrast/T2/FLAIR; knee:
coronal proton density with/without fat suppression) -> BIDS anatomical suffix."""


# ------------------------------------------------------------------ entities


@functools.cache
def _schema():
    from bidsschematools import schema

    return schema.load_schema()


@functools.cache
def entity_order() -> dict[str, str]:
    """``{entity name: file-name key}`` in BIDS order, from the installed BIDS schema
    (``bidsschematools``: ``rules.entities`` and ``objects.entities[name].name``), e.g.
    ``{"subject": "sub", "session": "ses", ..., "acquisition": "acq", ..., "description": "desc"}``."""
    s = _schema()
    return {str(name): str(s.objects.entities[name]["name"]) for name in s.rules.entities}


@functools.cache
def _formats() -> dict[str, str]:
    s = _schema()
    return {str(name): str(s.objects.entities[name].get("format", "label")) for name in s.rules.entities}


def schema_version() -> str:
    """The BIDS version of the schema names are checked against (bidsschematools' own)."""
    return str(_schema()["bids_version"])


def normalize_entities(entities: dict) -> dict[str, str]:
    """``entities`` keyed by schema names; accepts schema names (``acquisition``) or file-name keys
    (``acq``); values as strings, a value's own key prefix dropped (``subject="sub-01"`` -> ``"01"``);
    None values left out. Raises ValueError for an unknown entity or a value BIDS 1.9 does not
    allow (naming both)."""
    order = entity_order()
    by_key = {short: name for name, short in order.items()}
    fmt = _formats()
    out: dict[str, str] = {}
    for k, v in entities.items():
        if v is None:
            continue
        name = k if k in order else by_key.get(k)
        if name is None:
            raise ValueError(f"unknown BIDS entity {k!r}; known: {', '.join(order)}")
        value = str(v)
        prefix = f"{order[name]}-"
        if value.startswith(prefix):
            value = value[len(prefix):]
        pattern = INDEX_RE if fmt[name] == "index" else LABEL_RE
        if not pattern.fullmatch(value):
            kind = "an index (digits)" if fmt[name] == "index" else "a label (letters and digits)"
            raise ValueError(f"BIDS entity {order[name]}-{value!r}: the value must be {kind}")
        if name in out and out[name] != value:
            raise ValueError(f"BIDS entity {name} given twice: {out[name]!r} and {value!r}")
        out[name] = value
    return out


def entities_from_key(key: str) -> dict[str, str]:
    """Inverse of :func:`mrichain.realdata.bids.image_key`: ``"sub-01_ses-02_run-1"`` ->
    ``{"subject": "01", "session": "02", "run": "1"}`` (for a rule that gets ``{key}``)."""
    pairs = {}
    for part in key.split("_"):
        short, sep, value = part.partition("-")
        if not sep:
            raise ValueError(f"image key {key!r}: {part!r} is not <entity>-<value>")
        pairs[short] = value
    ents = normalize_entities(pairs)
    if "subject" not in ents:
        raise ValueError(f"image key {key!r} has no sub-")
    return ents


def derivative_path(root, entities: dict, *, space: str | None = None, desc: str | None = None,
                    label: str | None = None, suffix: str, extension: str, datatype: str = "anat") -> Path:
    """``<root>/sub-X/[ses-Y/]<datatype>/sub-X[_ses-Y][_acq-..][_run-..][_space-..][_desc-..]_<suffix><ext>``.

    entities: schema names or file-name keys (:func:`normalize_entities`); ``space``, ``desc``,
    ``label`` add those entities (an equal value in ``entities`` is fine, a different one raises).
    All entities go in the schema's order. Without a subject the file sits in ``root`` (a
    dataset-level file such as ``dseg.tsv``); ``scans``/``sessions`` files sit in the subject
    (session) folder. extension: with its dot (``.nii.gz``, ``.json``, ``.tsv``).
    Raises ValueError for an unknown entity, a value BIDS does not allow, a bad suffix or extension.
    """
    ents = normalize_entities(entities)
    for k, v in normalize_entities({"space": space, "description": desc, "label": label}).items():
        if ents.get(k, v) != v:
            raise ValueError(f"BIDS entity {k}: {ents[k]!r} in entities, {v!r} given")
        ents[k] = v
    if not SUFFIX_RE.fullmatch(suffix):
        raise ValueError(f"BIDS suffix {suffix!r}: letters and digits only")
    if not re.fullmatch(r"(\.[a-z0-9]+)+", extension):
        raise ValueError(f"extension {extension!r}: a dot and lower-case letters/digits, e.g. .nii.gz")
    order = entity_order()
    stem = "_".join([f"{order[n]}-{ents[n]}" for n in order if n in ents] + [suffix])
    folder = Path(root)
    if "subject" in ents:
        folder = folder / f"sub-{ents['subject']}"
        if "session" in ents:
            folder = folder / f"ses-{ents['session']}"
        if suffix not in SUBJECT_LEVEL_SUFFIXES:
            folder = folder / datatype
    elif "session" in ents:
        raise ValueError(f"entities {ents} have a session but no subject")
    return folder / f"{stem}{extension}"


def output_path(root, key: str, entities: dict, **fill) -> Path:
    """The path of output ``key`` (:data:`OUTPUTS`) for an image's ``entities``; ``fill`` gives the
    ``{...}`` fields (``method``; ``recon`` and ``suffix`` for fastMRI outputs). ``brainage``: the
    image's subject/session ``scans.tsv`` (its other entities dropped: one table per folder)."""
    spec = {k: v.format(**fill) if isinstance(v, str) else v for k, v in OUTPUTS[key].items()}
    ents = normalize_entities(entities)
    if spec["suffix"] in SUBJECT_LEVEL_SUFFIXES:
        ents = {k: v for k, v in ents.items() if k in ("subject", "session")}
    desc = spec.pop("desc", None)
    suffix, extension = spec.pop("suffix"), spec.pop("extension")
    return derivative_path(root, {**ents, **spec}, desc=desc, suffix=suffix, extension=extension)


# ------------------------------------------------------------------ where derivatives may go


def inside_raw_dataset(path, bids_dir) -> bool:
    """Whether writing ``path`` would write into the raw BIDS dataset ``bids_dir``.

    True for ``bids_dir`` itself and anything inside it, except strictly inside its
    ``derivatives/`` folder (a pipeline's folder such as ``derivatives/mrichain``, where BIDS puts
    derivatives; ``derivatives/`` itself holds other pipelines' folders and is refused too). Both
    are resolved first (relative to the working directory, symlinks followed: a DataLad dataset, a
    link to the dataset), so ``..``, ``.`` and links cannot hide a path inside it.
    """
    raw = Path(bids_dir).expanduser().resolve()
    p = Path(path).expanduser().resolve()
    if p != raw and raw not in p.parents:
        return False
    return (raw / "derivatives") not in p.parents


# ------------------------------------------------------------------ fastMRI files


def fastmri_label(path) -> str:
    """BIDS subject label of a fastMRI file: its stem, letters and digits only
    (``file_brain_AXT2_200_2000019.h5`` -> ``filebrainAXT22002000019``)."""
    stem = Path(path).name.split(".")[0]
    label = re.sub(r"[^0-9a-zA-Z]", "", stem)
    if not label:
        raise UserError(f"{path}: the file name has no letters or digits to make a BIDS subject label")
    return label


def fastmri_subjects(paths) -> dict[str, Path]:
    """``{subject label: file}`` for fastMRI files, sorted by label; two files giving one label
    raise UserError naming both."""
    out: dict[str, Path] = {}
    for p in sorted(Path(p) for p in paths):
        lab = fastmri_label(p)
        if lab in out:
            raise UserError(f"fastMRI files {out[lab]} and {p} give the same BIDS subject label sub-{lab}; rename one")
        out[lab] = p
    return dict(sorted(out.items()))


def fastmri_suffix(acquisition: str | None, path=None) -> str:
    """BIDS suffix for a fastMRI ``acquisition`` attribute (:data:`FASTMRI_SUFFIX`); UserError
    naming the file and the known values otherwise."""
    if acquisition is None or str(acquisition) not in FASTMRI_SUFFIX:
        where = f"{path}: " if path is not None else ""
        raise UserError(f"{where}fastMRI acquisition {acquisition!r} has no BIDS suffix; known: "
                        f"{', '.join(FASTMRI_SUFFIX)}")
    return FASTMRI_SUFFIX[str(acquisition)]


def fastmri_entities(path, acceleration: int | None = None) -> dict[str, str]:
    """Entities of a fastMRI file's outputs: ``{"subject": <label>[, "acquisition": "R<acc>"]}``."""
    ents = {"subject": fastmri_label(path)}
    if acceleration is not None:
        ents["acquisition"] = f"R{int(acceleration)}"
    return ents


# ------------------------------------------------------------------ dataset-level files


def mrichain_version() -> str:
    """The installed distribution's version (``importlib.metadata``), else the package's
    ``__version__`` (a source tree on PYTHONPATH without an install)."""
    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:
        from mrichain import __version__

        return __version__


def dataset_description(version: str | None = None, source_dir=None, *, code_url: str | None = None,
                        name: str = "mrichain derivatives") -> dict:
    """``dataset_description.json`` content of the derivatives (BIDS 1.9, derivatives section).

    version: mrichain's (default :func:`mrichain_version`). source_dir: the input dataset (BIDS
    root or fastMRI folder); it becomes ``SourceDatasets: [{URL: file://...}]`` (with ``DOI`` and
    ``Version`` when its own ``dataset_description.json`` has ``DatasetDOI``/``DatasetVersion``).
    """
    gen = {"Name": NAME, "Version": version or mrichain_version(),
           "Description": "MRI chain: classical and learned methods side by side"}
    if code_url:
        gen["CodeURL"] = code_url
    desc = {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative", "GeneratedBy": [gen]}
    if source_dir is not None:
        src = Path(source_dir).expanduser().resolve()
        entry = {"URL": src.as_uri()}
        try:
            sdesc = json.loads((src / "dataset_description.json").read_text())
        except (OSError, ValueError):
            sdesc = {}
        if isinstance(sdesc, dict):
            if sdesc.get("DatasetDOI"):
                entry["DOI"] = str(sdesc["DatasetDOI"])
            if sdesc.get("DatasetVersion"):
                entry["Version"] = str(sdesc["DatasetVersion"])
        desc["SourceDatasets"] = [entry]
    return desc


def _write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` unless the file already holds it (its mtime then stays, for Snakemake)."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_dataset_description(root, version: str | None = None, source_dir=None, **kwargs) -> Path:
    """Write ``<root>/dataset_description.json`` (:func:`dataset_description`); returns its path."""
    text = json.dumps(dataset_description(version, source_dir, **kwargs), indent=2) + "\n"
    return _write_if_changed(Path(root) / "dataset_description.json", text)


DSEG_NAMES = {"CSF": "Cerebrospinal fluid", "GM": "Gray matter", "WM": "White matter"}


def write_dseg_tsv(root) -> Path:
    """``<root>/dseg.tsv``: the look-up table of every ``_dseg`` image (BIDS columns ``index``,
    ``name``, ``abbreviation``; from :data:`mrichain.LABELS`; 0, background, is not listed)."""
    rows = ["index\tname\tabbreviation"] + [f"{i}\t{DSEG_NAMES[a]}\t{a}" for i, a in sorted(LABELS.items()) if i]
    return _write_if_changed(Path(root) / "dseg.tsv", "\n".join(rows) + "\n")


def scans_columns(methods, interval_methods=(), *, motion: bool = False) -> dict[str, dict]:
    """Columns of a ``scans.tsv`` with their BIDS column descriptions (for ``scans.json``).

    ``filename``; ``age`` (chronological, from participants.tsv); per brain-age method
    ``brainage_<method>``, and ``brainage_<method>_lower``/``_upper`` for ``interval_methods``;
    with ``motion``, ``motion_efc`` and ``motion_flagged`` (:mod:`mrichain.motion.quality`).
    """
    from mrichain.motion.quality import MIN_IMAGES_TO_FLAG, OUTLIER_Z

    cols = {"filename": {"Description": "The image the values were computed from, relative to this folder"},
            "age": {"Description": "Chronological age from the source participants.tsv", "Units": "year"}}
    for m in methods:
        cols[f"brainage_{m}"] = {"Description": f"Brain age predicted by mrichain's {m} method", "Units": "year"}
        if m in interval_methods:
            for side in ("lower", "upper"):
                cols[f"brainage_{m}_{side}"] = {
                    "Description": f"{side.capitalize()} end of the predictive interval of {m}", "Units": "year"}
    if motion:
        cols["motion_efc"] = {
            "Description": "Entropy focus criterion of the input image over its whole field of view (0-1; "
                           "ghosting and blur from head motion raise it; comparable only between scans "
                           "of one protocol)"}
        cols["motion_flagged"] = {
            "Description": f"true where motion_efc lies more than {OUTLIER_Z} robust standard deviations "
                           f"(modified z-score) above the dataset's median: a likely motion-corrupted scan; "
                           f"n/a with fewer than {MIN_IMAGES_TO_FLAG} scans in the run"}
    return cols


def write_scans_json(root, columns: dict[str, dict]) -> Path:
    """``<root>/scans.json``: the column descriptions of every ``scans.tsv`` (BIDS inheritance)."""
    return _write_if_changed(Path(root) / "scans.json", json.dumps(columns, indent=2) + "\n")


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_scans_table(path, rows: list[dict], columns) -> Path:
    """A ``scans.tsv`` at ``path``: one row per image (sorted by ``filename``, which is relative to
    the table's folder and must exist there), ``columns`` in order (``filename`` first), missing
    or non-finite values as ``n/a``. Raises ValueError for a row without ``filename``, an
    absolute ``filename`` or a column not in ``columns``."""
    path = Path(path)
    columns = list(columns)
    if not columns or columns[0] != "filename":
        raise ValueError(f"scans.tsv columns must start with filename, got {columns}")
    lines = ["\t".join(columns)]
    for row in sorted(rows, key=lambda r: str(r.get("filename"))):
        if not row.get("filename") or os.path.isabs(str(row["filename"])):
            raise ValueError(f"scans.tsv row needs a filename relative to {path.parent}: {row}")
        extra = set(row) - set(columns)
        if extra:
            raise ValueError(f"scans.tsv row has columns {sorted(extra)} not in {columns}")
        lines.append("\t".join(_cell(row.get(c)) for c in columns))
    return _write_if_changed(path, "\n".join(lines) + "\n")


def write_sidecar(image_path, fields: dict) -> Path:
    """The JSON sidecar of a derivative image (``<stem>.json`` beside it), e.g. ``{"Description":
    ..., "SkullStripped": true}`` (BIDS derivatives' common fields)."""
    p = Path(image_path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".tsv"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return _write_if_changed(p.with_name(name + ".json"), json.dumps(fields, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ validation


@functools.cache
def derivatives_validator():
    """``bids_validator.BIDSValidator`` with the schema's derivative rules (module docstring).

    A subclass whose regular expressions come from bidsschematools' ``common``, ``raw`` and
    ``deriv`` rule groups (the package's own class loads the first two only); ``is_bids(path)``
    and ``parse(path)`` are the package's (``path`` relative to the dataset root, leading ``/``).
    Built on first use: importing this module does not load the validator.
    """
    from bids_validator import BIDSValidator
    from bidsschematools import rules

    class DerivativesValidator(BIDSValidator):
        regexes = None

        @classmethod
        def _init_regexes(cls):
            if cls.regexes is None:
                s = _schema()
                groups = (s.rules.files.common, s.rules.files.raw, s.rules.files.deriv)
                cls.regexes = [r["regex"] for g in groups for r in rules.regexify_filename_rules(g, s, level=2)]

    return DerivativesValidator()


IGNORED_DIRS = ("code", "sourcedata", "logs")


def check_names(root) -> list[str]:
    """Every file under a derivatives ``root`` whose name the BIDS rules reject, as a path relative
    to ``root`` (sorted; empty when all pass). Hidden files and the folders BIDS leaves free
    (``code/``, ``sourcedata/``, ``logs/``) are not checked; ``.bidsignore`` globs are honoured."""
    import pathspec

    root = Path(root)
    # the BIDS validator reads .bidsignore with gitignore's rules, as pathspec does
    bidsignore = root / ".bidsignore"
    ignore = pathspec.GitIgnoreSpec.from_lines(bidsignore.read_text().splitlines() if bidsignore.is_file() else [])
    validator = derivatives_validator()
    bad = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or rel.split("/")[0] in IGNORED_DIRS:
            continue
        if ignore.match_file(rel):
            continue
        if not validator.is_bids("/" + rel):
            bad.append(rel)
    return bad
