"""What a learned model was trained on, and whether a real input is inside it.

A model's card (``models/<stage>-<method>.json``) gets a ``domain`` when the DAG trains it
(rule ``train``: :func:`domain_of_config`): the contrast, voxel size, coil count and SNR of the
simulated cohort it learned from. Before a learned method runs on a real input (rules of
``workflow/rules/realdata.smk``), :func:`check_domain` compares the two:

- a **contrast** other than the one trained on is refused (a T1w model on a T2w image gives
  labels and denoised images that look plausible and are wrong);
- a **voxel size** that differs by more than 10 % or a different **coil count** (VarNet learns
  its sensitivity maps from the coils it saw) is a warning in the job's log:
  the chain resamples structural inputs to the trained voxel size, and fastMRI's 2-D slices cannot
  be resampled through-plane, so the warning is what a lab should read before trusting the number.

Both messages name the model file and the input file.
"""
from __future__ import annotations

from pathlib import Path

from mrichain import UserError

VOXEL_TOLERANCE = 0.10
"""Relative difference of voxel sizes beyond which a model is applied outside its training."""


def domain_of_config(config: dict) -> dict:
    """The training domain of every model the DAG trains: the simulated cohort's acquisition.

    voxel_mm: isotropic voxel size (mm); n_coils: receive coils; snr: mean brain signal / noise
    SD per real channel; contrast: ``T1w`` | ``T2w``."""
    return {"contrast": config["acquire"]["contrast"], "voxel_mm": float(config["cohort"]["resolution_mm"]),
            "n_coils": int(config["acquire"]["n_coils"]), "snr": float(config["acquire"]["snr"])}


def check_domain(card: dict, model_path, input_path, *, contrast: str | None = None,
                 voxel_mm: tuple[float, ...] | None = None, n_coils: int | None = None) -> list[str]:
    """Compare an input with the ``domain`` of a model's card.

    contrast: the input's BIDS suffix (``T1w``...); voxel_mm: its voxel sizes (mm, after any
    resampling the chain does); n_coils: its receive coils (k-space inputs). Raises
    :class:`mrichain.UserError` on a contrast mismatch; returns one message per other mismatch
    (the command line logs them as warnings). A card without a ``domain`` (a model
    trained before cards recorded it) is refused: nothing says what it was trained on.
    """
    domain = card.get("domain")
    where = f"model {model_path} applied to {input_path}"
    if not domain:
        raise UserError(f"{where}: the model card has no 'domain' (what it was trained on); retrain it with "
                        "this version (snakemake models) or use a models directory whose cards have one")
    if contrast is not None and contrast != domain["contrast"]:
        raise UserError(f"{where}: the input is {contrast}, the model was trained on {domain['contrast']} images; "
                        f"run a {domain['contrast']} input or train on {contrast} (acquire.contrast)")
    msgs = []
    if voxel_mm is not None:
        off = [v for v in voxel_mm if abs(float(v) - domain["voxel_mm"]) > VOXEL_TOLERANCE * domain["voxel_mm"]]
        if off:
            msgs.append(f"{where}: voxel size {', '.join(f'{v:.3g}' for v in voxel_mm)} mm, trained at "
                        f"{domain['voxel_mm']:g} mm isotropic (outside its training: read its scores with care)")
    if n_coils is not None and int(n_coils) != int(domain["n_coils"]):
        msgs.append(f"{where}: {n_coils} coils, trained on {domain['n_coils']} (outside its training)")
    return msgs


def card_path(model_path) -> Path:
    """The card beside a model's weights (``.pt`` -> ``.json``)."""
    return Path(model_path).with_suffix(".json")


def check_file(model_path, input_path, contrast: str) -> list[str]:
    """:func:`check_domain` for one input file: voxel sizes from a NIfTI header, or for a fastMRI
    file (``.h5``) from its ISMRMRD header with its coil count."""
    from mrichain.io import load_json

    card = load_json(card_path(model_path))
    if str(input_path).endswith(".h5"):
        from mrichain.realdata.fastmri import kspace_shape, read_header

        voxel = tuple(read_header(input_path).voxel_size_mm)
        coils = int(kspace_shape(input_path)[1])
        return check_domain(card, model_path, input_path, contrast=contrast, voxel_mm=voxel, n_coils=coils)
    import nibabel as nib

    voxel = tuple(float(z) for z in nib.load(str(input_path)).header.get_zooms()[:3])
    return check_domain(card, model_path, input_path, contrast=contrast, voxel_mm=voxel)


def check_models_dir(config: dict, learned: list[tuple[str, str]], models_dir) -> None:
    """``input.models_dir``: every learned method the config runs has its weights and card there,
    and each card's ``domain`` has the contrast and voxel size of this run's cohort (which the
    models are applied to and scored on). Raises :class:`mrichain.UserError` naming the file and
    the key, before any job (the Snakefile calls it while building the DAG)."""
    from mrichain.io import load_json

    want = domain_of_config(config)
    problems = []
    for stage_name, method in learned:
        weights = Path(models_dir) / f"{stage_name}-{method}.pt"
        card_file = card_path(weights)
        missing = [str(p) for p in (weights, card_file) if not p.is_file()]
        if missing:
            problems.append(f"{' and '.join(missing)}: missing ({stage_name} method {method} is learned)")
            continue
        try:
            domain = load_json(card_file).get("domain")
        except (OSError, ValueError) as exc:
            problems.append(f"{card_file}: unreadable model card ({exc})")
            continue
        if not domain:
            problems.append(f"{card_file}: the card has no 'domain' (what the model was trained on); retrain it")
        elif domain["contrast"] != want["contrast"] or abs(domain["voxel_mm"] - want["voxel_mm"]) > 1e-6:
            problems.append(f"{card_file}: trained on {domain['contrast']} at {domain['voxel_mm']:g} mm, this run's "
                            f"cohort is {want['contrast']} at {want['voxel_mm']:g} mm (acquire.contrast, cohort.resolution_mm)")
    if problems:
        raise UserError(f"config key 'input.models_dir' ({models_dir}):\n  " + "\n  ".join(problems))
