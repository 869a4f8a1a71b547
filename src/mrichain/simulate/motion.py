"""Rigid subject motion during a Cartesian acquisition, simulated in k-space per coil.

The acquisition (:mod:`mrichain.simulate.acquire`) reads axial slices: k-space [Z, C, X, Y] with
the read-out along X (fully sampled within each line) and the phase encode along Y. The W = Y
phase-encode lines are acquired in *shots* (segments): every line of a shot is acquired while the
head sits at that shot's *pose*. A pose is a rigid motion of the head relative to the scanner:

- ``rotation_deg``: in-plane rotation about the slice normal through the centre of the field of
  view (positive: from the read-out axis X towards the phase-encode axis Y, in array order);
- ``x_mm``, ``y_mm``: in-plane translation along the read-out (X) and the phase encode (Y);
- ``z_mm``: through-plane translation along Z (the slices cut the head at other heights).

The head at a pose is ``m_p(r) = m(R^-1 (r - c - t) + c)`` (c the centre of the field of view,
R the rotation, t the translation). The rotation and the through-plane shift resample the object
(cubic spline, :func:`scipy.ndimage.affine_transform`); the in-plane translation is the linear
phase ``exp(-2 pi i k.t)`` of the object's 2-D spectrum, exact for any sub-voxel shift. The coil
sensitivities stay fixed to the scanner (a receive array does not move with the head): each
pose's coil images are ``S_c * m_p``, and a shot's lines are taken from that pose's k-space. With
every shot at rest the k-space is bit for bit that of the still head (nothing is resampled).

Why written here rather than taken from TorchIO: TorchIO's ``Motion`` (Shaw et al., MIDL 2019)
corrupts one magnitude volume: it resamples the whole volume per pose and stitches the 3-D spectra
along the last array axis in contiguous blocks, with the original pose moved to the block holding
the centre. It has no coil sensitivities, no complex signal, no per-slice 2-D acquisition, no
interleaved ordering and no record of which line was acquired at which pose: the ground truth a
motion detector is scored against. Where both apply (one uniform coil, contiguous blocks, the same
poses) the two agree: ``tests/test_motion.py`` compares them.
"""
from __future__ import annotations

from dataclasses import dataclass

import zlib

import numpy as np
from scipy import ndimage

from mrichain.fft import fft2c
from mrichain.plan.cohort import make_rng, subject_index
from mrichain.plan.config import check_motion_level

POSE_KEYS = ("rotation_deg", "x_mm", "y_mm", "z_mm")
"""The columns of a pose (:attr:`MotionTrajectory.poses`)."""

ORDERINGS = ("sequential", "interleaved")
"""How phase-encode lines are grouped into shots (:func:`shot_of_line`)."""


@dataclass(frozen=True)
class MotionTrajectory:
    """Which pose each phase-encode line was acquired at.

    shot: int [W], the shot that acquired each phase-encode line (0 .. n_shots - 1, in time order);
    poses: float64 [n_shots, 4], each shot's pose (:data:`POSE_KEYS`: degrees, mm, mm, mm); shot 0
    is at rest (all zeros) unless the trajectory was built otherwise.
    """

    shot: np.ndarray
    poses: np.ndarray

    def __post_init__(self):
        if self.poses.ndim != 2 or self.poses.shape[1] != len(POSE_KEYS):
            raise ValueError(f"poses must be [n_shots, {len(POSE_KEYS)}], got {self.poses.shape}")
        if self.shot.ndim != 1 or self.shot.min() < 0 or self.shot.max() >= len(self.poses):
            raise ValueError("shot must be [W] with values in 0 .. n_shots - 1")

    @property
    def corrupted(self) -> np.ndarray:
        """bool [W]: lines acquired away from the rest pose (shot 0's pose, the reference)."""
        return np.any(self.poses[self.shot] != self.poses[0], axis=1)

    @property
    def still(self) -> bool:
        return not np.any(self.poses)


def shot_of_line(width: int, n_shots: int, ordering: str, acquired: np.ndarray | None = None) -> np.ndarray:
    """int [width]: the shot that acquires each phase-encode line.

    ``sequential``: contiguous blocks from the first line to the last (a linear-order segmented
    acquisition: a late movement corrupts one edge of k-space); ``interleaved``: line i in shot
    i mod n_shots (each shot spans all of k-space: a movement anywhere corrupts every n-th line,
    the classic ghosting pattern). acquired: bool [width], the lines the sequence plays (an
    undersampled scan plays only those, and its shots divide them; None: all); a line not played
    gets the shot of the played line before it (the first played line's at the edge): it carries
    no data.
    """
    played = np.arange(width) if acquired is None else np.flatnonzero(np.asarray(acquired).reshape(-1))
    if not 1 <= n_shots <= len(played):
        raise ValueError(f"n_shots must be in 1 .. {len(played)} (the lines acquired), got {n_shots}")
    rank = np.arange(len(played))
    if ordering == "sequential":
        shots = (rank * n_shots) // len(played)
    elif ordering == "interleaved":
        shots = rank % n_shots
    else:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    before = np.clip(np.searchsorted(played, np.arange(width), side="right") - 1, 0, None)
    return shots[before].astype(np.int64)


def lines_per_shot(shot: np.ndarray, mask: np.ndarray | None, n_shots: int) -> np.ndarray:
    """int [n_shots]: how many acquired lines each shot holds (``shot`` [W] as :func:`shot_of_line`,
    ``mask`` [W] the acquired lines, None: all)."""
    shot = np.asarray(shot).reshape(-1)
    acquired = np.ones(len(shot), bool) if mask is None else np.asarray(mask).reshape(-1) > 0
    return np.bincount(shot[acquired], minlength=n_shots)


def draw_trajectory(width: int, level: dict, n_shots: int, ordering: str,
                    rng: np.random.Generator, acquired: np.ndarray | None = None) -> MotionTrajectory:
    """A random trajectory at one severity ``level``.

    level: ``{"rotation_deg": r, "translation_mm": t, "through_plane_mm": z (optional, default 0),
    "movements": n}``. The head rests except during ``n`` distinct shots (drawn among shots
    1 .. n_shots - 1), each at its own pose, every coordinate uniform in [-r, r] degrees, [-t, t] mm
    in-plane, [-z, z] mm through-plane: transient movements (a swallow, a cough, a twitch), after
    which the head returns to rest. So the rest pose holds most of the lines (``n`` below half the
    shots: :func:`mrichain.plan.config.check_motion_level`), and the noise-free still head is the image every corrected
    reconstruction is scored against; a lasting drift would move that reference itself.
    ``movements: 0`` or all ranges 0 is a still head. acquired: the lines played
    (:func:`shot_of_line`); the poses drawn do not depend on it.
    """
    check_motion_level(level, n_shots)
    shot = shot_of_line(width, n_shots, ordering, acquired)
    poses = np.zeros((n_shots, len(POSE_KEYS)))
    n_moves = int(level.get("movements", 0))
    if n_moves == 0:
        return MotionTrajectory(shot, poses)
    moved = np.sort(rng.choice(np.arange(1, n_shots), size=n_moves, replace=False))
    half = np.array([level.get("rotation_deg", 0.0), level.get("translation_mm", 0.0),
                     level.get("translation_mm", 0.0), level.get("through_plane_mm", 0.0)], dtype=np.float64)
    for s in moved:
        poses[s] = rng.uniform(-1.0, 1.0, len(POSE_KEYS)) * half
    return MotionTrajectory(shot, poses)


def subject_trajectory(cfg: dict, sub_id: str, level: str, width: int,
                       acquired: np.ndarray | None = None) -> MotionTrajectory:
    """The trajectory of subject ``sub_id`` at motion ``level`` of ``cfg['acquire']['motion']``
    (``shots``, ``ordering``, ``levels: {name: {...}}``, :func:`draw_trajectory`), for ``width``
    phase-encode lines of which ``acquired`` (bool [width], None: all) are played. Seeded by
    (seed, subject, level name) only: every acceleration of a subject records the same movement
    (the same poses, shot by shot, in time; an undersampled scan's shots hold fewer lines), and
    adding a level or a subject changes no other trajectory."""
    mcfg = cfg["acquire"].get("motion")
    if mcfg is None:
        raise ValueError(f"motion level {level!r} asked for, but the config has no acquire.motion")
    if level not in mcfg["levels"]:
        raise ValueError(f"acquire.motion.levels has no level {level!r}; levels: {sorted(mcfg['levels'])}")
    rng = make_rng(cfg["seed"], subject_index(sub_id), "motion", zlib.crc32(level.encode()))
    return draw_trajectory(width, mcfg["levels"][level], int(mcfg["shots"]), mcfg["ordering"], rng, acquired)


def move_object(image: np.ndarray, pose: np.ndarray, voxel_mm: tuple[float, float, float]) -> np.ndarray:
    """The object [X, Y, Z] (real or complex) at ``pose`` (:data:`POSE_KEYS`), as the scanner sees it.

    Rotation about z through the array centre ((N - 1) / 2 in x and y) and the through-plane shift
    by cubic-spline resampling (outside the array: 0); the in-plane translation as the linear phase
    of each slice's 2-D spectrum (:func:`scipy.ndimage.fourier_shift`: exact, periodic in the
    field of view). voxel_mm: the
    voxel size along (X, Y, Z) in mm. Returns complex128 [X, Y, Z].
    """
    rot, tx, ty, tz = (float(v) for v in pose)
    out = np.asarray(image)
    if rot != 0.0 or tz != 0.0:
        th = np.deg2rad(rot)
        # output voxel o reads input R^-1 (o - c - t) + c; the in-plane axes have unequal voxel sizes
        # in general, so the rotation acts in mm: R^-1 in voxels = D^-1 R^-1 D
        d = np.array(voxel_mm[:2], dtype=np.float64)
        r_inv = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
        m = np.eye(3)
        m[:2, :2] = (r_inv * d[None, :]) / d[:, None]
        c = (np.array(out.shape, dtype=np.float64) - 1) / 2
        offset = c - m @ (c + np.array([0.0, 0.0, tz / float(voxel_mm[2])]))
        out = ndimage.affine_transform(out, m, offset=offset, order=3, mode="grid-constant", cval=0.0)
    if tx != 0.0 or ty != 0.0:
        spectrum = np.fft.fft2(np.moveaxis(out, 2, 0), axes=(-2, -1))  # [Z, X, Y]
        spectrum = ndimage.fourier_shift(spectrum, (0.0, tx / voxel_mm[0], ty / voxel_mm[1]))
        out = np.moveaxis(np.fft.ifft2(spectrum, axes=(-2, -1)), 0, 2)
    return out.astype(np.complex128)


def coil_kspace(image: np.ndarray, sens: np.ndarray) -> np.ndarray:
    """Fully sampled multi-coil k-space [Z, C, X, Y] complex64 of ``image`` [X, Y, Z] (real or
    complex) seen through ``sens`` [C, X, Y, Z]: each axial slice's coil images ``S_c * m``,
    centred orthonormal 2-D FFT over (X, Y)."""
    return fft2c((sens * image[None].astype(np.complex64)).transpose(3, 0, 1, 2)).astype(np.complex64)


def corrupt_kspace(image: np.ndarray, sens: np.ndarray, trajectory: MotionTrajectory,
                   voxel_mm: tuple[float, float, float]) -> np.ndarray:
    """Fully sampled multi-coil k-space [Z, C, X, Y] complex64 of ``image`` [X, Y, Z] moving along
    ``trajectory`` inside coils ``sens`` [C, X, Y, Z] fixed to the scanner.

    One coil k-space per distinct pose (:func:`coil_kspace` of the moved head); each phase-encode
    line is taken from its shot's pose. A still trajectory returns exactly :func:`coil_kspace` of
    the still head.
    """
    still = np.asarray(image)
    out = None
    poses, which = np.unique(trajectory.poses, axis=0, return_inverse=True)
    which = np.asarray(which).reshape(-1)
    for p, pose in enumerate(poses):
        lines = np.isin(trajectory.shot, np.flatnonzero(which == p))
        if not lines.any():
            continue
        obj = still if not np.any(pose) else move_object(still, pose, voxel_mm)
        k = coil_kspace(obj, sens)
        if out is None:
            out = np.zeros_like(k)
        out[..., lines] = k[..., lines]
    return out
