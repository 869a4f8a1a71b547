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

Files from elsewhere are untrusted: what a header claims (voxel count x bytes per voxel, coils,
matrix size) is checked against what the file can hold and against :func:`max_image_bytes`
(``MRICHAIN_MAX_IMAGE_BYTES``, default 2 GiB) before anything is read. Every write goes through a
temporary file in the target's directory and ``os.replace`` (:func:`atomic_write`), so a killed
job leaves the previous file or none, never a truncated one.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from mrichain import UserError


class InputImageError(UserError, ValueError):
    """An input file is unreadable, has the wrong shape or holds non-finite values."""


MAX_IMAGE_BYTES_ENV = "MRICHAIN_MAX_IMAGE_BYTES"
"""Environment variable: the most bytes one image or k-space array may claim (an integer)."""
DEFAULT_MAX_IMAGE_BYTES = 2 * 1024 ** 3
"""2 GiB: a 0.5 mm isotropic head in float32 (~0.3 GiB) or a multi-coil fastMRI volume (~1 GiB)
fits; a header that claims more is refused unless ``MRICHAIN_MAX_IMAGE_BYTES`` allows it."""
GZIP_MAX_RATIO = 1032
"""The most bytes that one byte of DEFLATE data can expand to (zlib's documented limit, 1032:1)."""
PLAUSIBLE_VOXEL_MM = (0.1, 10.0)
"""Voxel sizes (mm) of a real MRI image; outside, the file is in other units (e.g. micrometres)
or its header is wrong."""
MAX_COILS = 128
"""Most receive coils a k-space file may claim (scanners have up to 64-128 channels)."""
MAX_MATRIX = 1024
"""Most k-space rows H, columns W, slices S, and header matrix size along any axis."""


def max_image_bytes() -> int:
    """The byte limit on what one image/k-space header may claim: ``MRICHAIN_MAX_IMAGE_BYTES`` if set
    (a positive integer), else :data:`DEFAULT_MAX_IMAGE_BYTES`. A malformed value is a UserError."""
    raw = os.environ.get(MAX_IMAGE_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{MAX_IMAGE_BYTES_ENV}={raw!r}: must be a positive integer number of bytes")
    return value


def check_claimed_bytes(path, nbytes: int, what: str) -> None:
    """Refuse (:class:`InputImageError` naming ``path``) when ``what`` claims more than
    :func:`max_image_bytes`."""
    limit = max_image_bytes()
    if nbytes > limit:
        raise InputImageError(f"{path}: {what} claims {nbytes} bytes, above the limit of {limit} bytes "
                              f"(set {MAX_IMAGE_BYTES_ENV} to allow more)")


def _data_capacity(path: Path, offset: int) -> int | None:
    """The most data bytes ``path`` can hold after ``offset`` (bytes into its uncompressed content);
    None when its compression is not one bounded here (only :func:`max_image_bytes` then applies).

    Uncompressed: file size - offset. gzip: the uncompressed size U is ISIZE (the trailer's size
    mod 2^32) + k 2^32 and at most :data:`GZIP_MAX_RATIO` x the file size, so the bound is the
    largest such value: exact for any single-member file under 4 GiB, never below the truth for
    larger ones. A file with an extra field (BGZF, bgzip's multi-member layout, whose trailer
    counts only the last member) is bounded by the ratio alone.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head[:2] != b"\x1f\x8b":
            if head[:3] == b"BZh" or head[:4] == b"\x28\xb5\x2f\xfd":  # bzip2, zstd
                return None
            return size - offset
        if size < 18:  # shorter than gzip's header + trailer: nothing inside
            return 0
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    most = GZIP_MAX_RATIO * size
    if head[3] & 0x04 or isize > most:  # FEXTRA (BGZF), or a trailer no DEFLATE stream can have
        total = most
    else:
        total = isize + (most - isize) // 2 ** 32 * 2 ** 32
    return total - offset


def _check_nifti_header(img, path: Path) -> None:
    """What ``img``'s header claims, checked before its voxels are read: the voxel count x bytes
    per voxel against what the file holds (:func:`_data_capacity`) and, as loaded (scaled data
    become float64), against :func:`max_image_bytes`."""
    proxy = img.dataobj
    if not nib.is_proxy(proxy):
        return
    shape = tuple(int(n) for n in proxy.shape)
    itemsize = np.dtype(proxy.dtype).itemsize
    nbytes = math.prod(shape) * itemsize
    holder = img.file_map.get("image")
    data_file = holder.filename if holder is not None else None
    capacity = _data_capacity(Path(data_file), int(getattr(proxy, "offset", 0))) if data_file else None
    if capacity is not None and nbytes > capacity:
        raise InputImageError(f"{path}: header claims {shape} voxels of {np.dtype(proxy.dtype)} ({nbytes} bytes) "
                              f"but the file holds at most {max(capacity, 0)} bytes of voxel data "
                              f"(truncated or corrupt)")
    scaled = (getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)) != (1.0, 0.0)
    check_claimed_bytes(path, math.prod(shape) * max(itemsize, 8 if scaled else 0), f"the image {shape}")


def check_voxel_mm(vox, path, what: str = "voxel size", voxel_mm_range=PLAUSIBLE_VOXEL_MM,
                   why: str = "a header in other units, e.g. micrometres, or a wrong affine") -> tuple[float, ...]:
    """``vox`` (voxel sizes in mm), refused by name (:class:`InputImageError` naming ``path`` and
    ``what``) when non-finite or outside ``voxel_mm_range`` (lo, hi) mm."""
    lo, hi = voxel_mm_range
    vox = tuple(float(v) for v in vox)
    if not all(lo <= v <= hi for v in vox):  # NaN fails every comparison
        shown = ", ".join(f"{v:g}" for v in vox)
        raise InputImageError(f"{path}: {what} ({shown}) mm is outside the plausible range {lo:g}-{hi:g} mm ({why})")
    return vox


def check_voxel_sizes(affine: np.ndarray, path, voxel_mm_range=PLAUSIBLE_VOXEL_MM) -> tuple[float, float, float]:
    """The voxel sizes (mm, of the first three axes, from the 4x4 ``affine``), checked by
    :func:`check_voxel_mm`."""
    aff = np.asarray(affine, dtype=np.float64)
    vox = nib.affines.voxel_sizes(aff)[:3] if np.all(np.isfinite(aff)) else (np.nan,) * 3
    return check_voxel_mm(vox, path, voxel_mm_range=voxel_mm_range)


def load_image(path: str | os.PathLike, *, ndim: int = 3, voxel_mm_range: tuple[float, float] | None = None
               ) -> nib.Nifti1Image:
    """Load a NIfTI image and check it is usable: readable, ``ndim``-D, finite.

    A 4-D file whose last axis has length 1 is squeezed to 3-D. Raises :class:`InputImageError`
    with the path in the message for a corrupt file, a header that claims more voxel bytes than
    the file holds or than :func:`max_image_bytes` (checked before any voxel is read), a wrong
    number of dimensions, or NaN/inf. ``voxel_mm_range`` (lo, hi) in mm, e.g.
    :data:`PLAUSIBLE_VOXEL_MM` for real inputs, also refuses voxel sizes outside it (before reading).
    The returned image holds its data in memory (``img.get_fdata`` is safe after the file moves);
    ``img.get_filename()`` is ``path``, for messages about it further on.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for truncated/corrupt files
        raise InputImageError(f"{path}: cannot read NIfTI image ({type(exc).__name__}: {exc})") from exc
    _check_nifti_header(img, path)
    if voxel_mm_range is not None:
        check_voxel_sizes(img.affine, path, voxel_mm_range)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
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
    out.set_filename(str(path))  # in memory; the name is for messages (``img.get_filename()``)
    return out


def check_volume(img: nib.Nifti1Image, path, *, min_size: int = 2,
                 voxel_mm_range: tuple[float, float] | None = PLAUSIBLE_VOXEL_MM) -> nib.Nifti1Image:
    """``img`` ([X, Y, Z]) if a 3-D stage (denoise, segment, register) can work on it, else
    :class:`InputImageError` naming ``path``: fewer than ``min_size`` voxels along an axis (a single
    slice), no nonzero voxel, one value everywhere, or (``voxel_mm_range``) implausible voxel sizes."""
    shape = tuple(int(n) for n in img.shape)
    if len(shape) != 3 or min(shape) < min_size:
        raise InputImageError(f"{path}: a 3-D stage needs at least {min_size} voxels along each axis, "
                              f"got shape {shape}")
    data = np.asanyarray(img.dataobj)
    if not np.any(data):
        raise InputImageError(f"{path}: the image is all zero (nothing to process)")
    lo, hi = np.min(data), np.max(data)
    if lo == hi:
        raise InputImageError(f"{path}: the image is constant (every voxel is {lo:g}; nothing to process)")
    if voxel_mm_range is not None:
        check_voxel_sizes(img.affine, path, voxel_mm_range)
    return img


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


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Write ``path`` atomically: yields a new temporary path in the same directory (same file name
    after a hidden ``.<random>.`` prefix, so format-by-extension writers work), moved onto ``path``
    with ``os.replace`` when the block ends, removed if it raises. Readers of ``path`` see the old
    file or the new one, never a partial one; the file mode follows the umask as ``open`` would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{secrets.token_hex(6)}.{path.name}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_image(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike, *, dtype=np.float32) -> Path:
    """Write ``data`` ([X, Y, Z], or [X, Y, Z, ...]) as NIfTI with ``affine`` (RAS+ mm), atomically.

    The header is written deterministically (no timestamps) so the same array gives the same bytes.
    """
    path = Path(path)
    img = nifti_image(data, affine, dtype=dtype)
    with atomic_write(path) as tmp:
        # gzip embeds a modification time and a name; write through a fixed stream for byte identity.
        if str(path).endswith(".gz"):
            raw = img.to_bytes()
            with open(tmp, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
                gz.write(raw)
        else:
            nib.save(img, str(tmp))
    return path


def load_json(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return json.load(fh)


def load_json_object(path, what: str, error: type[Exception] = UserError) -> dict:
    """A JSON file that must hold an object (a model or tuning card, a manifest): ``error`` (a
    :class:`mrichain.UserError` subclass), naming the file and ``what`` it should be, when it
    cannot be read, is not JSON or holds something else."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot read the {what} ({exc})") from None
    if not isinstance(obj, dict):
        raise error(f"{path}: a {what} is a JSON object, got {type(obj).__name__}")
    return obj


def save_json(obj, path: str | os.PathLike) -> Path:
    """Write strict JSON with sorted keys and a trailing newline (stable bytes), atomically.

    Non-finite floats (a PSNR of identical images is +inf) become ``null``: JSON has no infinity.
    """
    path = Path(path)
    with atomic_write(path) as tmp, open(tmp, "w") as fh:
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


def _check_stored(dset: h5py.Dataset, path, name: str) -> int:
    """The bytes ``dset`` claims, refused when the file stores none of them (every value would be
    the fill value) or, for unfiltered (uncompressed) data, fewer than it claims."""
    nbytes = int(dset.size) * dset.dtype.itemsize
    stored = int(dset.id.get_storage_size())
    if nbytes and stored == 0:
        raise InputImageError(f"{path}: {name} {tuple(dset.shape)} has no data stored (every value would be "
                              "the fill value)")
    if stored < nbytes and dset.id.get_create_plist().get_nfilters() == 0:
        raise InputImageError(f"{path}: {name} {tuple(dset.shape)} claims {nbytes} bytes but the file stores "
                              f"{stored} (truncated or corrupt)")
    return nbytes


def _check_axes(path, name: str, shape: tuple[int, ...], axes: tuple[tuple[str, int], ...]) -> None:
    for n, (axis, most) in zip(shape, axes):
        if not 1 <= n <= most:
            raise InputImageError(f"{path}: {name} {shape} claims {n} {axis}; allowed 1-{most}")


KSPACE_AXES = (("slices", MAX_MATRIX), ("coils", MAX_COILS), ("rows", MAX_MATRIX), ("columns", MAX_MATRIX))
"""The axes of ``kspace`` [S, C, H, W] and the most each may claim."""


def check_kspace_dataset(dset, path) -> tuple[int, int, int, int]:
    """(slices, coils, H, W) of a ``kspace`` HDF5 dataset (single-coil [S, H, W]: coils = 1),
    checked before it is read: complex, 3-D or 4-D, each axis within :data:`KSPACE_AXES`, its bytes
    stored in the file (:class:`InputImageError` naming ``path`` and the axis otherwise). The total
    against :func:`max_image_bytes` is the reader's check (a slice-by-slice reader holds less)."""
    if not isinstance(dset, h5py.Dataset):
        raise InputImageError(f"{path}: no 'kspace' dataset (fastMRI layout expected)")
    if dset.dtype.kind != "c":
        raise InputImageError(f"{path}: kspace must be complex, got {dset.dtype}")
    if dset.ndim == 3:
        shape = (int(dset.shape[0]), 1, *(int(n) for n in dset.shape[1:]))
    elif dset.ndim == 4:
        shape = tuple(int(n) for n in dset.shape)
    else:
        raise InputImageError(f"{path}: kspace must be [slices, coils, H, W] or [slices, H, W], got shape {dset.shape}")
    _check_axes(path, "kspace", shape, KSPACE_AXES)
    _check_stored(dset, path, "kspace")
    return shape


def check_image_dataset(dset, path, name: str = "reconstruction_rss") -> tuple[int, int, int]:
    """(slices, h, w) of a real-valued [S, h, w] HDF5 dataset (the fastMRI target), checked before it
    is read as float32: axes within :data:`MAX_MATRIX`, bytes stored, and :func:`max_image_bytes`."""
    if not isinstance(dset, h5py.Dataset) or dset.dtype.kind not in "fiub":
        raise InputImageError(f"{path}: {name} must be a real-valued dataset")
    if dset.ndim != 3:
        raise InputImageError(f"{path}: {name} must be [slices, h, w], got shape {dset.shape}")
    shape = tuple(int(n) for n in dset.shape)
    _check_axes(path, name, shape, (("slices", MAX_MATRIX), ("rows", MAX_MATRIX), ("columns", MAX_MATRIX)))
    _check_stored(dset, path, name)
    check_claimed_bytes(path, math.prod(shape) * max(dset.dtype.itemsize, 4), f"{name} {shape}")
    return shape


def check_mask_dataset(dset, path) -> int:
    """The number of values of a ``mask`` dataset ([W], any layout), at most :data:`MAX_MATRIX`,
    stored in the file; checked before it is read."""
    if not isinstance(dset, h5py.Dataset):
        raise InputImageError(f"{path}: 'mask' is not a dataset")
    if not 1 <= dset.size <= MAX_MATRIX:
        raise InputImageError(f"{path}: mask {tuple(dset.shape)} claims {dset.size} values; allowed 1-{MAX_MATRIX}")
    _check_stored(dset, path, "mask")
    return int(dset.size)


@dataclass
class KSpaceFile:
    """The content of a fastMRI-layout HDF5 file.

    kspace: complex64 [slices, coils, H, W]; mask: float32 [W] or None (fully sampled);
    reconstruction_rss: float32 [slices, H, W] or None; affine: 4x4 mapping (H, W, slice)
    voxel indices to RAS mm; attrs: the remaining HDF5 attributes. Simulated motion only (our
    files; :mod:`mrichain.simulate.motion`): motion_shot int32 [W], the shot that acquired each
    phase-encode line, and motion_poses float64 [n_shots, 4], each shot's true pose
    (rotation in degrees, x, y, z translation in mm); None for a still acquisition.
    """

    kspace: np.ndarray
    mask: np.ndarray | None = None
    reconstruction_rss: np.ndarray | None = None
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    attrs: dict = field(default_factory=dict)
    motion_shot: np.ndarray | None = None
    motion_poses: np.ndarray | None = None


def read_kspace(path: str | os.PathLike) -> KSpaceFile:
    """Read a fastMRI-layout HDF5 file (ours or fastMRI's own), validating shape and values."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "kspace" not in f:
                raise InputImageError(f"{path}: no 'kspace' dataset (fastMRI layout expected)")
            shape = check_kspace_dataset(f["kspace"], path)
            check_claimed_bytes(path, math.prod(shape) * max(f["kspace"].dtype.itemsize, 8), f"kspace {shape}")
            if "mask" in f:
                check_mask_dataset(f["mask"], path)
            if "reconstruction_rss" in f:
                check_image_dataset(f["reconstruction_rss"], path)
            kspace = f["kspace"][()]
            mask = f["mask"][()].astype(np.float32) if "mask" in f else None
            rss = f["reconstruction_rss"][()].astype(np.float32) if "reconstruction_rss" in f else None
            motion_shot, motion_poses = _read_motion(f, shape[-1], path)
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
    return KSpaceFile(kspace.astype(np.complex64), mask, rss, affine, attrs, motion_shot, motion_poses)


def _read_motion(f, width: int, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The motion datasets of an open k-space file (both or neither), checked against the k-space
    width before they are read: ``motion_shot`` [W] shot indices, ``motion_poses`` [n_shots, 4]."""
    if "motion_shot" not in f and "motion_poses" not in f:
        return None, None
    if "motion_shot" not in f or "motion_poses" not in f:
        raise InputImageError(f"{path}: motion_shot and motion_poses must come together")
    shot_ds, pose_ds = f["motion_shot"], f["motion_poses"]
    if shot_ds.shape != (width,) or pose_ds.ndim != 2 or pose_ds.shape[1] != 4 or not 1 <= pose_ds.shape[0] <= width:
        raise InputImageError(f"{path}: motion_shot must be [{width}] and motion_poses [n_shots <= {width}, 4], "
                              f"got {shot_ds.shape} and {pose_ds.shape}")
    shot = shot_ds[()].astype(np.int64)
    poses = pose_ds[()].astype(np.float64)
    if shot.min() < 0 or shot.max() >= len(poses) or not np.all(np.isfinite(poses)):
        raise InputImageError(f"{path}: motion_shot indexes no pose of motion_poses, or a pose is not finite")
    return shot.astype(np.int32), poses


def read_reconstruction_rss(path: str | os.PathLike) -> np.ndarray | None:
    """Only the ``reconstruction_rss`` target [slices, H, W] of a fastMRI-layout file (None if absent),
    without loading the k-space (tens of MB per file); its size is checked before it is read."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "reconstruction_rss" not in f:
                return None
            check_image_dataset(f["reconstruction_rss"], path)
            return f["reconstruction_rss"][()].astype(np.float32)
    except InputImageError:
        raise
    except Exception as exc:
        raise InputImageError(f"{path}: cannot read HDF5 k-space ({type(exc).__name__}: {exc})") from exc


def write_kspace(path: str | os.PathLike, data: KSpaceFile) -> Path:
    """Write a :class:`KSpaceFile` in the fastMRI layout, atomically. Deterministic bytes for equal input."""
    path = Path(path)
    with atomic_write(path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        f.create_dataset("kspace", data=data.kspace.astype(np.complex64), track_times=False)
        if data.reconstruction_rss is not None:
            f.create_dataset("reconstruction_rss", data=data.reconstruction_rss.astype(np.float32), track_times=False)
        if data.mask is not None:
            f.create_dataset("mask", data=data.mask.astype(np.float32), track_times=False)
        if data.motion_shot is not None:
            f.create_dataset("motion_shot", data=np.asarray(data.motion_shot, np.int32), track_times=False)
            f.create_dataset("motion_poses", data=np.asarray(data.motion_poses, np.float64), track_times=False)
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
