"""A lab's BIDS dataset into the chain: every T1w image, its entities, brain mask and age.

Discovery is pybids' :class:`bids.BIDSLayout` (``pybids`` 0.22), not a hand-written parser:

- ``validate=True``: the layout indexes only files whose names pass pybids' BIDS validation, so a
  misnamed file (``sub-01_foo_T1w.nii.gz``) is not an image of the cohort; such T1w-looking files
  are named in a warning instead of being dropped silently.
- ``index_metadata=False``: sidecar JSONs are not read (nothing here needs them, and reading them
  dominates indexing time on a large dataset).
- The index lives in memory unless ``database_path`` names a pybids SQLite cache (re-used as is
  on the next call: pass ``reset_database=True`` when the dataset changed).
- No network: pybids and the BIDS schema (``bidsschematools``) ship everything they read.

Why pybids and not snakebids: snakebids 0.15 pins ``pybids~=0.21`` and pulls ``copier`` (a
project-templating tool) into the environment, for a ``generate_inputs`` that is a thin layer over
the same ``BIDSLayout``; the Snakefile here needs only the list of images, which a manifest gives.

What an image is (:class:`BidsT1w`): a ``*_T1w.nii[.gz]`` under ``sub-*/[ses-*/]anat/`` of the raw
dataset (``derivatives/`` is not searched for inputs). Its ``entities`` are parsed from its file
name and keyed by the BIDS schema's entity names (``subject``, ``session``, ``acquisition``,
``ceagent``, ``reconstruction``, ``run``, ...), values as written (``run: "01"`` keeps its
padding), so :func:`mrichain.realdata.derivatives.derivative_path` rebuilds the same entities.

The image ``key`` (a Snakemake wildcard value): the image's entities as ``<key>-<value>`` pairs in
the BIDS schema's entity order, joined by ``_`` (i.e. its file name without ``_T1w.nii[.gz]``), e.g.
``sub-01_ses-02_acq-mprage_run-1``. BIDS labels are alphanumeric, so a key matches
:data:`KEY_PATTERN` and never contains ``/`` or ``.``; two files with the same entities (``.nii``
and ``.nii.gz`` of one image) are refused, so a key is unique per image.

The brain mask (``mask``): a user-provided ``desc-brain_mask`` in one of ``derivatives_dirs`` whose
entities equal the image's (same subject, session, acquisition, run, ...; no ``space``: a mask in
another space is on another grid). The first folder in ``derivatives_dirs`` that has one wins.

The age (``age``, years): the ``age`` column of ``participants.tsv`` at the dataset root, when the
file and column exist; ``n/a`` (BIDS' missing value) or an empty cell gives None.

The manifest (:func:`write_manifest`, :func:`read_manifest`): the discovered images as a JSON list,
so the Snakefile discovers once and every later reader (rules, scripts) re-reads a small file
instead of re-indexing the dataset or putting the cohort on a command line.
"""
from __future__ import annotations

import csv
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mrichain import UserError
from mrichain.realdata.derivatives import entity_order

KEY_PATTERN = r"sub-[0-9a-zA-Z]+(?:_[a-z]+-[0-9a-zA-Z]+)*"
"""Regular expression every image key matches (a Snakemake wildcard constraint for it)."""
KEY_RE = re.compile(KEY_PATTERN)
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
MISSING = ("n/a", "")
"""participants.tsv cells read as a missing age (BIDS writes ``n/a``)."""
MANIFEST_FIELDS = ("key", "path", "entities", "mask", "age")


@dataclass(frozen=True)
class BidsT1w:
    """One T1w image of a BIDS dataset.

    path: the NIfTI file (absolute). entities: ``{schema entity name: value}`` from its file name
    (``subject`` always; ``session``, ``acquisition``, ``run``, ... when present). key: the stable
    id (module docstring). mask: a user brain mask on the image's grid, or None. age: years, or None.
    """

    key: str
    path: Path
    entities: dict[str, str] = field(hash=False)
    mask: Path | None = None
    age: float | None = None

    @property
    def subject(self) -> str:
        """``sub-<label>``."""
        return f"sub-{self.entities['subject']}"

    @property
    def session(self) -> str | None:
        """``ses-<label>``, or None for a dataset without sessions."""
        ses = self.entities.get("session")
        return f"ses-{ses}" if ses is not None else None

    def to_dict(self) -> dict:
        """JSON-ready record (paths as strings), the manifest's row."""
        return {"key": self.key, "path": str(self.path), "entities": dict(self.entities),
                "mask": None if self.mask is None else str(self.mask), "age": self.age}

    @classmethod
    def from_dict(cls, d: dict) -> BidsT1w:
        return cls(key=str(d["key"]), path=Path(d["path"]), entities={str(k): str(v) for k, v in d["entities"].items()},
                   mask=None if d.get("mask") is None else Path(d["mask"]),
                   age=None if d.get("age") is None else float(d["age"]))


# ------------------------------------------------------------------ names


def _split_name(path: Path) -> tuple[dict[str, str], str, str] | None:
    """(entities by schema name, suffix, extension) of a BIDS file name; None if it is not one."""
    name = path.name
    ext = next((e for e in (".nii.gz", ".nii", ".json", ".tsv") if name.endswith(e)), None)
    if ext is None:
        return None
    parts = name[: -len(ext)].split("_")
    by_short = {short: ent for ent, short in entity_order().items()}
    entities = {}
    for part in parts[:-1]:
        short, sep, value = part.partition("-")
        if not sep or short not in by_short or not value:
            return None
        entities[by_short[short]] = value
    return entities, parts[-1], ext


def image_key(entities: dict[str, str]) -> str:
    """The key of an image with ``entities`` (schema names): ``sub-01_ses-02_acq-x_run-1``.

    Pairs in the BIDS schema's entity order (:func:`mrichain.realdata.derivatives.entity_order`).
    Raises ValueError for an entity the schema does not know or a missing subject.
    """
    short = entity_order()
    unknown = set(entities) - set(short)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}; known: {', '.join(short)}")
    if "subject" not in entities:
        raise ValueError(f"entities {entities} have no subject")
    return "_".join(f"{key}-{entities[name]}" for name, key in short.items() if name in entities)


def _label(value: str, prefix: str) -> str:
    """``sub-01`` or ``01`` -> ``01``."""
    value = str(value)
    return value[len(prefix) + 1:] if value.startswith(f"{prefix}-") else value


# ------------------------------------------------------------------ participants.tsv


def read_ages(bids_dir, subjects=None) -> dict[str, float | None]:
    """``{subject label: age in years or None}`` from ``<bids_dir>/participants.tsv``.

    Empty when the file is absent; every age None when it has no ``age`` column. ``n/a`` or an
    empty cell is None. subjects: labels (``"01"``) whose rows are checked; other rows are not read
    (a broken row of a subject left out by ``participant_label`` does not stop the others).
    Raises UserError naming the file (and the line and participant of a bad row) when the file
    cannot be read as a TSV with a ``participant_id`` column, or an age is not a number >= 0.
    """
    path = Path(bids_dir) / "participants.tsv"
    if not path.exists():
        return {}
    want = None if subjects is None else {str(s) for s in subjects}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read participants.tsv ({e})") from e
    if not rows or "participant_id" not in rows[0]:
        header = rows[0] if rows else "empty"
        raise UserError(f"{path}: participants.tsv has no participant_id column (header: {header})")
    header = rows[0]
    i_id = header.index("participant_id")
    i_age = header.index("age") if "age" in header else None
    ages: dict[str, float | None] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        sub = _label(row[i_id].strip(), "sub") if i_id < len(row) else ""
        if want is not None and sub not in want:
            continue
        if len(row) != len(header):
            raise UserError(f"{path}, line {line} (sub-{sub}): {len(row)} columns, the header has {len(header)}")
        if i_age is None:
            ages[sub] = None
            continue
        cell = row[i_age].strip()
        if cell in MISSING:
            ages[sub] = None
            continue
        try:
            age = float(cell)
        except ValueError:
            age = math.nan
        if not math.isfinite(age) or age < 0:
            raise UserError(f"{path}, line {line} (sub-{sub}): age {cell!r} is not a number of years "
                            f"(write n/a when it is unknown)")
        ages[sub] = age
    return ages


# ------------------------------------------------------------------ discovery


def _layout(root: Path, *, derivative: bool, database_path=None, reset_database: bool = False,
            validate: bool = True):
    """pybids layout of ``root`` (raw: validated unless ``validate`` is False; derivative:
    lenient, see :func:`_masks`)."""
    from bids import BIDSLayout, BIDSLayoutIndexer
    from bids.exceptions import PyBIDSError

    validate = validate and not derivative
    try:
        return BIDSLayout(root, validate=validate, is_derivative=derivative, database_path=database_path,
                          reset_database=reset_database,
                          indexer=BIDSLayoutIndexer(validate=validate, index_metadata=False))
    except (PyBIDSError, ValueError, OSError) as e:
        # pybids' messages are multi-line with an example; keep the first sentence and our path
        first = str(e).strip().splitlines()[0].strip() if str(e).strip() else type(e).__name__
        kind = "derivatives folder" if derivative else "BIDS dataset"
        raise UserError(f"{root} is not a usable {kind}: {first}") from e


def _check_dataset(root: Path, what: str) -> None:
    if not root.exists():
        raise UserError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise UserError(f"{what} {root} is not a directory")
    if not (root / "dataset_description.json").is_file():
        raise UserError(f"{what} {root} is not a BIDS dataset: it has no dataset_description.json "
                        f"(a JSON file with at least Name and BIDSVersion)")


def _masks(deriv_dir: Path) -> dict[str, Path]:
    """``{image key: mask path}`` of every ``desc-brain_mask`` NIfTI without ``space`` in a
    derivatives folder (indexed by pybids without validation: a folder written by hand or by
    another tool need not have ``GeneratedBy``). Two masks for one key raise UserError."""
    layout = _layout(deriv_dir, derivative=True)
    found: dict[str, Path] = {}
    for f in sorted(layout.get(suffix="mask", desc="brain", extension=list(NIFTI_EXTENSIONS), return_type="filename")):
        parsed = _split_name(Path(f))
        if parsed is None:
            continue
        ents, _, _ = parsed
        if "space" in ents or "subject" not in ents:
            continue
        ents.pop("description", None)
        key = image_key(ents)
        if key in found:
            raise UserError(f"{deriv_dir}: two brain masks for {key}: {found[key]} and {f}")
        found[key] = Path(f)
    return found


def _misnamed_t1w(root: Path, indexed: set[Path]) -> list[Path]:
    """T1w-looking NIfTIs under ``sub-*/`` that pybids' validation left out of the index."""
    out = []
    for ext in NIFTI_EXTENSIONS:
        out += [p for p in root.glob(f"sub-*/**/*T1w{ext}") if p.resolve() not in indexed]
    return sorted(set(out))


def discover_t1w(bids_dir, participant_label=None, derivatives_dirs=(), *, database_path=None,
                 reset_database: bool = False, validate: bool = True) -> list[BidsT1w]:
    """Every T1w image of a BIDS dataset, sorted by key (deterministic).

    bids_dir: the dataset root (with ``dataset_description.json``).
    participant_label: None (all), or labels with or without ``sub-`` (``"01"``, ``["sub-01"]``).
    derivatives_dirs: folders searched, in order, for a user ``desc-brain_mask`` per image.
    database_path, reset_database: pybids' SQLite index cache (default: in memory).
    validate: index only files whose names pass pybids' validation (False: every file, config
    ``input.validate``; the T1w pattern below still applies).
    Raises UserError naming the path or label: ``bids_dir`` missing or not a dataset, a derivatives
    folder missing, a participant label the dataset lacks (listing those it has), no T1w found,
    two files for one key, a bad ``participants.tsv``.
    """
    root = Path(bids_dir).expanduser().resolve()
    _check_dataset(root, "BIDS directory")
    layout = _layout(root, derivative=False, database_path=database_path, reset_database=reset_database,
                     validate=validate)

    labels = None
    if participant_label is not None:
        if isinstance(participant_label, str):
            participant_label = [participant_label]
        labels = sorted({_label(p, "sub") for p in participant_label})
        # the subject folders (pybids' get_subjects() would build the entities of every file)
        present = sorted(d.name[4:] for d in root.glob("sub-*") if d.is_dir())
        missing = [p for p in labels if p not in present]
        if missing:
            raise UserError(f"participant_label {', '.join('sub-' + p for p in missing)} not in {root}; "
                            f"it has: {', '.join('sub-' + p for p in present) or 'no subjects'}")

    # one query (pybids builds every result's entities, ~2 ms a file): the T1w files it indexed
    indexed = sorted(Path(f) for f in layout.get(suffix="T1w", scope="raw", return_type="filename"))
    files = []
    for f in indexed:
        if f.parent.name != "anat" or not f.name.endswith(NIFTI_EXTENSIONS):
            continue
        parsed = _split_name(f)
        if parsed is None:  # pybids accepted a name the schema parse does not: not expected
            raise UserError(f"{f}: cannot parse the BIDS entities of this file name")
        if labels is None or parsed[0]["subject"] in labels:
            files.append((f, parsed[0]))
    misnamed = _misnamed_t1w(root, {f.resolve() for f in indexed})
    if misnamed:
        warnings.warn(f"{root}: ignored T1w files whose names are not valid BIDS: "
                      + ", ".join(str(p.relative_to(root)) for p in misnamed[:10])
                      + (f" and {len(misnamed) - 10} more" if len(misnamed) > 10 else ""), stacklevel=2)
    if not files:
        which = f" for {', '.join('sub-' + p for p in labels)}" if labels is not None else ""
        raise UserError(f"no T1w image{which} in {root} (looked for sub-*/[ses-*/]anat/*_T1w.nii[.gz])")

    masks: dict[str, Path] = {}
    for d in derivatives_dirs:
        dpath = Path(d).expanduser().resolve()
        _check_dataset(dpath, "derivatives folder")
        for key, m in _masks(dpath).items():
            masks.setdefault(key, m)

    ages = read_ages(root, {ents["subject"] for _, ents in files})
    items: dict[str, BidsT1w] = {}
    for f, ents in files:
        key = image_key(ents)
        if not KEY_RE.fullmatch(key):
            raise UserError(f"{f}: entity values must be letters and digits (BIDS 1.9 labels) to name "
                            f"derivatives; got {key}")
        if key in items:
            raise UserError(f"two files for the image {key}: {items[key].path} and {f} (keep one)")
        items[key] = BidsT1w(key=key, path=f.resolve(), entities=ents, mask=masks.get(key),
                             age=ages.get(ents["subject"]))
    return [items[k] for k in sorted(items)]


# ------------------------------------------------------------------ manifest


def manifest_text(items: list[BidsT1w]) -> str:
    """The manifest's JSON text: a list of :meth:`BidsT1w.to_dict` records, sorted by key."""
    rows = [it.to_dict() for it in sorted(items, key=lambda it: it.key)]
    return json.dumps(rows, indent=1, sort_keys=True) + "\n"


def write_manifest(items: list[BidsT1w], path) -> Path:
    """Write the images to ``path`` (JSON list). The file is left untouched when its content would
    not change, so its modification time (what Snakemake compares) moves only with the cohort."""
    path = Path(path)
    text = manifest_text(items)
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate image keys in the manifest: {sorted({k for k in keys if keys.count(k) > 1})}")
    if path.exists() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def read_manifest(path) -> list[BidsT1w]:
    """The images of a manifest written by :func:`write_manifest` (its order). Raises UserError
    naming the file when it is missing or not such a list."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read the BIDS manifest ({e})") from e
    if not isinstance(rows, list):
        raise UserError(f"{path}: a BIDS manifest is a JSON list of images, found {type(rows).__name__}")
    items = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"key", "path", "entities"} <= set(row):
            raise UserError(f"{path}: entry {i} is not an image record with {', '.join(MANIFEST_FIELDS)}")
        items.append(BidsT1w.from_dict(row))
    return items


def by_key(items: list[BidsT1w]) -> dict[str, BidsT1w]:
    """``{key: image}`` (the lookup a rule's input function does for its ``{key}`` wildcard)."""
    return {it.key: it for it in items}

