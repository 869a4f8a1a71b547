"""nipype interfaces around each stage, on files, so the stages drop into a nipype ``Workflow``.

Each interface reads with :func:`mrichain.io.load_image` (which raises ``InputImageError`` naming
the file for corrupt, NaN or 4-D input), runs ``METHODS[method]`` of its stage with ``params``,
and writes NIfTI with :func:`mrichain.io.save_image` into the node's working directory (or
``out_file`` if given). Example::

    from nipype.pipeline.engine import Workflow, Node
    den = Node(Denoise(in_file="t1.nii.gz"), name="denoise")
    seg = Node(Segment(), name="segment")
    wf = Workflow(name="chain", base_dir="work")
    wf.connect(den, "out_file", seg, "in_file")
    wf.run()
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from mrichain.io import load_image, save_image


def _out_path(in_file: str, out_file, suffix: str) -> str:
    if isdefined(out_file) and out_file:
        return os.path.abspath(out_file)
    name = Path(in_file).name
    for ext in (".nii.gz", ".nii", ".h5"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return os.path.abspath(f"{name}_{suffix}.nii.gz")


def _params(spec) -> dict:
    return dict(spec.params) if isdefined(spec.params) else {}


class _StageInputSpec(BaseInterfaceInputSpec):
    params = traits.Dict(desc="keyword parameters of the method (see the stage's METHODS)")
    threads = traits.Int(1, usedefault=True, desc="ITK threads for ANTs-based methods")
    out_file = File(desc="output path (default: <input>_<suffix>.nii.gz in the working dir)")


# --- reconstruct -----------------------------------------------------------------------------
class ReconstructInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="fastMRI-layout HDF5 k-space file")
    method = traits.Str("zerofilled", usedefault=True, desc="key of mrichain.recon.METHODS")
    params = traits.Dict(desc="keyword parameters of the method")
    out_file = File(desc="output NIfTI path")


class ImageOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="output NIfTI image")


class Reconstruct(SimpleInterface):
    """HDF5 k-space -> reconstructed magnitude volume [H, W, S] float32 NIfTI (RAS affine)."""

    input_spec = ReconstructInputSpec
    output_spec = ImageOutputSpec

    def _run_interface(self, runtime):
        from mrichain.jobs import run_job

        out = _out_path(self.inputs.in_file, self.inputs.out_file, f"rec-{self.inputs.method}")
        run_job("reconstruct", self.inputs.method, {"kspace": self.inputs.in_file}, {"image": out}, _params(self.inputs))
        self._results["out_file"] = out
        return runtime


def _run_image_stage(inputs, stage_name: str, suffix: str) -> str:
    """Image in, image out: the stage's job (:func:`mrichain.jobs.run_job`) on ``inputs.in_file``."""
    from mrichain.jobs import run_job
    from mrichain.plan.stages import stage

    out = _out_path(inputs.in_file, inputs.out_file, suffix)
    run_job(stage_name, inputs.method, {"image": inputs.in_file}, {stage(stage_name).primary_output: out},
            _params(inputs), threads=inputs.threads)
    return out


# --- denoise ---------------------------------------------------------------------------------
class DenoiseInputSpec(_StageInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D NIfTI image")
    method = traits.Str("antsnlm", usedefault=True, desc="key of mrichain.denoise.METHODS")


class Denoise(SimpleInterface):
    """3-D image -> denoised float32 image on the same grid."""

    input_spec = DenoiseInputSpec
    output_spec = ImageOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _run_image_stage(self.inputs, "denoise", "desc-denoised")
        return runtime


# --- segment ---------------------------------------------------------------------------------
class SegmentInputSpec(_StageInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D skull-free brain image")
    method = traits.Str("atropos", usedefault=True, desc="key of mrichain.segment.METHODS")


class Segment(SimpleInterface):
    """3-D image -> uint8 label map (0 BG, 1 CSF, 2 GM, 3 WM) on the same grid."""

    input_spec = SegmentInputSpec
    output_spec = ImageOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _run_image_stage(self.inputs, "segment", "dseg")
        return runtime


# --- register --------------------------------------------------------------------------------
class RegisterInputSpec(BaseInterfaceInputSpec):
    moving = File(exists=True, mandatory=True, desc="3-D moving image")
    fixed = File(exists=True, mandatory=True, desc="3-D fixed image (defines the output grid)")
    labels = File(exists=True, desc="label map on the moving grid, carried into fixed space")
    method = traits.Str("antssyn", usedefault=True, desc="key of mrichain.register.METHODS")
    params = traits.Dict(desc="keyword parameters of the method")
    threads = traits.Int(1, usedefault=True, desc="ITK threads for ANTs-based methods")


class RegisterOutputSpec(TraitedSpec):
    warped = File(exists=True, desc="moving image in fixed space, float32")
    warped_labels = File(desc="labels in fixed space, uint8 (only if labels given)")
    jacobian = File(exists=True, desc="Jacobian determinant of the forward deformation, float32")
    seconds = traits.Float(desc="wall time of the registration (s)")


class Register(SimpleInterface):
    """moving (+ labels) -> fixed space: warped image, warped labels, Jacobian determinant."""

    input_spec = RegisterInputSpec
    output_spec = RegisterOutputSpec

    def _run_interface(self, runtime):
        from mrichain.register import METHODS

        moving = load_image(self.inputs.moving)
        fixed = load_image(self.inputs.fixed)
        labels = load_image(self.inputs.labels) if isdefined(self.inputs.labels) else None
        res = METHODS[self.inputs.method](
            moving, fixed, labels=labels, threads=self.inputs.threads, **_params(self.inputs)
        )
        stem = lambda s: _out_path(self.inputs.moving, None, s)  # noqa: E731
        self._results["warped"] = str(save_image(np.asarray(res.warped.dataobj), res.warped.affine, stem("space-fixed")))
        self._results["jacobian"] = str(
            save_image(np.asarray(res.jacobian.dataobj), res.jacobian.affine, stem("space-fixed_jacobian"))
        )
        if res.warped_labels is not None:
            self._results["warped_labels"] = str(
                save_image(np.asarray(res.warped_labels.dataobj), res.warped_labels.affine,
                           stem("space-fixed_dseg"), dtype=np.uint8)
            )
        self._results["seconds"] = float(res.seconds)
        return runtime
