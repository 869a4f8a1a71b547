"""Real fastMRI files (mrichain.realdata.fastmri): header geometry, crop, retrospective masks,
slice-batched reconstruction and fastMRI's scores, on fastMRI-shaped files built here."""
import json
import tracemalloc

import h5py
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fastmri_files import header_xml, write_fastmri_file
from mrichain.fft import ifft2c, rss
from mrichain.io import InputImageError, read_kspace
from mrichain.realdata import fastmri as fm
from mrichain.recon.zerofilled import zerofilled

BRAIN = dict(encoded_matrix=(640, 320, 1), recon_matrix=(320, 320, 1), encoded_fov_mm=(440, 220, 5),
             recon_fov_mm=(220, 220, 5), limits=(0, 319, 160))
EXACT = pytest.mark.filterwarnings("ignore:divide by zero")  # PSNR of identical volumes is inf
KNEE = dict(encoded_matrix=(640, 368, 1), recon_matrix=(320, 320, 1), encoded_fov_mm=(280, 161.42, 4.5),
            recon_fov_mm=(140, 140, 3), limits=(0, 333, 168))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Fully sampled, 4 coils, recon 40 x 32, k-space 80 x 36 with columns 3..32 acquired."""
    return write_fastmri_file(tmp_path_factory.mktemp("fm") / "full.h5", n_slices=4, n_coils=4,
                              recon_size=(40, 32), kspace_width=36, acquired=(3, 32), seed=1)


# ---------------------------------------------------------------------------------------------- header
def test_header_geometry_and_padding(full):
    import ismrmrd.xsd

    h = fm.read_header(full)
    assert h.encoded_matrix == (80, 36, 1) and h.recon_matrix == (40, 32, 1)
    assert h.recon_fov_mm == (36.0, 35.2, 5.0) and h.encoded_fov_mm == pytest.approx((72.0, 39.6, 5.0))
    assert h.voxel_size_mm == pytest.approx((0.9, 1.1, 5.0))
    assert h.kspace_encoding_step_1 == fm.Limit(0, 29, 15)
    assert (h.padding_left, h.padding_right) == (3, 33)  # exactly the columns the file acquired
    k = read_kspace(full).kspace
    acquired = np.flatnonzero(np.abs(k).sum(axis=(0, 1, 2)) > 0)
    assert (acquired[0], acquired[-1] + 1) == (h.padding_left, h.padding_right)
    # the same numbers as the ismrmrd package's own (schema-bound) parser
    with h5py.File(full) as f:
        ref = ismrmrd.xsd.CreateFromDocument(f["ismrmrd_header"][()]).encoding[0]
    assert (ref.reconSpace.matrixSize.x, ref.reconSpace.matrixSize.y) == h.recon_matrix[:2]
    assert ref.encodingLimits.kspace_encoding_step_1.center == h.kspace_encoding_step_1.center


@pytest.mark.parametrize("shape, voxel, padding", [
    (BRAIN, (0.6875, 0.6875, 5.0), (0, 320)),
    (KNEE, (0.4375, 0.4375, 3.0), (16, 350)),
])
def test_real_file_shaped_headers(shape, voxel, padding):
    xml = header_xml(**shape, n_slices=16, n_coils=20, rich=True)
    # a vendor element the ismrmrd schema does not know must not stop us (fastMRI reads with
    # ElementTree too)
    xml = xml.replace("<trajectory>", "<vendorExtra>1</vendorExtra><trajectory>")
    h = fm.parse_header(xml.encode(), "file_brain_AXT2_200_2000019.h5")
    assert h.voxel_size_mm == pytest.approx(voxel)
    assert (h.padding_left, h.padding_right) == padding
    assert h.crop_size(shape["encoded_matrix"][1]) == (320, 320)
    assert h.crop_size(264) == (264, 264)  # fastMRI's "check for FLAIR 203"


def test_center_crop_as_fastmri():
    a = np.arange(7 * 6).reshape(7, 6)
    # fastMRI: from = (n - size) // 2 on both axes
    np.testing.assert_array_equal(fm.center_crop(a, (4, 3)), a[1:5, 1:4])
    with pytest.raises(ValueError):
        fm.center_crop(a, (8, 3))


# ---------------------------------------------------------------------------------------------- recon
@EXACT
def test_zerofilled_full_file_has_recon_size_voxels_and_matches_target(full):
    img = fm.reconstruct_fastmri(full, "zerofilled", batch_slices=3)
    assert img.shape == (40, 32, 4) and img.get_data_dtype() == np.float32
    assert img.header.get_zooms() == pytest.approx((0.9, 1.1, 5.0))
    assert np.diag(img.affine)[:3] == pytest.approx((0.9, 1.1, 5.0))
    assert img.affine[:3, :3].sum() == pytest.approx(7.0)  # diagonal: no orientation invented
    target = fm.read_target(full)
    assert target.shape == (4, 40, 32)
    scores = fm.evaluate_volume(target, img)
    assert scores["nmse"] < 1e-10 and scores["ssim"] > 0.9999


@EXACT
def test_crop_becomes_square_when_the_image_is_narrower_than_the_recon_width(tmp_path):
    p = write_fastmri_file(tmp_path / "flair.h5", n_slices=2, n_coils=2, recon_size=(40, 32), kspace_width=28)
    img = fm.reconstruct_fastmri(p)
    assert img.shape == (28, 28, 2)
    target = fm.read_target(p)
    assert target.shape == (2, 28, 28)
    assert fm.evaluate_volume(target, img)["nmse"] < 1e-10


@EXACT
def test_single_coil_file(tmp_path):
    p = write_fastmri_file(tmp_path / "sc.h5", n_slices=3, single_coil=True)
    with h5py.File(p) as f:
        assert f["kspace"].ndim == 3
    assert next(fm.iter_kspace_slices(p)).shape == (1, 80, 32)
    img = fm.reconstruct_fastmri(p)
    assert img.shape == (40, 32, 3)
    assert fm.evaluate_volume(fm.read_target(p), img)["nmse"] < 1e-10


@pytest.mark.parametrize("acceleration", [4, 8])
def test_retrospective_mask_fraction_padding_and_seed(acceleration):
    h = fm.parse_header(header_xml(**KNEE).encode())
    mask = fm.volume_mask(h, 368, acceleration=acceleration, seed=3)
    inside = mask[h.padding_left:h.padding_right]
    assert not mask[:h.padding_left].any() and not mask[h.padding_right:].any()
    # fastMRI's equispaced mask: W / R lines over the whole width, the centre fraction included
    assert (mask > 0).sum() == pytest.approx(368 / acceleration, rel=0.1)
    assert inside[len(inside) // 2 - 5: len(inside) // 2 + 5].all()  # the centre is acquired
    np.testing.assert_array_equal(mask, fm.volume_mask(h, 368, acceleration=acceleration, seed=3))
    rand = [fm.volume_mask(h, 368, acceleration=acceleration, mask_kind="random", seed=s) for s in (0, 0, 1)]
    np.testing.assert_array_equal(rand[0], rand[1])
    assert not np.array_equal(rand[0], rand[2])
    assert fm.volume_mask(h, 368) is not None  # full sampling still leaves out the padding
    assert fm.volume_mask(fm.parse_header(header_xml(**BRAIN).encode()), 320) is None


def test_undersampled_recon_uses_one_mask_for_the_volume_and_is_deterministic(full):
    h = fm.read_header(full)
    a = fm.reconstruct_fastmri(full, acceleration=4, seed=5, batch_slices=1)
    b = fm.reconstruct_fastmri(full, acceleration=4, seed=5, batch_slices=3)
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
    # the same as masking the whole volume with one mask and cropping it
    mask = fm.volume_mask(h, 36, acceleration=4, seed=5)
    whole = fm.center_crop(zerofilled(read_kspace(full).kspace, mask), (40, 32))
    np.testing.assert_allclose(np.transpose(a.get_fdata(), (2, 0, 1)), whole, rtol=1e-5, atol=1e-6)
    scores = fm.evaluate_volume(fm.read_target(full), a)
    assert 1e-4 < scores["nmse"] < 0.5  # undersampling loses something, not everything
    c = fm.reconstruct_fastmri(full, acceleration=4, seed=6, mask_kind="random")
    assert not np.array_equal(a.get_fdata(), c.get_fdata())


def test_file_with_its_own_mask(tmp_path):
    p = write_fastmri_file(tmp_path / "test.h5", n_slices=2, fully_sampled=False, acceleration=4, seed=2)
    assert fm.read_target(p) is None  # fastMRI's test files carry no target
    mask = fm.read_file_mask(p)
    assert mask.dtype == np.float32 and 3 < 32 / mask.sum() < 5
    img = fm.reconstruct_fastmri(p)
    expect = fm.center_crop(zerofilled(read_kspace(p).kspace, mask), (40, 32))
    np.testing.assert_allclose(np.transpose(img.get_fdata(), (2, 0, 1)), expect, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="already undersampled"):
        fm.reconstruct_fastmri(p, acceleration=8)


# ---------------------------------------------------------------------------------------------- scores
def test_evaluate_volume_is_fastmri_evaluate():
    rng = np.random.default_rng(0)
    gt = rng.random((3, 40, 32)).astype(np.float32) + np.linspace(0, 2, 32, dtype=np.float32)
    pred = gt + 0.1 * rng.standard_normal(gt.shape).astype(np.float32)
    out = fm.evaluate_volume(gt, pred)
    sq = (slice(None), slice(4, 36), slice(None))  # evaluate.py's centre crop to (w, w)
    g, p = gt[sq].astype(np.float64), pred[sq].astype(np.float64)
    maxval = g.max()
    assert out["nmse"] == pytest.approx(np.sum((g - p) ** 2) / np.sum(g ** 2), rel=1e-9)
    assert out["psnr"] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=maxval), rel=1e-9)
    ssim = np.mean([structural_similarity(g[s], p[s], data_range=maxval) for s in range(3)])
    assert out["ssim"] == pytest.approx(ssim, rel=1e-9)
    # data_range is the volume max, not each slice's
    per_slice = np.mean([structural_similarity(g[s], p[s], data_range=g[s].max() * 3) for s in range(3)])
    assert out["ssim"] != pytest.approx(per_slice, rel=1e-3)


# ---------------------------------------------------------------------------------------------- methods
def test_cs_gives_the_recon_size_and_batches_like_the_whole_volume(tmp_path):
    p = write_fastmri_file(tmp_path / "ramp.h5", n_slices=4, n_coils=4, recon_size=(40, 32), kspace_width=36,
                           acquired=(3, 32), seed=1)
    with h5py.File(p, "r+") as f:  # slices of very different brightness, as a volume's edge and centre
        f["kspace"][()] = f["kspace"][()] * np.array([1, 3, 10, 30], np.float32)[:, None, None, None]
    params = {"iterations": 10, "sake_iterations": 5, "lam": 0.05}
    one = fm.reconstruct_fastmri(p, "cs", params, acceleration=4, center_fraction=0.16, batch_slices=1).get_fdata()
    whole = fm.reconstruct_fastmri(p, "cs", params, acceleration=4, center_fraction=0.16, batch_slices=4).get_fdata()
    assert one.shape == (40, 32, 4) and np.isfinite(one).all()
    # lam is relative to the volume's intensity, which every batch gets (without it, the dim slice
    # reconstructed alone differs by ~80 %); what remains is the per-call seeding of sigpy's step size
    for s in range(4):
        assert np.linalg.norm(one[..., s] - whole[..., s]) < 0.01 * np.linalg.norm(whole[..., s])


def test_varnet_batches_like_the_whole_volume(full, tmp_path):
    import torch

    from mrichain.recon import varnet as vn

    torch.manual_seed(0)
    hyper = {"cascades": 1, "channels": 4, "sens_channels": 2, "pad_factor": 16}
    model = tmp_path / "reconstruct-varnet.pt"
    torch.save(vn.build_model(**hyper).state_dict(), model)
    model.with_suffix(".json").write_text(json.dumps({"hyper_parameters": hyper}))
    params = {"model": str(model), "device": "cpu"}
    one = fm.reconstruct_fastmri(full, "varnet", params, acceleration=4, batch_slices=1)
    whole = fm.reconstruct_fastmri(full, "varnet", params, acceleration=4, batch_slices=4)
    assert one.shape == (40, 32, 4)
    # per-slice batches equal one batch of all (the volume's scale reaches every batch; MONAI's
    # VarNet normalises its inputs itself, so it is nearly scale-free anyway)
    np.testing.assert_allclose(one.get_fdata(), whole.get_fdata(), rtol=1e-4, atol=1e-6 * whole.get_fdata().max())


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_files_raise_input_image_error_naming_the_file(tmp_path, full):
    no_kspace = tmp_path / "no_kspace.h5"
    with h5py.File(no_kspace, "w") as f, h5py.File(full) as g:
        f.create_dataset("ismrmrd_header", data=g["ismrmrd_header"][()])
    with pytest.raises(InputImageError, match="no_kspace.h5.*kspace"):
        fm.reconstruct_fastmri(no_kspace)

    for name, header in [("garbled.h5", b"<ismrmrdHeader><encoding>"),
                         ("missing.h5", header_xml(**BRAIN).replace("<reconSpace>", "<otherSpace>")
                          .replace("</reconSpace>", "</otherSpace>").encode()),
                         ("no_ns.h5", b"<ismrmrdHeader/>")]:
        p = tmp_path / name
        with h5py.File(p, "w") as f:
            f.create_dataset("kspace", data=np.zeros((1, 2, 8, 8), np.complex64))
            f.create_dataset("ismrmrd_header", data=np.bytes_(header))
        with pytest.raises(InputImageError, match=name):
            fm.read_header(p)

    no_header = tmp_path / "no_header.h5"
    with h5py.File(no_header, "w") as f:
        f.create_dataset("kspace", data=np.zeros((1, 2, 8, 8), np.complex64))
    with pytest.raises(InputImageError, match="no_header.h5.*ismrmrd_header"):
        fm.read_header(no_header)

    not_hdf5 = tmp_path / "not_hdf5.h5"
    not_hdf5.write_text("hello")
    with pytest.raises(InputImageError, match="not_hdf5.h5"):
        fm.reconstruct_fastmri(not_hdf5)


# ---------------------------------------------------------------------------------------------- memory
def test_reconstruction_never_holds_the_whole_kspace(tmp_path):
    p = write_fastmri_file(tmp_path / "big.h5", n_slices=32, n_coils=8, recon_size=(48, 40), seed=3)
    S, C, H, W = fm.kspace_shape(p)
    volume_bytes = S * C * H * W * 8  # complex64
    batch_bytes = 2 * C * H * W * 8
    tracemalloc.start()
    try:
        img = fm.reconstruct_fastmri(p, batch_slices=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert img.shape == (48, 40, 32)
    # reading the volume at once would alone need volume_bytes (16 batches)
    assert peak < volume_bytes / 2, (peak, volume_bytes)
    assert peak < 8 * batch_bytes, (peak, batch_bytes)
    # the slice reader yields one slice
    first = next(fm.iter_kspace_slices(p))
    assert first.shape == (C, H, W) and first.dtype == np.complex64
    np.testing.assert_array_equal(first, read_kspace(p).kspace[0])
    assert rss(ifft2c(first), coil_axis=0).shape == (H, W)


# ---------------------------------------------------------------------------------------------- the CLI
def test_reconstruct_command_reads_a_fastmri_file_as_fastmri_does(full, tmp_path):
    """`mrichain reconstruct --input <fastMRI file>` (docs/how-to/real-data.md): the recon
    size and the header's voxel sizes, and --acceleration undersamples retrospectively (seeded)."""
    import nibabel as nib

    from mrichain.cli import main

    out = tmp_path / "full.nii.gz"
    main(["reconstruct", "--method", "zerofilled", "--input", str(full), "--output", str(out)])
    img = nib.load(out)
    assert img.shape == (40, 32, 4) and img.header.get_zooms() == pytest.approx((0.9, 1.1, 5.0))
    assert fm.evaluate_volume(fm.read_target(full), img)["nmse"] < 1e-10
    r4 = [tmp_path / f"r4-{i}.nii.gz" for i in range(2)]
    for path in r4:
        main(["reconstruct", "--method", "zerofilled", "--input", str(full), "--output", str(path),
              "--acceleration", "4", "--seed", "3"])
    a, b = (np.asarray(nib.load(p).dataobj) for p in r4)
    assert a.shape == (40, 32, 4) and np.array_equal(a, b)
    assert fm.evaluate_volume(fm.read_target(full), nib.load(r4[0]))["nmse"] > 1e-3  # aliasing: it did undersample


def test_reconstruct_command_refuses_acceleration_on_a_simulated_file(tmp_path, capsys):
    from mrichain.cli import main
    from mrichain.io import KSpaceFile, write_kspace

    sim = write_kspace(tmp_path / "sim.h5", KSpaceFile(np.ones((2, 1, 8, 8), np.complex64)))
    code = main(["reconstruct", "--method", "zerofilled", "--input", str(sim), "--output", str(tmp_path / "o.nii.gz"),
                 "--acceleration", "4"])
    assert code == 2 and not (tmp_path / "o.nii.gz").exists()
    assert f"{tmp_path / 'sim.h5'}: retrospective undersampling needs a fastMRI file" in capsys.readouterr().err
