"""One training engine for every learned method of the chain.

``fit`` trains a torch model on a map-style dataset and

- picks the device itself (CUDA if present, else CPU) and uses mixed precision only on CUDA;
  a job that was given a GPU (``CUDA_VISIBLE_DEVICES``) whose torch cannot use it fails with
  :class:`CudaUnavailableError` instead of training on the CPU unnoticed (see :func:`select_device`);
- seeds every random source from ``settings.seed`` (weights are initialised by the caller after
  :func:`seed_everything`; shuffling and dropout are re-seeded per epoch from (seed, epoch), so a
  resumed run draws exactly what an uninterrupted one would);
- writes a checkpoint after every epoch (model, optimiser, AMP scaler, curve, best weights) and
  resumes from it when restarted with the same fingerprint (settings, model, data); a checkpoint
  of other settings is ignored, never resumed;
- reads checkpoints and model files with ``torch.load(weights_only=True)`` only (tensors,
  containers and numbers: a pickle that would run code is refused, never executed). A checkpoint
  that does not load so, or is not one of ours, is ignored with a printed line saying why; a
  model file that does not is a :class:`ModelFileError` naming it;
- optimises with AdamW (the default) or SGD with Nesterov momentum (nnU-Net's optimiser), the
  learning rate following a per-step schedule (:func:`lr_factor`: constant, poly, cosine or step,
  after an optional linear warm-up); the scheduler's state is checkpointed with the optimiser's;
- scores the untrained network on val before the first step: curve row epoch 0 (train loss NaN,
  0 steps) is the starting best, so a network that never beats its start keeps its initial
  weights and its card says ``beats_start: false``;
- stops early when the validation score (higher is better) has not improved for ``patience`` epochs;
- states the budget as optimiser steps and samples seen (each curve row's cumulative ``steps`` and
  its ``lr``; the card's ``optimiser_steps`` and ``samples_seen``, resumed runs included);
- shows a tqdm progress bar, writes the training curve as TSV and PNG, the best weights as the
  state dict ``out_path`` (``models/<stage>-<method>.pt``) and a model card JSON beside it.

Each model supplies two functions: ``loss_fn(model, batch, device) -> scalar tensor`` and
``score_fn(model, val_dataset, device) -> float`` (higher is better, e.g. SSIM, Dice, -MAE).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mrichain import UserError
from mrichain.provenance import hash_files  # noqa: F401  (re-exported: mrichain.train.hash_files)


@dataclass
class TrainSettings:
    """Hyper-parameters of the loop (the model's own live in the model card's ``architecture``)."""

    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    seed: int = 0
    max_batches_per_epoch: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # used only on CUDA
    grad_clip: float | None = 1.0
    #: "adamw" (Adam with decoupled weight decay; Adam is VoxelMorph's and fastMRI's optimiser) or
    #: "sgd": SGD with Nesterov momentum ``momentum`` (nnU-Net: lr 1e-2, momentum 0.99)
    optimiser: str = "adamw"
    momentum: float = 0.99
    #: learning rate per optimiser step, as a factor of ``lr`` (see :func:`lr_factor`):
    #: "constant" | "poly" (nnU-Net's (1 - t/T)^0.9) | "cosine" (to 0) | "step" (x ``step_gamma``
    #: every ``step_epochs`` epochs: fastMRI's VarNet x0.1 at epoch 40)
    schedule: str = "constant"
    poly_exponent: float = 0.9
    warmup_epochs: int = 0  # linear warm-up from lr/W to lr over this many epochs' steps
    step_epochs: int | None = None
    step_gamma: float = 0.1

    def __post_init__(self):
        if self.optimiser not in OPTIMISERS:
            raise TrainSettingsError(f"optimiser: {self.optimiser!r} is not one of {list(OPTIMISERS)}")
        if self.schedule not in SCHEDULES:
            raise TrainSettingsError(f"schedule: {self.schedule!r} is not one of {list(SCHEDULES)}")
        if self.schedule == "step" and not self.step_epochs:
            raise TrainSettingsError("schedule: step needs step_epochs (lower the lr every this many epochs)")


#: The optimisers and learning-rate schedules of :class:`TrainSettings`.
OPTIMISERS = ("adamw", "sgd")
SCHEDULES = ("constant", "poly", "cosine", "step")


class TrainSettingsError(UserError, ValueError):
    """Loop settings that do not make a schedule or an optimiser (e.g. ``schedule: step`` without
    ``step_epochs``)."""


def lr_factor(settings: TrainSettings, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) as a factor of ``settings.lr``.

    The run plans ``T = epochs x steps_per_epoch`` steps (``steps_per_epoch``: batches per epoch
    after ``max_batches_per_epoch``); an early stop ends it sooner, never changes the curve of lr.

    - warm-up: the first ``W = warmup_epochs x steps_per_epoch`` steps rise linearly, ``(k + 1) / W``,
      so the first step is already non-zero and step W - 1 reaches ``lr`` (large steps on an
      untrained network with momentum are what a warm-up prevents);
    - then, with ``t = k - W`` steps after the warm-up and ``T' = T - W`` of them:
      ``constant`` 1; ``poly`` ``(1 - t/T')^poly_exponent`` (nnU-Net's PolyLRScheduler, exponent 0.9);
      ``cosine`` ``(1 + cos(pi t/T')) / 2`` (to 0 at the end, no restarts); ``step``
      ``step_gamma^floor(epoch / step_epochs)`` with ``epoch = k // steps_per_epoch`` counted from
      the start (fastMRI's StepLR: x0.1 at epoch 40 of 50).

    The last planned step keeps a positive rate (``t = T' - 1``): no step is wasted at lr 0.
    """
    k = int(step)
    per_epoch = max(int(steps_per_epoch), 1)
    warm = settings.warmup_epochs * per_epoch
    if k < warm:
        return (k + 1) / warm
    t, span = k - warm, max(settings.epochs * per_epoch - warm, 1)
    frac = min(t / span, 1.0)
    if settings.schedule == "poly":
        return (1.0 - frac) ** settings.poly_exponent
    if settings.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if settings.schedule == "step":
        return settings.step_gamma ** ((k // per_epoch) // settings.step_epochs)
    return 1.0


def make_optimiser(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum (plain SGD when ``momentum`` is 0: Nesterov needs
    some), at ``settings.lr`` with ``settings.weight_decay``."""
    if settings.optimiser == "sgd":
        return torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                               nesterov=settings.momentum > 0, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def make_scheduler(optimiser: torch.optim.Optimizer, settings: TrainSettings,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` of :func:`lr_factor`: call ``.step()`` after each optimiser step.
    Its state (the step count) is a dict of numbers, checkpointed and restored with the optimiser's."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: lr_factor(settings, k, steps_per_epoch))


def batches_per_epoch(n_train: int, settings: TrainSettings) -> int:
    """Optimiser steps per epoch: ``ceil(n_train / batch_size)`` (the last batch may be short),
    capped by ``max_batches_per_epoch``."""
    n = math.ceil(n_train / settings.batch_size)
    return n if settings.max_batches_per_epoch is None else min(n, settings.max_batches_per_epoch)


@dataclass
class FitResult:
    best_score: float
    best_epoch: int
    epochs_run: int
    wall_seconds: float
    device: str
    curve: list[dict] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    optimiser_steps: int = 0  # over the whole run, resumed legs included
    samples_seen: int = 0  # training samples through the loss (steps x batch, the last batch short)
    beats_start: bool = False  # some epoch's val score beat the untrained network's (epoch 0)
    start_score: float = float("nan")  # the untrained network's val score (curve row epoch 0)


#: Values of ``CUDA_VISIBLE_DEVICES`` (first entry) that give a process no GPU: "-1" hides every
#: device from CUDA, "NoDevFiles" is what SLURM sets for a GPU resource without device files.
NO_GPU_VALUES = ("", "-1", "NoDevFiles")

#: The one-line install hint of :class:`CudaUnavailableError`; ``{version}`` is torch's release.
CUDA_INSTALL_HINT = "pip install torch=={version} --index-url https://download.pytorch.org/whl/cu128"


class ModelFileError(UserError, ValueError):
    """A model file (``models/<stage>-<method>.pt``) is not a state dict torch loads safely
    (``weights_only=True``), or does not fit the network its card describes."""


def _unsafe_load_reason(exc: Exception) -> str:
    """One line from a failed ``torch.load(weights_only=True)``: the unpickler's own reason (e.g.
    ``Unsupported global: GLOBAL builtins.exec ...``) without torch's advice to reload unsafely."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first.split(". ")[0].rstrip(".")


def safe_load(path: str | Path, map_location=None):
    """``torch.load(path, weights_only=True)``: tensors, dicts, lists, tuples, strings and numbers
    only. Raises what torch raises (``pickle.UnpicklingError`` for a pickle that names any other
    global: it is refused before anything of it runs)."""
    return torch.load(path, map_location=map_location, weights_only=True)


class CudaUnavailableError(UserError, RuntimeError):
    """This process was given a GPU, or asked for CUDA, but its torch cannot use CUDA.

    Raised instead of falling back to the CPU: on a GPU node with a CPU-only torch (the wheel the
    README installs for laptops) a training job would otherwise run for hours on the CPU while
    holding a GPU. The message names the installed torch, the ``CUDA_VISIBLE_DEVICES`` value, how
    to install the CUDA build and how to choose the CPU deliberately (``device: cpu``).
    """


def assigned_gpus(environ=None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` value when it gives this process a GPU, else None.

    Unset, empty, or a first entry of "-1" or "NoDevFiles" (:data:`NO_GPU_VALUES`) mean no GPU.
    SLURM sets the variable in a job that was allocated a GPU (``--gpus``/``--gres=gpu``).
    """
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if value is None or value.split(",")[0].strip() in NO_GPU_VALUES:
        return None
    return value


def torch_build() -> str:
    """The installed torch, for messages: ``torch 2.13.0+cpu (CPU-only build)`` or ``... (CUDA 12.8 build)``."""
    cuda = torch.version.cuda
    return f"torch {torch.__version__} ({f'CUDA {cuda} build' if cuda else 'CPU-only build'})"


def _cuda_unavailable(preference: str, environ=None) -> CudaUnavailableError:
    """The error of :func:`select_device` when torch cannot use CUDA but the job needs it."""
    raw = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    gpus = assigned_gpus(environ)
    cpu_ok = ("set `device: cpu` in the method's params (config: <stage>.params.<method>.device) "
              "to run on the CPU deliberately")
    if gpus is None and raw is not None:  # asked for cuda, but the variable hides every GPU
        return CudaUnavailableError(
            f"device: {preference} asks for CUDA, but CUDA_VISIBLE_DEVICES={raw!r} gives this process no GPU "
            f"({torch_build()}); run it where a GPU is allocated, or {cpu_ok}")
    if gpus is not None:
        given = f"this job was given a GPU (CUDA_VISIBLE_DEVICES={gpus})"
    else:
        given = f"device: {preference} asks for CUDA (CUDA_VISIBLE_DEVICES is not set)"
    if torch.version.cuda:
        why = ("it is a CUDA build, so the node's NVIDIA driver is missing or older than CUDA "
               f"{torch.version.cuda} needs (check `nvidia-smi` inside a job), or install the build for the driver's CUDA,")
    else:
        why = "install the CUDA build in the environment the jobs run in,"
    hint = CUDA_INSTALL_HINT.format(version=torch.__version__.split("+")[0])
    return CudaUnavailableError(
        f"{given}, but the installed {torch_build()} cannot use CUDA (torch.cuda.is_available() is False); "
        f"{why} e.g. `{hint}` (cu128 = CUDA 12.8: pick the one your driver supports, see "
        f"https://pytorch.org/get-started/locally/); or {cpu_ok}")


def select_device(preference: str = "auto", environ=None) -> torch.device:
    """The torch device for ``preference`` (the ``device`` param): ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.

    - ``cpu``: the CPU, always (a deliberate choice, also on a GPU node);
    - ``auto`` (default): CUDA when torch can use it; else the CPU, unless this process was given a
      GPU (:func:`assigned_gpus`: ``CUDA_VISIBLE_DEVICES`` set by SLURM or by hand), in which case
      :class:`CudaUnavailableError` is raised rather than training on the CPU unnoticed;
    - ``cuda``/``cuda:N``: CUDA, and :class:`CudaUnavailableError` when torch cannot use it.

    environ: the environment to read (default ``os.environ``; tests pass their own).
    """
    preference = str(preference)
    if preference == "cpu":
        return torch.device("cpu")
    if preference != "auto" and preference != "cuda" and not preference.startswith("cuda:"):
        raise ValueError(f"device: {preference!r} is not allowed; allowed values: auto, cpu, cuda, cuda:<index>")
    if torch.cuda.is_available():
        return torch.device("cuda" if preference == "auto" else preference)
    if preference == "auto" and assigned_gpus(environ) is None:
        return torch.device("cpu")
    raise _cuda_unavailable(preference, environ)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def checkpoint_path(out_path: str | Path) -> Path:
    """Where the per-epoch checkpoint of ``models/<name>.pt`` lives: ``models/checkpoints/<name>.ckpt``."""
    out_path = Path(out_path)
    return out_path.parent / "checkpoints" / (out_path.stem + ".ckpt")


def _fingerprint(settings: TrainSettings, card: dict) -> str:
    keep = {k: v for k, v in asdict(settings).items() if k not in ("device",)}
    blob = json.dumps({"settings": keep, "card": card}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


#: What every checkpoint of :func:`fit` holds (the fingerprint, and what a resume restores).
CHECKPOINT_KEYS = frozenset({"fingerprint", "epoch", "model", "optimiser", "scheduler", "scaler", "best_score",
                             "best_epoch", "bad_epochs", "curve", "best_state", "steps", "samples_seen"})


def _read_checkpoint(path: Path, fingerprint: str, device) -> dict | None:
    """The checkpoint at ``path`` when it is one :func:`fit` wrote for ``fingerprint``, else None.

    Read with :func:`safe_load`; a file that does not load so (a pickle naming other globals, a
    corrupt file), is not a dict, or has another fingerprint is ignored (a printed line says which
    and why) and never resumed: training starts from scratch and overwrites it."""
    if not path.exists():
        return None
    try:
        ckpt = safe_load(path, map_location=device)
    except Exception as exc:  # noqa: BLE001 - whatever the file is, it is not resumed
        why = f"it cannot be loaded with torch.load(weights_only=True) ({_unsafe_load_reason(exc)})"
    else:
        if not isinstance(ckpt, dict):
            why = f"it is not a dict but a {type(ckpt).__name__}"
        elif ckpt.get("fingerprint") != fingerprint:
            why = "it belongs to other settings or data"
        elif not CHECKPOINT_KEYS <= set(ckpt):
            why = f"it lacks {', '.join(sorted(CHECKPOINT_KEYS - set(ckpt)))}"
        else:
            return ckpt
    print(f"ignoring checkpoint {path}: {why}; training from scratch")
    return None


def fit(
    model: torch.nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    *,
    loss_fn: Callable,
    score_fn: Callable,
    settings: TrainSettings,
    out_path: str | Path,
    card: dict,
    score_name: str = "score",
    collate_fn: Callable | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` and write ``out_path`` (best state dict), its card, curve TSV/PNG.

    card: JSON-serialisable facts about the model (``architecture``, model hyper-parameters,
    ``training_data_hash``, ...); it is part of the resume fingerprint and is completed with the
    loop settings, seed, validation score (best and at the start), ``beats_start``, epochs,
    ``optimiser_steps``, ``samples_seen``, wall time and device.

    The curve's rows (one per epoch; row 0 the untrained network): ``epoch``, ``train_loss`` (mean
    over the epoch's batches; NaN at epoch 0), ``val_<score_name>``, ``seconds`` (of the epoch,
    its scoring included), ``samples`` (of the epoch), ``steps`` (cumulative optimiser steps) and
    ``lr`` (the rate of the epoch's last step; at epoch 0 the first step's).
    The selected weights are those of the best row, epoch 0 included (ties keep the earlier);
    ``epochs_run`` counts training epochs (rows after epoch 0).
    on_epoch_end(epoch, row): called after each training epoch's checkpoint with its 0-based index
    (tests use it to interrupt).
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    device = select_device(settings.device)
    use_amp = bool(settings.amp and device.type == "cuda")
    model.to(device)
    n_batches = batches_per_epoch(len(train_data), settings)
    samples_per_epoch = min(len(train_data), n_batches * settings.batch_size)
    optimiser = make_optimiser(model, settings)
    scheduler = make_scheduler(optimiser, settings, n_batches)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    fingerprint = _fingerprint(settings, card)
    ckpt_file = checkpoint_path(out_path)

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            return float(score_fn(model, val_data, device))

    start_epoch, bad_epochs, steps, samples_seen = 0, 0, 0, 0
    resumed = None
    elapsed_before = 0.0
    t0 = time.perf_counter()
    ckpt = _read_checkpoint(ckpt_file, fingerprint, device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimiser"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_score, best_epoch = ckpt["epoch"] + 1, ckpt["best_score"], ckpt["best_epoch"]
        bad_epochs, curve, best_state = ckpt["bad_epochs"], ckpt["curve"], ckpt["best_state"]
        steps, samples_seen = ckpt["steps"], ckpt["samples_seen"]
        elapsed_before = ckpt.get("elapsed", 0.0)
        resumed = start_epoch
        print(f"resuming {out_path.name} from checkpoint after epoch {ckpt['epoch'] + 1}")
    else:  # epoch 0: the untrained network is the start every epoch must beat
        score = validate()
        curve = [{"epoch": 0, "train_loss": math.nan, f"val_{score_name}": score,
                  "seconds": time.perf_counter() - t0, "samples": 0, "steps": 0,
                  "lr": optimiser.param_groups[0]["lr"]}]
        best_score, best_epoch = (score if math.isfinite(score) else -math.inf), 0
        best_state = copy.deepcopy(model.state_dict())
        print(f"epoch 0 (untrained): val {score_name} {score:.5g}")

    stopped = bad_epochs >= settings.patience
    for epoch in range(start_epoch, settings.epochs):
        if stopped:
            break
        seed_everything(settings.seed * 1000 + epoch)  # dropout and augmentation of this epoch
        gen = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        loader = DataLoader(train_data, batch_size=settings.batch_size, shuffle=True, generator=gen,
                            collate_fn=collate_fn, drop_last=False)
        model.train()
        t_epoch, losses, lr = time.perf_counter(), [], optimiser.param_groups[0]["lr"]
        bar = tqdm(loader, total=n_batches, desc=f"{out_path.stem} epoch {epoch + 1}/{settings.epochs}",
                   disable=not progress, leave=False, mininterval=2.0)
        for i, batch in enumerate(bar):
            if i >= n_batches:
                break
            lr = optimiser.param_groups[0]["lr"]  # this step's rate
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                loss = loss_fn(model, batch, device)
            scaler.scale(loss).backward()
            if settings.grad_clip:
                scaler.unscale_(optimiser)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            scaler.step(optimiser)
            scaler.update()
            scheduler.step()
            steps += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
        samples_seen += samples_per_epoch
        score = validate()
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else math.nan,
               f"val_{score_name}": score, "seconds": time.perf_counter() - t_epoch,
               "samples": samples_per_epoch, "steps": steps, "lr": lr}
        curve.append(row)
        if score > best_score:
            best_score, best_epoch, bad_epochs = score, epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        stopped = bad_epochs >= settings.patience
        _atomic_save({"fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
                      "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                      "scaler": scaler.state_dict(), "best_score": best_score, "best_epoch": best_epoch,
                      "bad_epochs": bad_epochs, "curve": curve, "best_state": best_state, "steps": steps,
                      "samples_seen": samples_seen, "elapsed": elapsed_before + time.perf_counter() - t0},
                     ckpt_file)
        print(f"epoch {epoch + 1}: train loss {row['train_loss']:.5g}, val {score_name} {score:.5g}, "
              f"lr {lr:.3g}, {steps} steps" + (" (early stop)" if stopped else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)

    wall = elapsed_before + time.perf_counter() - t0
    model.load_state_dict(best_state)
    _atomic_save(best_state, out_path)
    start_score = float(curve[0][f"val_{score_name}"])
    result = FitResult(best_score if best_epoch > 0 else start_score, best_epoch, len(curve) - 1, wall,
                       str(device), curve, resumed, optimiser_steps=steps, samples_seen=samples_seen,
                       beats_start=best_epoch > 0, start_score=start_score)
    n_params = sum(p.numel() for p in model.parameters())
    write_card(out_path, {**card, "n_parameters": n_params}, settings, result, score_name)
    write_curve(out_path, curve, score_name)
    return result


def write_card(out_path: Path, card: dict, settings: TrainSettings, result: FitResult, score_name: str) -> Path:
    """The model card ``models/<stage>-<method>.json`` beside the state dict (with the
    provenance of :func:`mrichain.provenance.provenance`)."""
    from mrichain.io import save_json
    from mrichain.provenance import provenance

    full = {
        **card,
        "state_dict": out_path.name,
        "training": asdict(settings),
        "seed": settings.seed,
        "validation_score": {"name": score_name, "value": result.best_score, "epoch": result.best_epoch,
                             "start": result.start_score},
        "beats_start": result.beats_start,
        "epochs_run": result.epochs_run,
        "optimiser_steps": result.optimiser_steps,
        "samples_seen": result.samples_seen,
        "wall_seconds": round(result.wall_seconds, 2),
        "device": result.device,
        "torch": torch.__version__,
        "provenance": provenance(),
        "curve": out_path.with_name(out_path.stem + "_curve.tsv").name,
    }
    return save_json(full, out_path.with_suffix(".json"))


def load_trained(model: str | Path, build: Callable[[dict], torch.nn.Module], device="cpu",
                 defaults: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """The network :func:`fit` saved at ``model`` (.pt), in eval mode on ``device``, and its card.

    ``build(hyper_parameters)`` rebuilds the architecture from the card's ``hyper_parameters``
    (merged over ``defaults``, for cards written before a hyper-parameter existed).

    The weights are read with :func:`safe_load` (nothing of a file from elsewhere runs) and must
    be a state dict (parameter names -> tensors) that fits the network: otherwise
    :class:`ModelFileError` naming ``model``.
    """
    from mrichain.io import load_json

    card_path = Path(model).with_suffix(".json")
    try:
        card = load_json(card_path)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{card_path}: cannot read the model card ({exc})") from None
    if not isinstance(card, dict):
        raise ModelFileError(f"{card_path}: a model card is a JSON object, got {type(card).__name__}")
    net = build({**(defaults or {}), **card.get("hyper_parameters", {})})
    try:
        state = safe_load(model, map_location=device)
    except OSError as exc:
        raise ModelFileError(f"{model}: cannot read the model file ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - an unreadable or unsafe file is the user's to fix
        raise ModelFileError(f"{model}: not a model file torch loads safely with weights_only=True "
                             f"({_unsafe_load_reason(exc)}); a model file holds a state dict of tensors only "
                             f"(torch.save(model.state_dict(), path))") from None
    if not (isinstance(state, dict) and all(isinstance(k, str) for k in state)):
        raise ModelFileError(f"{model}: not a state dict (names -> tensors) but a {type(state).__name__}; "
                             f"a model file holds torch.save(model.state_dict(), path)")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ModelFileError(f"{model}: its state dict does not match the network its card "
                             f"{Path(model).with_suffix('.json').name} describes ({detail[:300]})") from None
    return net.to(device).eval(), card


def write_curve(out_path: Path, curve: list[dict], score_name: str) -> None:
    """Training curve as ``<name>_curve.tsv`` and ``<name>_curve.png`` beside the model."""
    import pandas as pd

    from mrichain.scoring.figures import plt

    tsv = out_path.with_name(out_path.stem + "_curve.tsv")
    pd.DataFrame(curve).to_csv(tsv, sep="\t", index=False, float_format="%.6g")
    if not curve:
        return
    fig, ax1 = plt.subplots(figsize=(5, 3.2))
    epochs = [r["epoch"] for r in curve]
    ax1.plot(epochs, [r["train_loss"] for r in curve], "o-", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [r[f"val_{score_name}"] for r in curve], "s--", color="tab:orange", label=f"val {score_name}")
    ax2.set_ylabel(f"val {score_name}")
    ax1.set_title(out_path.stem, fontsize=9)
    fig.tight_layout()
    fig.savefig(tsv.with_suffix(".png"), dpi=80)
    plt.close(fig)
