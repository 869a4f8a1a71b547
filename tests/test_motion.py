"""Rigid motion in the simulated acquisition (mrichain.simulate.motion): the physics against
independent references (np.roll, np.rot90, the Fourier shift theorem, TorchIO's Motion), the
trajectories, the acquisition with and without motion; and its detection from k-space alone
(mrichain.motion.consistency)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from mrichain.fft import fft2c, ifft2c
from mrichain.io import read_kspace, write_kspace
from mrichain.motion.consistency import scored_slices, shot_residuals, shot_scores
from mrichain.recon.cs import coil_maps
from mrichain.simulate import build_template, simulate_subject, write_subject
from mrichain.simulate.acquire import simulate_acquisition
from mrichain.simulate.coils import sensitivity_maps
from mrichain.simulate.motion import (ORDERINGS, MotionTrajectory, corrupt_kspace, draw_trajectory, move_object,
                                      shot_of_line, subject_trajectory)

from dag import ROOT, moving_config

SUB = "sub-001"
MOTION = {"shots": 8, "ordering": "sequential",
          "levels": {"none": {"movements": 0},
                     "severe": {"rotation_deg": 5.0, "translation_mm": 3.0, "through_plane_mm": 1.0, "movements": 2}}}


def _phantom(shape=(40, 40, 6), seed=0, n=6, sigma=(2.5, 5.0)) -> np.ndarray:
    """A positive object well inside the field of view: ``n`` Gaussian blobs of SD in ``sigma``
    voxels, centred in the middle half of each axis (near 0 at the edges)."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.arange(k, dtype=np.float64) for k in shape], indexing="ij")
    out = np.zeros(shape)
    for _ in range(n):
        c = [rng.uniform(0.25 * k, 0.75 * k) for k in shape]
        s = rng.uniform(*sigma)
        out += rng.uniform(0.5, 1.0) * np.exp(-sum((gi - ci) ** 2 for gi, ci in zip(g, c)) / (2 * s * s))
    return out


def _two_shot(width: int, start: int, pose) -> MotionTrajectory:
    """Lines before ``start`` at rest, the rest at ``pose``."""
    return MotionTrajectory((np.arange(width) >= start).astype(np.int64), np.array([[0.0] * 4, list(pose)]))


def test_integer_translation_is_a_circular_shift():
    m = _phantom()
    moved = move_object(m, np.array([0.0, 2 * 1.5, -3 * 2.0, 0.0]), (1.5, 2.0, 3.0))
    np.testing.assert_allclose(moved.real, np.roll(m, (2, -3), axis=(0, 1)), atol=1e-12)
    assert np.abs(moved.imag).max() < 1e-12


def test_translation_is_the_linear_phase_of_the_spectrum():
    """One uniform coil: the lines of a translated shot are the still spectrum times exp(-2 pi i k.t)."""
    m = _phantom()
    x, y, vox = 40, 40, (1.0, 1.25, 2.0)
    t = (1.3, -0.7)  # mm, sub-voxel
    traj = _two_shot(y, 18, (0.0, t[0], t[1], 0.0))  # the moved block holds the centre line (20)
    k = corrupt_kspace(m, np.ones((1, *m.shape), np.complex64), traj, vox)[:, 0]  # [Z, X, Y]
    still = fft2c(np.moveaxis(m, 2, 0))
    kx = (np.arange(x) - x // 2) / x
    ky = (np.arange(y) - y // 2) / y
    ramp = np.exp(-2j * np.pi * (kx[:, None] * t[0] / vox[0] + ky[None, :] * t[1] / vox[1]))
    scale = np.abs(still).max()
    np.testing.assert_allclose(k[..., :18], still[..., :18], atol=1e-6 * scale)
    np.testing.assert_allclose(k[..., 18:], (still * ramp)[..., 18:], atol=1e-6 * scale)
    assert np.abs(k[..., 18:] - still[..., 18:]).max() > 0.1 * scale  # the shift is not negligible


def test_rotation_is_the_spectrum_of_the_rotated_object():
    """90 degrees from X towards Y on a square grid is np.rot90 (exact grid points): every coil's
    k-space equals that of the rotated object inside the fixed coils."""
    m = _phantom((32, 32, 4))
    rng = np.random.default_rng(1)
    sens = (rng.standard_normal((3, 32, 32, 4)) + 1j * rng.standard_normal((3, 32, 32, 4))).astype(np.complex64)
    traj = MotionTrajectory(np.zeros(32, np.int64), np.array([[90.0, 0.0, 0.0, 0.0]]))
    k = corrupt_kspace(m, sens, traj, (2.0, 2.0, 2.0))
    rotated = np.rot90(m, 1, axes=(0, 1))
    expected = fft2c((sens * rotated[None]).transpose(3, 0, 1, 2))
    np.testing.assert_allclose(k, expected, atol=1e-5 * np.abs(expected).max())
    # and the coils did not rotate with the head: rotating the coil images instead differs
    wrong = fft2c(np.rot90(sens * m[None], 1, axes=(1, 2)).transpose(3, 0, 1, 2))
    assert np.abs(k - wrong).max() > 0.1 * np.abs(expected).max()


def test_anisotropic_rotation_acts_in_millimetres():
    """A rotation on a grid with 1 x 2 mm voxels keeps distances in mm: a point 8 mm along X moves
    to 8 mm along Y (4 voxels), not 8 voxels."""
    m = np.zeros((33, 33, 1))
    m[16 + 8, 16, 0] = 1.0  # 8 voxels = 8 mm along X from the centre (16, 16)
    moved = move_object(m, np.array([90.0, 0.0, 0.0, 0.0]), (1.0, 2.0, 2.0)).real[..., 0]
    assert np.unravel_index(np.argmax(moved), moved.shape) == (16, 16 + 4)


def test_shot_orderings():
    np.testing.assert_array_equal(shot_of_line(8, 4, "sequential"), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(shot_of_line(8, 4, "interleaved"), [0, 1, 2, 3, 0, 1, 2, 3])
    assert np.bincount(shot_of_line(99, 8, "sequential")).tolist() == [13, 12, 13, 12, 12, 13, 12, 12]
    with pytest.raises(ValueError, match="ordering"):
        shot_of_line(8, 4, "radial")
    from mrichain.plan.config import load_schema

    schema = load_schema()["properties"]["acquire"]["properties"]["motion"]["properties"]
    assert schema["ordering"]["enum"] == list(ORDERINGS)  # the config accepts what the simulator draws


def test_trajectory_draws_within_the_level():
    rng = np.random.default_rng(3)
    level = MOTION["levels"]["severe"]
    traj = draw_trajectory(99, level, 8, "sequential", rng)
    assert not np.any(traj.poses[0])
    assert np.all(np.abs(traj.poses[:, 0]) <= 5.0) and np.all(np.abs(traj.poses[:, 1:3]) <= 3.0)
    assert np.all(np.abs(traj.poses[:, 3]) <= 1.0)
    assert np.count_nonzero(np.any(traj.poses, axis=1)) == 2  # two shots away from rest, then back
    assert traj.corrupted.any() and traj.corrupted.mean() < 0.5
    assert draw_trajectory(99, {"movements": 0}, 8, "sequential", rng).still
    with pytest.raises(ValueError, match="below half of the shots"):
        draw_trajectory(99, {"movements": 4, "rotation_deg": 1.0}, 8, "sequential", rng)


def test_subject_trajectory_is_seeded_by_subject_and_level():
    cfg = {"seed": 7, "acquire": {"motion": MOTION}}
    a = subject_trajectory(cfg, "sub-001", "severe", 64)
    np.testing.assert_array_equal(a.poses, subject_trajectory(cfg, "sub-001", "severe", 64).poses)
    assert not np.array_equal(a.poses, subject_trajectory(cfg, "sub-002", "severe", 64).poses)
    more = copy.deepcopy(cfg)
    more["acquire"]["motion"]["levels"]["mild"] = {"rotation_deg": 1.0, "translation_mm": 0.5, "movements": 1}
    np.testing.assert_array_equal(a.poses, subject_trajectory(more, "sub-001", "severe", 64).poses)
    with pytest.raises(ValueError, match="no level 'extreme'"):
        subject_trajectory(cfg, "sub-001", "extreme", 64)
    with pytest.raises(ValueError, match="no acquire.motion"):
        subject_trajectory({"seed": 7, "acquire": {}}, "sub-001", "severe", 64)


@pytest.mark.parametrize("change, key", [
    ({"ordering": "radial"}, "acquire.motion.ordering"),
    ({"shots": 1}, "acquire.motion.shots"),
    ({"levels": {"Severe": {"movements": 1}}}, "acquire.motion.levels"),
    ({"levels": {"severe": {"movements": 1, "rotation_deg": -2.0}}}, "acquire.motion.levels.severe.rotation_deg"),
    ({"levels": {"severe": {"movements": 4}}}, "acquire.motion.levels.severe.movements"),
])
def test_config_refuses_a_bad_motion_section(change, key):
    from mrichain.plan.config import ConfigError, load_config, validate_config

    cfg = load_config(ROOT / "config" / "test.yaml")
    cfg["acquire"]["motion"] = copy.deepcopy(MOTION)
    validate_config(copy.deepcopy(cfg))
    cfg["acquire"]["motion"].update(change)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg)


def test_matches_torchio_motion_on_one_uniform_coil():
    """Where both models apply (one uniform coil, a real object, one movement, contiguous blocks
    of phase-encode lines, the still pose filling the block with the centre of k-space) the real
    part of our corrupted image equals TorchIO's Motion with cubic B-spline resampling.

    Axes: TorchIO stitches along its array's last axis; we give it our volume [X, Y, Z] as
    [X, Z, Y], so its last axis is our phase encode. TorchIO rotates about the physical origin
    (its rigid transform drops the centre it was built with), so the affine puts the origin at the
    array centre, our rotation centre. In SimpleITK's LPS frame x = -X, y = -Z, z = Y, and the
    output at p is read from the input at T(p): the head moves by T^-1. Our rotation of theta from
    X towards Y is then TorchIO's rotation R of -theta about y. Our translation t (mm, applied after
    the rotation) is (-tx, -tz, ty) in LPS; TorchIO's head moves by T^-1(q) = R^-1 (q - t'), so
    t' = -R t_LPS. Integer-millimetre translations, where spline resampling and our linear phase
    are both exact."""
    tio = pytest.importorskip("torchio")
    import SimpleITK as sitk
    m = _phantom((48, 48, 12), seed=2, n=25, sigma=(1.5, 3.0))
    x, y, z = m.shape
    rot, tx, ty, tz = 4.0, 1.0, -2.0, 1.0
    time = 0.4  # lines before 0.4 W at the moved pose, the rest (with the centre) still
    traj = MotionTrajectory((np.arange(y) >= int(time * y)).astype(np.int64),
                            np.array([[rot, tx, ty, tz], [0.0] * 4]))
    ours = ifft2c(corrupt_kspace(m, np.ones((1, *m.shape), np.complex64), traj, (1.0, 1.0, 1.0))[:, 0])
    ours = np.moveaxis(ours.real, 0, 2)  # [X, Y, Z]
    affine = np.eye(4)
    affine[:3, 3] = -(np.array([x, z, y]) - 1) / 2
    euler = sitk.Euler3DTransform()
    euler.SetRotation(0.0, np.deg2rad(-rot), 0.0)
    t_tio = -np.array(euler.GetMatrix()).reshape(3, 3) @ np.array([-tx, -tz, ty])
    motion = tio.Motion(degrees=np.array([[0.0, -rot, 0.0]]), translation=t_tio[None],
                        times=np.array([time]), image_interpolation="bspline")
    image = tio.ScalarImage(tensor=m.transpose(0, 2, 1)[None].astype(np.float32), affine=affine)
    theirs = motion(image).data[0].numpy().astype(np.float64).transpose(0, 2, 1)  # back to [X, Y, Z]
    artifact = np.linalg.norm(theirs - m)
    assert artifact > 0.05 * np.linalg.norm(m)  # the movement is visible
    assert np.linalg.norm(ours - theirs) < 1e-3 * artifact


@pytest.fixture(scope="module")
def acquisition_cfg():
    return moving_config(MOTION)


@pytest.fixture(scope="module")
def gt_dir(acquisition_cfg, tmp_path_factory):
    d = tmp_path_factory.mktemp("gt") / SUB
    write_subject(simulate_subject(build_template(acquisition_cfg["cohort"]["resolution_mm"]), SUB, acquisition_cfg), d)
    return d


def test_still_level_is_the_still_acquisition_byte_for_byte(gt_dir, acquisition_cfg, tmp_path):
    still, _ = simulate_acquisition(gt_dir, SUB, acquisition_cfg, 4.0, 0.16)
    none, _ = simulate_acquisition(gt_dir, SUB, acquisition_cfg, 4.0, 0.16, motion_level="none")
    assert still.kspace.tobytes() == none.kspace.tobytes()
    assert still.reconstruction_rss.tobytes() == none.reconstruction_rss.tobytes()
    assert still.motion_shot is None and none.motion_shot is not None and not np.any(none.motion_poses)


def test_motion_acquisition_records_its_poses_and_shares_noise_and_truth(gt_dir, acquisition_cfg, tmp_path):
    still, nf_still = simulate_acquisition(gt_dir, SUB, acquisition_cfg, 1.0, 0.16)
    kf, nf = simulate_acquisition(gt_dir, SUB, acquisition_cfg, 1.0, 0.16, motion_level="severe")
    np.testing.assert_array_equal(nf.get_fdata(), nf_still.get_fdata())  # the truth is the still head
    path = write_kspace(tmp_path / "motion.h5", kf)
    back = read_kspace(path)
    traj = subject_trajectory(acquisition_cfg, SUB, "severe", kf.kspace.shape[-1])
    np.testing.assert_array_equal(back.motion_shot, traj.shot)
    np.testing.assert_array_equal(back.motion_poses, traj.poses)
    assert back.attrs["motion_level"] == "severe" and back.motion_poses.shape[0] == 8
    # lines acquired at rest carry the still k-space (the same noise); moved lines do not
    rest = ~traj.corrupted
    np.testing.assert_array_equal(kf.kspace[..., rest], still.kspace[..., rest])
    assert not np.allclose(kf.kspace[..., ~rest], still.kspace[..., ~rest])


def test_reading_rejects_inconsistent_motion_datasets(tmp_path):
    import h5py

    from mrichain.io import InputImageError, KSpaceFile

    k = np.zeros((2, 1, 8, 6), np.complex64)
    good = write_kspace(tmp_path / "good.h5", KSpaceFile(k, motion_shot=np.zeros(6, np.int32),
                                                         motion_poses=np.zeros((1, 4))))
    assert read_kspace(good).motion_shot.shape == (6,)
    bad = write_kspace(tmp_path / "bad.h5", KSpaceFile(k, motion_shot=np.full(6, 3, np.int32),
                                                       motion_poses=np.zeros((2, 4))))
    with pytest.raises(InputImageError, match="bad.h5: motion_shot indexes no pose"):
        read_kspace(bad)
    with h5py.File(good, "a") as f:
        del f["motion_poses"]
    with pytest.raises(InputImageError, match="good.h5: motion_shot and motion_poses must come together"):
        read_kspace(good)


@pytest.fixture(scope="module")
def toy_scan():
    """Two 64 x 64 slices at 3 mm inside 8 simulated coils, a little noise."""
    m = _phantom((64, 64, 2), seed=4, n=30, sigma=(1.5, 4.0))
    sens = sensitivity_maps(m.shape, 8, np.diag([3.0, 3.0, 3.0, 1.0]))
    return m, sens


def _scan(toy, ordering, pose, shot_moved=3, seed=0):
    m, sens = toy
    shot = shot_of_line(64, 8, ordering)
    poses = np.zeros((8, 4))
    poses[shot_moved] = pose
    k = corrupt_kspace(m, sens, MotionTrajectory(shot, poses), (3.0, 3.0, 3.0))
    rng = np.random.default_rng(seed)
    k += (0.002 * np.abs(k).max() * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))).astype(np.complex64)
    return k, shot


def test_leave_one_shot_out_finds_the_moved_shot(toy_scan):
    """Interleaved: each shot's lines predicted from the other seven; the moved shot is the worst
    predicted, with the true maps and with maps estimated from the corrupted data."""
    k, shot = _scan(toy_scan, "interleaved", [2.0, 1.5, -1.0, 0.0])
    for maps in (toy_scan[1].transpose(3, 0, 1, 2), coil_maps(k)):
        r = shot_residuals(k, maps, shot)
        assert int(np.argmax(r)) == 3
        assert r[3] > 1.2 * np.sort(r)[-2]


def test_shot_scores_are_relative_to_the_still_shots(toy_scan):
    """Scale-free: the still shots score about 1, the moved one well above, whatever the units;
    a shot with no acquired line scores NaN, not 0."""
    k, shot = _scan(toy_scan, "interleaved", [2.0, 1.5, -1.0, 0.0])
    z = shot_scores(k, None, shot)
    assert int(np.argmax(z)) == 3 and z[3] > 1.4
    assert abs(np.median(np.delete(z, 3)) - 1.0) < 0.05
    np.testing.assert_allclose(shot_scores(1000.0 * k, None, shot), z, rtol=1e-3)
    mask = (shot != 5).astype(np.float32)
    z = shot_scores(k * mask, mask, shot)
    assert np.isnan(z[5]) and np.isfinite(np.delete(z, 5)).all()


def test_scored_slices_skip_the_empty_ones():
    energy = np.array([0, 0, 5, 9, 9, 9, 8, 7, 0, 0], float)
    k = np.sqrt(energy)[:, None, None, None] * np.ones((10, 1, 2, 2))
    assert scored_slices(k, 8).tolist() == [3, 4, 5, 6, 7]
    assert scored_slices(k, 2).tolist() == [3, 7]


def test_entropy_focus_spans_a_point_to_a_flat_image():
    from mrichain.motion.quality import entropy_focus

    point = np.zeros((16, 16))
    point[3, 4] = 5.0
    assert entropy_focus(point) == 0.0
    assert entropy_focus(np.full((16, 16), 2.0)) == pytest.approx(1.0)
    blob = _phantom((16, 16, 1))[..., 0]
    ghost = blob + 0.3 * np.roll(blob, 8, axis=1)  # a ghost half a field of view away
    assert 0 < entropy_focus(blob) < entropy_focus(ghost) < 1


def test_entropy_focus_rises_with_the_movement(toy_scan):
    """The real-image motion score: the EFC of the reconstructed magnitude grows as one shot of an
    interleaved scan moves further (ghosts spread its energy), from the still scan up."""
    from mrichain.fft import ifft2c, rss
    from mrichain.motion.quality import entropy_focus

    efc = [entropy_focus(rss(ifft2c(_scan(toy_scan, "interleaved", pose)[0]), coil_axis=1))
           for pose in ([0, 0, 0, 0], [0.5, 0.5, 0, 0], [2.0, 1.5, -1.0, 0], [5.0, 4.0, -3.0, 0])]
    assert efc == sorted(efc) and efc[-1] > efc[0] + 0.01, efc


def test_a_scan_is_flagged_against_its_dataset():
    from mrichain.motion.quality import MIN_IMAGES_TO_FLAG, flag_outliers, robust_z

    usual = [0.40, 0.41, 0.42, 0.40, 0.43, 0.41]
    assert flag_outliers(usual + [0.60]) == [False] * 6 + [True]
    assert flag_outliers(usual + [0.30]) == [False] * 7  # a sharper scan than usual is not motion
    assert flag_outliers(usual[:MIN_IMAGES_TO_FLAG - 2] + [0.9]) == [None] * (MIN_IMAGES_TO_FLAG - 1)  # too few
    assert flag_outliers(usual + [float("nan")])[-1] is None
    assert np.isnan(robust_z([0.4] * 6)).all()  # no spread: no scale to compare by


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_autofocus_undoes_a_translated_shot(toy_scan, ordering):
    """A shot translated in-plane: through one uniform coil the linear phase of its shift undoes
    it exactly (through 8 coils fixed to the scanner only approximately: the coil images do not
    translate with the head). The search ranks the shot first at R1 and with an R4 mask; at R1 it
    finds the shift and halves the image error (with the R4 mask's aliasing on this two-slice toy
    it does not: on simulated heads it does better, docs/benchmarks.md)."""
    from mrichain.motion.autofocus import autofocus, autofocus_shifts, shift_shots

    m, sens = toy_scan
    vox = 3.0
    shot = shot_of_line(64, 8, ordering)
    poses = np.zeros((8, 4))
    poses[3] = [0.0, 2.0, -1.5, 0.0]
    k = corrupt_kspace(m, sens, MotionTrajectory(shot, poses), (vox,) * 3)
    still = corrupt_kspace(m, sens, MotionTrajectory(shot, np.zeros((8, 4))), (vox,) * 3)
    true_px = poses[:, 1:3] / vox
    one = np.ones((1, *m.shape))
    k1 = corrupt_kspace(m, one, MotionTrajectory(shot, poses), (vox,) * 3)
    still1 = corrupt_kspace(m, one, MotionTrajectory(shot, np.zeros((8, 4))), (vox,) * 3)
    np.testing.assert_allclose(shift_shots(k1, shot, true_px), still1, atol=1e-5 * np.abs(still1).max())
    for mask in (None, ((np.arange(64) % 4 == 0) | (np.abs(np.arange(64) - 32) < 8)).astype(np.float32)):
        w = 1.0 if mask is None else mask
        image, gains = autofocus(k * w, mask, shot)
        shifts, _ = autofocus_shifts(k * w, mask, shot, n_slices=8, max_shift=4.0, coarse_step=0.25, fine_step=0.025,
                                     sweeps=3)
        assert int(np.argmax(gains)) == 3 and gains[3] > 10 * np.delete(gains, 3).max()
        if mask is None:  # the 8 fixed coils move the sharpest image a tenth of a pixel off the truth
            np.testing.assert_allclose(shifts[3], true_px[3], atol=0.15)
            truth = np.sqrt(np.sum(np.abs(ifft2c(still)) ** 2, axis=1))
            before = np.sqrt(np.sum(np.abs(ifft2c(k)) ** 2, axis=1))
            assert np.linalg.norm(image - truth) < 0.5 * np.linalg.norm(before - truth)


def test_more_shots_than_acquired_lines_is_a_config_error(gt_dir, acquisition_cfg):
    """An undersampled scan plays fewer lines: a shot count above them names the config key, not a
    traceback from deep inside the simulator."""
    from mrichain import UserError

    cfg = copy.deepcopy(acquisition_cfg)
    cfg["acquire"]["motion"]["shots"] = 40
    simulate_acquisition(gt_dir, SUB, cfg, 1.0, 0.16, motion_level="severe")  # 50 lines: enough
    with pytest.raises(UserError, match=r"config key 'acquire\.motion' at acceleration 4: n_shots must be in 1 \.\. "):
        simulate_acquisition(gt_dir, SUB, cfg, 4.0, 0.16, motion_level="severe")


@pytest.mark.parametrize("content", ["still", "empty"])
def test_the_motion_job_refuses_a_file_without_motion_in_one_line(tmp_path, capsys, content):
    """``mrichain motion`` on a still acquisition (no shot record) or an empty file: exit 2, one
    line naming the file, nothing written."""
    from mrichain.cli import main
    from mrichain.io import KSpaceFile

    path = tmp_path / "sub-001_acq-severeR4_T1w.h5"
    if content == "still":
        write_kspace(path, KSpaceFile(np.ones((2, 2, 8, 8), np.complex64)))
    else:
        path.write_bytes(b"")
    out = tmp_path / "out"
    rc = main(["motion", "--method", "autofocus", "--input", str(path), "--out-image", str(out / "image.nii.gz"),
               "--out-shots", str(out / "shots.tsv")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert str(path) in err[-1]
    assert not out.exists()
