"""One method's job on files: what a rule's command runs, and what the tuner runs on the val split.

``run_job(stage, method, inputs, outputs, params)`` reads the files a job of that stage reads
(``inputs``: the keys its declaration in :mod:`mrichain.plan.stages` names), runs the method and
writes ``outputs`` (the stage's output keys -> paths). Per stage:

- reconstruct: ``kspace`` (fastMRI-layout HDF5) -> ``image`` (float32 NIfTI [H, W, S]);
- one image in, one out (denoise, segment): ``image`` -> the stage's one output;
- register: ``moving``, ``fixed``, [``labels``] -> ``image``, ``labels``, ``jacobian``, ``timing`` (JSON);
- predict (cohort-level): ``manifest`` (the job manifest dict: subjects, splits, info, labels |
  images) -> ``predictions`` (TSV), ``model`` (JSON);
- motion: ``kspace`` (a moving head's, with ``motion_shot``) -> ``image``, ``shots`` (TSV).

``model`` is a learned method's trained weights (``models/<stage>-<method>.pt``), None otherwise.

Orientation: a method sees its input images in RAS+ voxel order (:func:`mrichain.realdata.structural.to_ras`,
a permutation/flip of the voxel array, no interpolation), as the pipeline's own images are stored;
its image outputs are written back in the voxel order of the image whose grid they are on (the
input image; for register the fixed image) by :func:`~mrichain.realdata.structural.from_ras`. An
input already stored RAS+ passes through untouched (the same bytes out as without this step).
"""
from __future__ import annotations

import importlib
import inspect


def run_reconstruct(method: str, inputs: dict, outputs: dict, params: dict, *, model=None, acceleration=None,
                    center_fraction=None, seed: int = 0, **_) -> None:
    """A file with an ``ismrmrd_header`` (a real fastMRI file) is reconstructed as fastMRI does
    (:func:`mrichain.realdata.fastmri.reconstruct_fastmri`: slice batches, the recon-size crop,
    the header's voxel sizes; ``acceleration`` > 1 undersamples it retrospectively, seeded); the
    simulator's files, which carry their affine and mask, by :func:`mrichain.recon.reconstruct_file`."""
    from mrichain.io import InputImageError, save_image
    from mrichain.realdata.fastmri import has_header, reconstruct_fastmri
    from mrichain.recon import reconstruct_file

    kw = {**params, **_model_kw(model)}
    if has_header(inputs["kspace"]):
        img = reconstruct_fastmri(inputs["kspace"], method, kw, acceleration=acceleration,
                                  center_fraction=center_fraction, seed=seed)
    elif acceleration not in (None, 1):
        raise InputImageError(f"{inputs['kspace']}: retrospective undersampling needs a fastMRI file with an "
                         "ismrmrd_header (the simulator writes each acceleration as its own file)")
    else:
        img = reconstruct_file(inputs["kspace"], method, kw)
    save_image(img.get_fdata(dtype="float32"), img.affine, outputs["image"])


def run_image(stage_name: str, method: str, inputs: dict, outputs: dict, params: dict, *, model=None,
              threads: int = 1, contrast: str = "T1w", **_) -> None:
    """``METHODS[method](image, threads=, [contrast=], [model=], **params)`` of an image-to-image stage."""
    import numpy as np

    from mrichain.io import check_volume, load_image, save_image
    from mrichain.plan.stages import stage

    s = stage(stage_name)
    fn = importlib.import_module(s.package).METHODS[method]
    extra = {"contrast": contrast} if "contrast" in inspect.signature(fn).parameters else {}
    image = check_volume(load_image(inputs["image"]), inputs["image"])
    out = fn(_ras(image), threads=threads, **extra, **_model_kw(model), **params)
    out = _stored_like(out, image)
    save_image(np.asarray(out.dataobj), out.affine, outputs[s.primary_output], dtype=out.get_data_dtype())


def run_register(method: str, inputs: dict, outputs: dict, params: dict, *, model=None, threads: int = 1,
                 seed: int = 0, **_) -> None:
    import numpy as np

    from mrichain.io import check_volume, load_image, save_image, save_json
    from mrichain.register import METHODS

    moving, fixed = (check_volume(load_image(inputs[k]), inputs[k]) for k in ("moving", "fixed"))
    labels = load_image(inputs["labels"]) if inputs.get("labels") else None
    res = METHODS[method](_ras(moving), _ras(fixed), labels=None if labels is None else _ras(labels), seed=seed,
                          threads=threads, **_model_kw(model), **params)
    warped, jacobian = _stored_like(res.warped, fixed), _stored_like(res.jacobian, fixed)  # fixed space
    save_image(warped.get_fdata(dtype="float32"), warped.affine, outputs["image"])
    if res.warped_labels is not None and outputs.get("labels"):
        warped_labels = _stored_like(res.warped_labels, fixed)
        save_image(np.asarray(warped_labels.dataobj), warped_labels.affine, outputs["labels"], dtype=np.uint8)
    save_image(jacobian.get_fdata(dtype="float32"), jacobian.affine, outputs["jacobian"])
    save_json({"method": method, "seconds_per_pair": res.seconds, "moving": str(inputs["moving"]),
               "fixed": str(inputs["fixed"])}, outputs["timing"])


def run_predict(method: str, inputs: dict, outputs: dict, params: dict, *, model=None, **_) -> None:
    from mrichain.predict.pipeline import run_prediction

    m = inputs["manifest"]
    run_prediction(method=method, params=params, subjects=m["subjects"], splits=m["splits"],
                   label_paths=m.get("labels"), image_paths=m.get("images"), model=model, info_paths=m["info"],
                   out_predictions=outputs["predictions"], out_model=outputs["model"])


def run_motion(method: str, inputs: dict, outputs: dict, params: dict, *, model=None, threads: int = 1,
               **_) -> None:
    """A moving head's k-space (``kspace``: the simulator's file with ``motion_shot``) -> the
    corrected ``image`` (float32 NIfTI [H, W, S], as a reconstruction) and ``shots`` (TSV: shot,
    acquired lines, score)."""
    import numpy as np
    import pandas as pd

    from mrichain.io import InputImageError, read_kspace, save_image
    from mrichain.motion import METHODS
    from mrichain.recon import volume_image
    from mrichain.simulate.motion import lines_per_shot

    kf = read_kspace(inputs["kspace"])
    if kf.motion_shot is None:
        raise InputImageError(f"{inputs['kspace']}: no motion_shot dataset: not a motion acquisition "
                              "(mrichain acquire --motion-level)")
    extra = {"threads": threads, **_model_kw(model)} if model else {}
    slices, scores = METHODS[method](kf.kspace, kf.mask, kf.motion_shot, **extra, **params)
    img = volume_image(slices, kf.affine)
    save_image(img.get_fdata(dtype="float32"), img.affine, outputs["image"])
    pd.DataFrame({"shot": np.arange(len(scores)), "lines": lines_per_shot(kf.motion_shot, kf.mask, len(scores)),
                  "score": scores}).to_csv(outputs["shots"], sep="\t", index=False, float_format="%.6g")


_RUNNERS = {"reconstruct": run_reconstruct, "register": run_register, "predict": run_predict, "motion": run_motion}


def run_job(stage_name: str, method: str, inputs: dict, outputs: dict, params: dict, **kw) -> None:
    """Run ``method`` of ``stage_name`` on ``inputs``, writing ``outputs`` (module docstring);
    ``kw``: ``model``, ``threads``, ``seed``, ``contrast`` (each stage takes what it uses)."""
    runner = _RUNNERS.get(stage_name)
    if runner is None:
        return run_image(stage_name, method, inputs, outputs, params, **kw)
    return runner(method, inputs, outputs, params, **kw)


def _is_ras(img) -> bool:
    """Whether ``img``'s voxel axes are already its closest RAS+ order (affine's axis codes R, A, S)."""
    import nibabel as nib

    return nib.aff2axcodes(img.affine) == ("R", "A", "S")


def _ras(img):
    """``img`` (nibabel [X, Y, Z]) in RAS+ voxel order (exact; nibabel returns an image already so
    unchanged)."""
    from mrichain.realdata.structural import to_ras

    return to_ras(img)


def _stored_like(out, like):
    """``out``, a method's output on the RAS+ grid of ``like`` (from :func:`_ras`), in ``like``'s
    voxel order and affine; itself when ``like`` is stored RAS+ (no rewrite, same bytes)."""
    from mrichain.realdata.structural import from_ras

    return out if _is_ras(like) else from_ras(out, like)


def _model_kw(model) -> dict:
    """``model=<path>`` for a learned method (its trained weights), nothing for a classical one."""
    return {"model": model} if model else {}
