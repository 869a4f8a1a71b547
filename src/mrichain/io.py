"""Reading and writing the pipeline's files, with validation that names the offending file.

Images are NIfTI (nibabel), float32 or uint8 labels, RAS+ affines in millimetres.
k-space files follow the fastMRI HDF5 layout:

- ``kspace``: complex64, shape [slices, coils, H, W]; the undersampled (phase-encode) direction
  is the last axis W, as in fastMRI's files and mask functions.
- ``reconstruction_rss``: float32, shape [slices, H, W], root-sum-of-squares of the fully
  sampled k-space (the fastMRI target). Absent in files that carry no reference.
- ``mask``: float32 [W], 1 where a phase-encode line was acquired (fastMRI test files carry it;
  training files carry none, meaning fully sampled).
- attributes: ``acquisition``, ``max``, ``norm``, ``patient_id`` as in fastMRI, plus mrichain's
  ``acceleration``, ``num_low_frequency``, ``affine`` (4x4, maps (H index, W index, slice index)
  to RAS mm) and the acquisition parameters. A file without ``affine`` gets 1 mm isotropic voxels.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from mrichain import UserError


class InputImageError(UserError, ValueError):
    """An input file is unreadable, has the wrong shape or holds non-finite values."""


def load_image(path: str | os.PathLike, *, ndim: int = 3) -> nib.Nifti1Image:
    """Load a NIfTI image and check it is usable: readable, ``ndim``-D, finite.

    A 4-D file whose last axis has length 1 is squeezed to 3-D. Raises :class:`InputImageError`
    with the path in the message for a corrupt file, a wrong number of dimensions, or NaN/inf.
    The returned image holds its data in memory (``img.get_fdata`` is safe after the file moves).
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated/corrupt files
        raise InputImageError(f"{path}: cannot read NIfTI image ({type(exc).__name__}: {exc})") from exc
    if data.ndim == ndim + 1 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != ndim:
        raise InputImageError(
            f"{path}: expected a {ndim}-D image, got shape {tuple(data.shape)} ({data.ndim}-D)"
        )
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputImageError(f"{path}: image holds {n_bad} NaN/inf voxels")
    out = nib.Nifti1Image(np.array(data), img.affine, img.header)
    out.set_data_dtype(data.dtype)
    return out


def nifti_image(data: np.ndarray, affine: np.ndarray, *, dtype=np.float32) -> nib.Nifti1Image:
    """``data`` ([X, Y, Z], ...) as an in-memory NIfTI of ``dtype`` with ``affine`` (RAS+ mm) as its
    qform and sform, units mm: the header every image of the pipeline carries."""
    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype, copy=False), affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def save_image(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike, *, dtype=np.float32) -> Path:
    """Write ``data`` ([X, Y, Z], or [X, Y, Z, ...]) as NIfTI with ``affine`` (RAS+ mm).

    The header is written deterministically (no timestamps) so the same array gives the same bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nifti_image(data, affine, dtype=dtype)
    # gzip embeds a modification time; write through a fixed-mtime stream for byte identity.
    if str(path).endswith(".gz"):
        import gzip

        raw = img.to_bytes()
        with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
            gz.write(raw)
    else:
        nib.save(img, str(path))
    return path


def load_json(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return json.load(fh)


def save_json(obj, path: str | os.PathLike) -> Path:
    """Write strict JSON with sorted keys and a trailing newline (stable bytes).

    Non-finite floats (a PSNR of identical images is +inf) become ``null``: JSON has no infinity.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(_finite(obj), fh, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
        fh.write("\n")
    return path


def _finite(o):
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)) and not np.isfinite(o):
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


@dataclass
class KSpaceFile:
    """The content of a fastMRI-layout HDF5 file.

    kspace: complex64 [slices, coils, H, W]; mask: float32 [W] or None (fully sampled);
    reconstruction_rss: float32 [slices, H, W] or None; affine: 4x4 mapping (H, W, slice)
    voxel indices to RAS mm; attrs: the remaining HDF5 attributes.
    """

    kspace: np.ndarray
    mask: np.ndarray | None = None
    reconstruction_rss: np.ndarray | None = None
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    attrs: dict = field(default_factory=dict)


def read_kspace(path: str | os.PathLike) -> KSpaceFile:
    """Read a fastMRI-layout HDF5 file (ours or fastMRI's own), validating shape and values."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "kspace" not in f:
                raise InputImageError(f"{path}: no 'kspace' dataset (fastMRI layout expected)")
            kspace = f["kspace"][()]
            mask = f["mask"][()].astype(np.float32) if "mask" in f else None
            rss = f["reconstruction_rss"][()].astype(np.float32) if "reconstruction_rss" in f else None
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
    except InputImageError:
        raise
    except Exception as exc:
        raise InputImageError(f"{path}: cannot read HDF5 k-space ({type(exc).__name__}: {exc})") from exc
    if kspace.ndim == 3:  # single-coil fastMRI files: [slices, H, W]
        kspace = kspace[:, None]
    if kspace.ndim != 4:
        raise InputImageError(f"{path}: kspace must be [slices, coils, H, W], got shape {kspace.shape}")
    if not np.iscomplexobj(kspace):
        raise InputImageError(f"{path}: kspace must be complex, got {kspace.dtype}")
    if not np.all(np.isfinite(kspace)):
        raise InputImageError(f"{path}: kspace holds NaN/inf values")
    if mask is not None and mask.shape[-1] != kspace.shape[-1]:
        raise InputImageError(f"{path}: mask length {mask.shape} does not match kspace width {kspace.shape[-1]}")
    affine = np.asarray(attrs.pop("affine"), dtype=np.float64).reshape(4, 4) if "affine" in attrs else np.eye(4)
    return KSpaceFile(kspace.astype(np.complex64), mask, rss, affine, attrs)


def read_reconstruction_rss(path: str | os.PathLike) -> np.ndarray | None:
    """Only the ``reconstruction_rss`` target [slices, H, W] of a fastMRI-layout file (None if absent),
    without loading the k-space (tens of MB per file)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return f["reconstruction_rss"][()].astype(np.float32) if "reconstruction_rss" in f else None
    except Exception as exc:
        raise InputImageError(f"{path}: cannot read HDF5 k-space ({type(exc).__name__}: {exc})") from exc


def write_kspace(path: str | os.PathLike, data: KSpaceFile) -> Path:
    """Write a :class:`KSpaceFile` in the fastMRI layout. Deterministic content for equal input."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", track_order=True) as f:
        f.create_dataset("kspace", data=data.kspace.astype(np.complex64), track_times=False)
        if data.reconstruction_rss is not None:
            f.create_dataset("reconstruction_rss", data=data.reconstruction_rss.astype(np.float32), track_times=False)
        if data.mask is not None:
            f.create_dataset("mask", data=data.mask.astype(np.float32), track_times=False)
        for key, value in sorted(data.attrs.items()):
            f.attrs[key] = value
        f.attrs["affine"] = np.asarray(data.affine, dtype=np.float64)
    return path


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.size == 1 and v.ndim == 0:
        return v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v
