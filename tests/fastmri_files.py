"""Small fastMRI-shaped HDF5 files, built in the test (nothing is downloaded).

Laid out as fastMRI's multi-coil files: ``kspace`` complex64 [slices, coils, H, W] with the
readout H oversampled (``oversample`` x the recon rows, the object in the central rows),
``reconstruction_rss`` float32 [slices, h, w] (RSS of the coil images, centre-cropped to the recon
size), an ``ismrmrd_header`` written with the ismrmrd package's schema classes (namespace
http://www.ismrm.org/ISMRMRD), and fastMRI's attributes. Undersampled files (as the challenge's
test split) carry a boolean ``mask`` [W] and no target.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from mrichain.fft import fft2c, ifft2c, rss
from mrichain.simulate.coils import sensitivity_maps
from mrichain.simulate.sampling import cartesian_mask


def header_xml(*, encoded_matrix, recon_matrix, encoded_fov_mm, recon_fov_mm, limits, n_slices=1,
               n_coils=1, rich=False) -> str:
    """An ISMRMRD header (XML string) from the ismrmrd package's xsd classes.

    limits: (minimum, maximum, center) of ``kspace_encoding_step_1``. ``rich`` adds the sections a
    scanner's header has (subject, study, measurement, system with coil labels, sequence, user
    parameters), as in a real fastMRI file.
    """
    import ismrmrd.xsd as x

    def _limit(lo, hi, centre):
        return x.limitType(minimum=lo, maximum=hi, center=centre)

    def space(m, f):
        return x.encodingSpaceType(matrixSize=x.matrixSizeType(x=m[0], y=m[1], z=m[2]),
                                   fieldOfView_mm=x.fieldOfViewMm(x=float(f[0]), y=float(f[1]), z=float(f[2])))

    enc = x.encodingType(
        encodedSpace=space(encoded_matrix, encoded_fov_mm),
        reconSpace=space(recon_matrix, recon_fov_mm),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=_limit(*limits),
            kspace_encoding_step_2=_limit(0, 0, 0),
            slice=_limit(0, n_slices - 1, 0),
            average=_limit(0, 0, 0),
        ),
        trajectory=x.trajectoryType.CARTESIAN,
    )
    kwargs = {}
    if rich:
        enc.parallelImaging = x.parallelImagingType(
            accelerationFactor=x.accelerationFactorType(kspace_encoding_step_1=1, kspace_encoding_step_2=1), calibrationMode=x.calibrationModeType.OTHER)
        kwargs = dict(
            subjectInformation=x.subjectInformationType(patientWeight_kg=70.0, patientGender="O"),
                        measurementInformation=x.measurementInformationType(
                measurementID="45162_1234567_1234567_123", patientPosition=x.patientPositionType.HFS,
                protocolName="AX T2", frameOfReferenceUID="1.3.12.2.1107.5.2.0.0"),
            acquisitionSystemInformation=x.acquisitionSystemInformationType(
                systemVendor="SIEMENS", systemModel="Skyra", systemFieldStrength_T=2.89362, receiverChannels=n_coils,
                coilLabel=[x.coilLabelType(coilNumber=c, coilName=f"Head_Neck_20:1:H{c}") for c in range(n_coils)],
                institutionName="NYU"),
            sequenceParameters=x.sequenceParametersType(TR=[6000.0], TE=[113.0], TI=[100.0], flipAngle_deg=[150.0]),
            userParameters=x.userParametersType(userParameterLong=[x.userParameterLongType(name="EmbeddedRefLinesE1", value=24)]),
        )
    header = x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=123_255_000),
        encoding=[enc], **kwargs)
    return x.ToXML(header)


def phantom(h: int, w: int, n_slices: int, seed: int) -> np.ndarray:
    """A head-like phantom, complex64 [S, h, w]: a few ellipses (skull rim, brain, ventricles, a
    lesion) that shrink towards the outer slices, with a smooth phase. Values ~1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
    out = np.empty((n_slices, h, w), np.complex64)
    for s in range(n_slices):
        z = 1 - 0.5 * abs(s - (n_slices - 1) / 2) / max(n_slices, 1)
        a, b = 0.85 * z, 0.9 * z
        img = 0.6 * ((xx / a) ** 2 + (yy / b) ** 2 < 1)
        img += 0.4 * ((xx / (a - 0.08)) ** 2 + (yy / (b - 0.08)) ** 2 < 1)
        img -= 0.5 * (((xx - 0.15) / 0.12) ** 2 + (yy / 0.3) ** 2 < 1)
        cx, cy = rng.uniform(-0.4, 0.4, 2)
        img += 0.3 * (((xx - cx) / 0.1) ** 2 + ((yy - cy) / 0.1) ** 2 < 1)
        out[s] = img * np.exp(1j * (0.4 * xx - 0.3 * yy))
    return out


def write_fastmri_file(path, *, n_slices: int = 4, n_coils: int = 4, recon_size=(40, 32), oversample: int = 2,
                       fully_sampled: bool = True, single_coil: bool = False, seed: int = 0,
                       kspace_width: int | None = None, acquired: tuple[int, int] | None = None,
                       recon_fov_mm=(36.0, 35.2, 5.0), acceleration: float = 4, center_fraction: float = 0.08,
                       rich_header: bool = False, acquisition: str = "AXT2") -> Path:
    """Write a fastMRI-layout file and return its path.

    recon_size: (h, w) of ``reconstruction_rss`` and the header's recon matrix; k-space is
    [S, C, oversample * h, W] with W = ``kspace_width`` (default w), the encoded matrix
    (oversample * h, W, 1). acquired: (first, last) acquired phase-encode columns (inclusive); the
    others are zero in k-space and the header's encoding limits say so (fastMRI's padding:
    padding_left = first, padding_right = last + 1). recon_fov_mm: (x, y, z) in mm; the encoded
    FOV is (oversample * x, y * W / w, z), the same pixel size. ``fully_sampled=False`` writes the
    k-space masked by an equispaced ``acceleration`` mask (seeded by ``seed``) with a boolean
    ``mask`` dataset and no target, as fastMRI's test files.
    """
    h, w = recon_size
    H, W = oversample * h, (kspace_width or w)
    first, last = acquired if acquired is not None else (0, W - 1)
    C = 1 if single_coil else n_coils

    obj = np.zeros((n_slices, H, W), np.complex64)
    oh, ow = min(h, H), min(w, W)
    obj[:, (H - oh) // 2:(H - oh) // 2 + oh, (W - ow) // 2:(W - ow) // 2 + ow] = phantom(oh, ow, n_slices, seed)
    vox = np.array(recon_fov_mm) / np.array([h, w, 1])
    maps = sensitivity_maps((H, W, 1), C, np.diag([*vox, 1.0]))[..., 0] if C > 1 else np.ones((1, H, W), np.complex64)
    kspace = fft2c(obj[:, None] * maps[None]).astype(np.complex64)
    kspace[..., :first] = 0
    kspace[..., last + 1:] = 0
    target = rss(ifft2c(kspace), coil_axis=1).astype(np.float32)
    r0, c0 = (H - h) // 2, (W - ow) // 2
    target = target[:, r0:r0 + h, c0:c0 + ow]  # the RSS at the recon size (no wider than the image)

    xml = header_xml(encoded_matrix=(H, W, 1), recon_matrix=(h, w, 1),
                     encoded_fov_mm=(oversample * recon_fov_mm[0], recon_fov_mm[1] * W / w, recon_fov_mm[2]),
                     recon_fov_mm=recon_fov_mm, limits=(0, last - first, W // 2 - first),
                     n_slices=n_slices, n_coils=C, rich=rich_header)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if fully_sampled:
            mask = None
        else:
            mask = cartesian_mask(W, acceleration, center_fraction, "equispaced", seed) > 0
            kspace = kspace * mask
        f.create_dataset("kspace", data=kspace[:, 0] if single_coil else kspace)
        f.create_dataset("ismrmrd_header", data=np.bytes_(xml.encode()))
        if mask is None:
            f.create_dataset("reconstruction_rss", data=target)
            f.attrs["max"] = float(target.max())
            f.attrs["norm"] = float(np.linalg.norm(target))
        else:
            f.create_dataset("mask", data=mask)
            f.attrs["acceleration"] = int(acceleration)
            f.attrs["num_low_frequency"] = int(round(W * center_fraction))
        f.attrs["acquisition"] = acquisition
        f.attrs["patient_id"] = f"phantom-{seed}"
    return path
