import numpy as np
import pytest

from mrichain.io import InputImageError, save_image


def _phantom_file(path, shape=(40, 48, 40), voxel=3.5, seed=0):
    idx = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    r = sum(((idx[i] - c[i]) * voxel / rad) ** 2 for i, rad in enumerate((60, 72, 58)))
    img = np.where(r <= 1, 0.25, 0.0)
    img = np.where(r <= 0.85, 0.6, img)
    img = np.where(r <= 0.45, 0.9, img)
    rng = np.random.default_rng(seed)
    img = np.abs(img + 0.03 * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)))
    aff = np.diag([voxel] * 3 + [1.0])
    aff[:3, 3] = -c * voxel
    return save_image(img, aff, path)


def test_workflow_denoise_segment(tmp_path):
    import nibabel as nib
    from nipype.pipeline.engine import Node, Workflow

    from mrichain.interfaces import Denoise, Segment

    src = _phantom_file(tmp_path / "sub-01_T1w.nii.gz")
    den = Node(Denoise(in_file=str(src), params={"patch_radius": 1, "search_radius": 1}), name="denoise")
    seg = Node(Segment(params={"iterations": 3}), name="segment")
    wf = Workflow(name="chain", base_dir=str(tmp_path / "work"))
    wf.connect(den, "out_file", seg, "in_file")
    wf.run()
    out = list((tmp_path / "work").rglob("*_dseg.nii.gz"))
    assert len(out) == 1
    lab = nib.load(out[0])
    assert lab.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1, 2, 3}
    np.testing.assert_allclose(lab.affine, nib.load(src).affine)


def test_register_and_reconstruct_interfaces(tmp_path):
    import nibabel as nib

    from mrichain.fft import fft2c
    from mrichain.interfaces import Reconstruct, Register
    from mrichain.io import KSpaceFile, write_kspace

    fixed = _phantom_file(tmp_path / "fixed.nii.gz", seed=1)
    moving = _phantom_file(tmp_path / "moving.nii.gz", seed=2)
    lab = nib.load(moving)
    save_image((lab.get_fdata() > 0.1).astype(np.uint8), lab.affine, tmp_path / "labels.nii.gz", dtype=np.uint8)
    reg = Register(moving=str(moving), fixed=str(fixed), labels=str(tmp_path / "labels.nii.gz"),
                   params={"type_of_transform": "Affine"})
    res = reg.run(cwd=str(tmp_path))
    assert res.outputs.seconds > 0
    assert nib.load(res.outputs.warped_labels).get_data_dtype() == np.uint8
    assert nib.load(res.outputs.jacobian).shape == nib.load(fixed).shape
    assert str(tmp_path) in res.outputs.warped
    k = fft2c(np.random.default_rng(0).random((2, 2, 16, 12))).astype(np.complex64)
    h5 = write_kspace(tmp_path / "k.h5", KSpaceFile(kspace=k))
    rec = Reconstruct(in_file=str(h5)).run(cwd=str(tmp_path))
    assert nib.load(rec.outputs.out_file).shape == (16, 12, 2)


def test_bad_input_names_file(tmp_path):
    from mrichain.interfaces import Denoise

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(Exception) as info:
        Denoise(in_file=str(bad)).run(cwd=str(tmp_path))
    assert "broken.nii.gz" in str(info.value)
    assert isinstance(info.value, InputImageError) or "InputImageError" in str(info.value)
