"""Learned brain age: a small SFCN trained as Peng et al. train it (soft labels over age bins, KL loss).

Network (after Peng et al. 2021, "Accurate brain age prediction with lightweight deep neural
networks", shrunk for a CPU and a cohort of 10-40 subjects): ``len(channels)`` blocks of
conv3x3x3-BatchNorm-ReLU-maxpool2 (the last block without pooling), a 1x1x1 conv-BN-ReLU, global
average pooling, a BatchNorm over the pooled features, dropout, and a linear layer giving one logit
per age bin; the softmax over the bins is the predicted age distribution.

Why each part is what it is:

- *Soft labels and KL loss* (Peng et al.): each training age ``a`` becomes the Gaussian
  N(a, ``label_sigma``^2) integrated over bins of ``bin_width`` years (renormalised over the bins),
  and the loss is KL(label || prediction). The predicted age is the expectation over the bin
  centres and the interval comes from the bin distribution itself, so no variance head is needed:
  a Gaussian-NLL variance head can lower its loss by widening to the age SD and predicting the
  mean (a constant), which is what it did here. Peng et al. use 1-year bins and sigma 1 y.
- *Bins*: ``bin_range`` ``[lo, hi]`` years (the workflow passes ``cohort.age_range``: the
  expectation over bins can never leave the range, so bins fitted to a small training set's span
  cannot reach an older or younger test subject), or null: the training ages' range widened on each
  side by ``max(3 label_sigma, 10 % of the range)`` and rounded out to whole bins. The resolved
  range is what the card stores (it sizes the last layer).
- *Normalised pooled features*: a globally average-pooled ReLU map is dominated by what every
  brain shares (on the default cohort the pooled features vary between subjects by 0.002 around a
  mean of 0.29), so a linear layer on them must use huge weights to carry age. The BatchNorm over
  the pooled features centres and scales them across subjects, so between-subject differences
  are of order one. All BatchNorm statistics are re-estimated on the whole (unaugmented) training
  set before every validation (:func:`recalibrate_norms`, "precise BN"): with a few dozen steps
  of batch 4 the running averages are still mostly their initial values (mean 0, variance 1),
  which in eval mode would divide a 0.002 signal by 1.
- *Dropout 0 by default*: Peng et al. use 0.5 before the last layer with 12,949 training subjects.
  Dropout on a feature with second moment ``E[h^2]`` acts like a ridge penalty of
  ``p/(1-p) E[h^2]`` on its weight; on the uncentred pooled features that penalty was ~10^4 times
  the feature's between-subject variance and crushed the only layer that could carry age. After
  the norm layer it is merely a ridge of ``p/(1-p)``, but with 10-40 training subjects the weight
  decay and the small network already regularise; a config may set it (and ``mc_samples`` then
  mixes the bin distributions of that many dropout passes at inference).
- *Average-pool downsampling*: the image is brought to ``voxel_mm`` by block means when that is an
  integer multiple of its voxel size (2 mm -> 4 mm averages 8 voxels, so the noise SD halves),
  otherwise by Gaussian anti-aliasing and linear resampling. Linear resampling alone at an integer
  factor only picks every other voxel (decimation) and averages no noise.

Input: the (denoised) T1w image at ``voxel_mm`` (4 mm) isotropic, centre-padded/cropped to
``input_shape``, divided by the 99th percentile of the non-zero voxels and clipped to [0, 1.5].
Augmentation (torch RNG, re-seeded per epoch by the engine): random left-right flip and random
integer shifts of up to ``max_shift`` voxels per axis.

Selection (the engine keeps the epoch with the highest validation score): a constant predictor
must not be selectable, so the score (:func:`selection_score`) is minus the val MAE only for an
epoch whose val MAE is below that of the best constant on the val split (every constant's MAE is
at least the val median's); any other epoch scores below every such epoch, lower the higher its
MAE on the (unaugmented) training set. With a val split too small or too narrow to be beaten by
a constant (2 subjects of 56 and 57 y: the median's MAE is 0.5 y), this selects the epoch that
fits the training set best within the fixed budget. The card says which rule selected.
"""
from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

ARCHITECTURE = "sfcn-small-softlabel"

DEFAULT_HYPER = {
    "channels": [8, 16, 32, 32],
    "dropout": 0.0,
    "voxel_mm": 4.0,
    "input_shape": [44, 52, 44],
    "bin_range": None,
    "bin_width": 1.0,
    "label_sigma": 1.0,
    "max_shift": 2,
    "flip": True,
}
DEFAULT_LOOP = {"epochs": 100, "lr": 1e-2, "batch_size": 4, "patience": 30, "max_batches_per_epoch": None,
                "weight_decay": 1e-3, "grad_clip": 1.0, "schedule": "cosine"}


# ----------------------------------------------------------------------------------- age bins
def resolve_bin_range(ages, label_sigma: float, bin_width: float) -> list[float]:
    """[lo, hi] years: the ages' range widened by ``max(3 label_sigma, 10 % of the range)`` on each
    side, rounded out to multiples of ``bin_width`` (lo not below 0)."""
    ages = np.asarray(ages, dtype=np.float64)
    a0, a1 = float(ages.min()), float(ages.max())
    margin = max(3.0 * float(label_sigma), 0.1 * (a1 - a0))
    lo = max(0.0, math.floor((a0 - margin) / bin_width) * bin_width)
    hi = math.ceil((a1 + margin) / bin_width) * bin_width
    return [float(lo), float(max(hi, lo + bin_width))]


def bin_centres(bin_range, bin_width: float) -> torch.Tensor:
    """Centres (years, float64 [K]) of the K = round((hi - lo) / bin_width) bins of ``bin_range``."""
    lo, hi = (float(v) for v in bin_range)
    k = max(1, int(round((hi - lo) / float(bin_width))))
    return lo + float(bin_width) * (torch.arange(k, dtype=torch.float64) + 0.5)


def soft_labels(ages: torch.Tensor, centres: torch.Tensor, bin_width: float, sigma: float) -> torch.Tensor:
    """Gaussian soft labels [B, K]: the mass of N(age, sigma^2) in each bin [c - w/2, c + w/2],
    renormalised over the K bins (an age near or past the range's edge piles onto the edge bins).
    sigma 0: all mass in the bin holding the age (clamped to the range)."""
    ages = ages.to(torch.float64)[:, None]
    if sigma <= 0:
        idx = torch.bucketize(ages[:, 0], centres[:-1] + 0.5 * bin_width)
        return F.one_hot(idx, len(centres)).to(torch.float64)
    z = lambda e: 0.5 * (1.0 + torch.erf((e - ages) / (sigma * math.sqrt(2.0))))  # noqa: E731 - the CDF
    mass = z(centres[None] + 0.5 * bin_width) - z(centres[None] - 0.5 * bin_width)
    return mass / mass.sum(dim=1, keepdim=True).clamp_min(1e-300)


def soft_label_kl(log_p: torch.Tensor, ages: torch.Tensor, centres: torch.Tensor, bin_width: float,
                  sigma: float) -> torch.Tensor:
    """Mean over the batch of KL(soft label || prediction) (nats): ``log_p`` [B, K] log-probabilities."""
    q = soft_labels(ages, centres, bin_width, sigma).to(log_p.dtype)
    return F.kl_div(log_p, q, reduction="batchmean")


def expected_age(p: torch.Tensor | np.ndarray, centres) -> np.ndarray:
    """Expectation over the bins (years, float64 [B]) of probabilities ``p`` [B, K]."""
    p = np.asarray(p, dtype=np.float64)
    return p @ np.asarray(centres, dtype=np.float64)


def bin_quantiles(p: np.ndarray, centres, bin_width: float, qs) -> np.ndarray:
    """Quantiles [len(qs), B] (years) of bin distributions ``p`` [B, K], each bin's mass spread
    uniformly over [c - w/2, c + w/2] (the CDF is piecewise linear between bin edges)."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    lower_edges = np.asarray(centres, dtype=np.float64) - 0.5 * bin_width
    cdf = np.cumsum(p, axis=1)  # [B, K]: the CDF at each bin's upper edge
    u = np.clip(np.asarray(qs, dtype=np.float64), 1e-12, 1.0)
    out = np.empty((len(u), p.shape[0]))
    for b in range(p.shape[0]):
        # the first bin whose upper edge reaches u: its mass is > 0 and the CDF below it is < u
        k = np.minimum(np.searchsorted(cdf[b], u - 1e-12, side="left"), p.shape[1] - 1)
        below = cdf[b, k] - p[b, k]
        out[:, b] = lower_edges[k] + bin_width * np.clip((u - below) / np.maximum(p[b, k], 1e-300), 0.0, 1.0)
    return out


# --------------------------------------------------------------------------------------- model
class PooledNorm(torch.nn.BatchNorm1d):
    """BatchNorm over the pooled features [B, C]; a batch of one (the short last batch) is
    normalised with the running statistics instead of failing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class SFCN(torch.nn.Module):
    """Small SFCN. forward(x [B, 1, X, Y, Z]) -> log-probabilities over the ``n_bins`` age bins [B, K]."""

    def __init__(self, channels=(8, 16, 32, 32), n_bins: int = 60, dropout: float = 0.0):
        super().__init__()
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            layers += [torch.nn.Conv3d(c_in, int(c), 3, padding=1, bias=False), torch.nn.BatchNorm3d(int(c)),
                       torch.nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(torch.nn.MaxPool3d(2))
            c_in = int(c)
        layers += [torch.nn.Conv3d(c_in, c_in, 1, bias=False), torch.nn.BatchNorm3d(c_in), torch.nn.ReLU(inplace=True)]
        self.features = torch.nn.Sequential(*layers)
        self.norm = PooledNorm(c_in, eps=1e-7)  # the default 1e-5 would damp a between-subject SD of 0.002
        self.dropout = torch.nn.Dropout(float(dropout))
        self.head = torch.nn.Linear(c_in, int(n_bins))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised pooled features [B, C]."""
        return self.norm(self.features(x).mean(dim=(2, 3, 4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.dropout(self.pooled(x))), dim=1)


def build_model(hyper: dict) -> SFCN:
    """The network of resolved hyper-parameters (``bin_range`` a [lo, hi] pair, not null)."""
    if hyper.get("bin_range") is None:
        raise ValueError("sfcn: build_model needs a resolved bin_range [lo, hi] (the trainer derives it from the ages)")
    n_bins = len(bin_centres(hyper["bin_range"], hyper["bin_width"]))
    return SFCN(channels=hyper["channels"], n_bins=n_bins, dropout=hyper["dropout"])


@torch.no_grad()
def recalibrate_norms(model: SFCN, x: torch.Tensor, chunk: int = 64) -> torch.Tensor | None:
    """"Precise BN" on ``x`` [N, 1, X, Y, Z] (the whole training set, unaugmented); returns the
    eval-mode pooled features before the norm layer [N, C] (None when N < 2).

    Two passes: the convolutional BatchNorms take the statistics of a forward pass in train mode
    (chunks of ``chunk`` images, averaged); then, with those in eval mode, the pooled features'
    norm takes their exact mean and (unbiased) variance over the N images, so in eval mode the
    training set's normalised features have mean 0 and SD 1 (up to eps). Leaves the model in eval
    mode; dropout is not applied. A set of one image leaves every statistic as it is."""
    model.eval()
    if x.shape[0] < 2:
        return None
    norms = [m for m in model.features.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the chunks
        m.train()
    parts = torch.tensor_split(x, max(1, math.ceil(x.shape[0] / int(chunk))))
    try:
        for part in parts:
            model.features(part)
    finally:
        for m in norms:
            m.momentum = 0.1
        model.eval()
    raw = torch.cat([model.features(part).mean(dim=(2, 3, 4)) for part in parts])
    model.norm.running_mean.copy_(raw.mean(dim=0))
    model.norm.running_var.copy_(raw.var(dim=0, unbiased=True))
    return raw


# ------------------------------------------------------------------------------------ data prep
def block_mean(data: np.ndarray, factors) -> np.ndarray:
    """Average pooling by integer ``factors`` per axis: [X, Y, Z] -> [X // fx, Y // fy, Z // fz],
    each output voxel the mean of its block (trailing voxels that fill no whole block dropped)."""
    f = [int(v) for v in factors]
    shape = [n // k for n, k in zip(data.shape, f)]
    cropped = data[tuple(slice(0, s * k) for s, k in zip(shape, f))]
    return cropped.reshape(shape[0], f[0], shape[1], f[1], shape[2], f[2]).mean(axis=(1, 3, 5), dtype=np.float64)


def downsample(img: nib.Nifti1Image, voxel_mm: float) -> np.ndarray:
    """The image at ``voxel_mm`` isotropic (float32), closest-canonical (RAS) voxel order: block
    means when ``voxel_mm`` is an integer multiple (>= 1) of each voxel size, else Gaussian
    anti-aliasing (FWHM = the size ratio, in voxels) and linear resampling in world space."""
    from nibabel.processing import resample_to_output
    from scipy.ndimage import gaussian_filter

    img = nib.as_closest_canonical(img)
    data = np.asarray(img.dataobj, dtype=np.float32)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    ratio = float(voxel_mm) / zooms
    axis_aligned = np.allclose(np.abs(img.affine[:3, :3]), np.diag(zooms), atol=1e-4)
    if axis_aligned and np.allclose(ratio, np.round(ratio), atol=1e-3) and np.all(np.round(ratio) >= 1):
        return block_mean(data, np.round(ratio).astype(int)).astype(np.float32)
    sigma = np.sqrt(np.clip(ratio ** 2 - 1.0, 0.0, None)) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    if np.any(sigma > 0):
        data = gaussian_filter(data, sigma)
    out = resample_to_output(nib.Nifti1Image(data, img.affine), voxel_sizes=(float(voxel_mm),) * 3, order=1)
    return np.asarray(out.dataobj, dtype=np.float32)


def prepare_image(img: nib.Nifti1Image | str | Path, voxel_mm: float, shape) -> np.ndarray:
    """Image -> float32 [*shape]: at ``voxel_mm`` isotropic (:func:`downsample`), centre pad/crop,
    divided by the 99th percentile of the non-zero voxels, clipped to [0, 1.5]."""
    from mrichain.io import load_image

    if not isinstance(img, nib.Nifti1Image):
        img = load_image(img)
    data = downsample(img, voxel_mm)
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.float32)
    src, dst = [], []
    for n, m in zip(data.shape, out.shape):
        if n >= m:
            a = (n - m) // 2
            src.append(slice(a, a + m))
            dst.append(slice(0, m))
        else:
            a = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(a, a + n))
    out[tuple(dst)] = data[tuple(src)]
    nz = out[out > 0]
    scale = float(np.percentile(nz, 99)) if nz.size else 1.0
    return np.clip(out / max(scale, 1e-6), 0.0, 1.5).astype(np.float32)


class AgeDataset(Dataset):
    """Preprocessed images [1, X, Y, Z] and ages (years); optional flip/shift augmentation."""

    def __init__(self, items: list[dict], hyper: dict, augment: bool):
        self.x = [torch.from_numpy(prepare_image(it["image"], hyper["voxel_mm"], hyper["input_shape"]))[None]
                  for it in items]
        self.age = torch.tensor([float(it["age"]) for it in items], dtype=torch.float64)
        self.augment, self.max_shift, self.flip = augment, int(hyper["max_shift"]), bool(hyper["flip"])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if self.augment:  # global torch RNG: re-seeded per epoch by mrichain.train.fit
            if self.flip and torch.rand(()) < 0.5:
                x = torch.flip(x, dims=(1,))  # left-right (RAS axis 0)
            if self.max_shift > 0:
                shifts = torch.randint(-self.max_shift, self.max_shift + 1, (3,)).tolist()
                x = torch.roll(x, shifts=shifts, dims=(1, 2, 3))
        return x, self.age[i]


# ------------------------------------------------------------------------------------- training
class AgeLoss:
    """KL(Gaussian soft label || predicted bin distribution), mean over the batch (nats)."""

    def __init__(self, hyper: dict):
        self.centres = bin_centres(hyper["bin_range"], hyper["bin_width"])
        self.width, self.sigma = float(hyper["bin_width"]), float(hyper["label_sigma"])

    def __call__(self, model, batch, device):
        x, age = batch
        log_p = model(x.to(device))
        return soft_label_kl(log_p, age.to(device), self.centres.to(device), self.width, self.sigma)


def predict_ages(model: SFCN, x: torch.Tensor, centres) -> np.ndarray:
    """Expected ages (years, float64 [N]) of images ``x`` [N, 1, X, Y, Z], model in eval mode."""
    model.eval()
    with torch.no_grad():
        return expected_age(model(x).exp().cpu(), centres)


def best_constant_mae(ages) -> float:
    """The lowest MAE (years) any constant prediction reaches on ``ages``: that of their median."""
    ages = np.asarray(ages, dtype=np.float64)
    return float(np.mean(np.abs(ages - np.median(ages))))


def selection_score(val_mae: float, constant_mae: float, train_mae: float) -> float:
    """The score the engine selects epochs by (higher is better), in years.

    ``-val_mae`` when the val MAE beats the best constant's (``constant_mae``); otherwise
    ``-(constant_mae + train_mae)``, below every epoch that beats it and ordered by the fit of the
    training set. A constant predictor can never take the first branch, so it is never selected
    over a model that beats it on val, and among models that do not, the better-fitting one wins."""
    if val_mae < constant_mae:
        return -float(val_mae)
    return -float(constant_mae) - float(train_mae)


class SelectionScore:
    """``score_fn`` of the engine: recalibrates the norms on the training set, then
    :func:`selection_score` of the val and train MAE; keeps the last values in ``last``."""

    def __init__(self, train_data: AgeDataset, centres: torch.Tensor):
        self.train_x, self.train_age = torch.stack(train_data.x), train_data.age.numpy()
        self.centres = centres.numpy()
        self.last: dict = {}

    def __call__(self, model, data: AgeDataset, device) -> float:
        raw = recalibrate_norms(model, self.train_x.to(device))
        if raw is None:
            train_pred = predict_ages(model, self.train_x.to(device), self.centres)
        else:  # the same network on the pooled features just computed
            with torch.no_grad():
                train_pred = expected_age(F.softmax(model.head(model.norm(raw)), dim=1).cpu(), self.centres)
        val_pred = predict_ages(model, torch.stack(data.x).to(device), self.centres)
        val_age = data.age.numpy()
        val_mae = float(np.mean(np.abs(val_pred - val_age)))
        const = best_constant_mae(val_age)
        train_mae = float(np.mean(np.abs(train_pred - self.train_age)))
        self.last = {"val_mae_years": val_mae, "val_best_constant_mae_years": const, "train_mae_years": train_mae,
                     "selected_by": "val_mae" if val_mae < const else "train_mae"}
        return selection_score(val_mae, const, train_mae)


def train(manifest: dict, params: dict, out_path: str, seed: int = 0, *, on_epoch_end=None, progress: bool = True):
    """Train on ``manifest = {"train": [{"image", "age"}], "val": [...]}``; write .pt, card, curve.

    params: loop keys (``TrainSettings`` fields: ``epochs, lr, batch_size, schedule, ...``) and model
    keys (``channels, dropout, voxel_mm, input_shape, bin_range, bin_width, label_sigma, max_shift,
    flip``); defaults in ``DEFAULT_LOOP``/``DEFAULT_HYPER``. Validation score: :func:`selection_score`
    (years; minus the val MAE where it beats the best constant on val). The card records the
    resolved bins, the selection rule and which branch selected the saved epoch.
    """
    from mrichain.io import load_json, save_json
    from mrichain.train import fit, hash_files, seed_everything
    from mrichain.train.params import hyper_parameters, split_params

    settings, rest = split_params(params, {**DEFAULT_LOOP, **DEFAULT_HYPER}, seed, "sfcn")
    hyper = hyper_parameters(rest, DEFAULT_HYPER)
    ages = [float(it["age"]) for it in manifest["train"]]
    if hyper["bin_range"] is None:
        hyper["bin_range"] = resolve_bin_range(ages, hyper["label_sigma"], hyper["bin_width"])
    hyper["bin_range"] = [float(v) for v in hyper["bin_range"]]
    centres = bin_centres(hyper["bin_range"], hyper["bin_width"])
    train_ds = AgeDataset(manifest["train"], hyper, augment=True)
    val_ds = AgeDataset(manifest["val"], hyper, augment=False)
    paths = [it["image"] for it in list(manifest["train"]) + list(manifest["val"])]
    card = {
        "architecture": ARCHITECTURE,
        "hyper_parameters": hyper,
        "target": {"name": "age_years", "bins": len(centres), "bin_range": hyper["bin_range"],
                   "bin_width": hyper["bin_width"], "label_sigma": hyper["label_sigma"],
                   "mean": float(np.mean(ages)), "std": float(np.std(ages))},
        "training_data_hash": hash_files(paths),
        "training_ages": ages,
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "selection": "val MAE where it beats the best constant on val (the val median's MAE), "
                     "else the lowest train MAE within the fixed budget",
        "description": "small SFCN (conv-BN-ReLU-maxpool blocks, GAP, BatchNorm of the pooled features, linear -> "
                       "age-bin logits); KL to Gaussian soft labels (Peng et al.); precise-BN before each "
                       "validation; age = expectation over bins, interval from the bin distribution",
    }
    seed_everything(int(seed))
    model = build_model(hyper)
    score = SelectionScore(train_ds, centres)
    result = fit(model, train_ds, val_ds, loss_fn=AgeLoss(hyper), score_fn=score, settings=settings,
                 out_path=out_path, card=card, score_name="neg_mae_years", on_epoch_end=on_epoch_end,
                 progress=progress)
    score(model, val_ds, next(model.parameters()).device)  # the saved (selected) weights: which rule, what MAE
    card_path = Path(out_path).with_suffix(".json")
    save_json({**load_json(card_path), **{"selected": score.last}}, card_path)
    return result


# ------------------------------------------------------------------------------------ inference
def load_model(model: str | Path) -> tuple[SFCN, dict]:
    """Rebuild the network from the card JSON beside ``model`` and load its state dict.
    The card's hyper-parameters are checked against the method's declared params
    (:func:`mrichain.train.params.check_hyper_parameters`) before the network is built."""
    from mrichain.train import load_trained
    from mrichain.train.params import check_hyper_parameters

    from mrichain.train.params import CardError

    card = Path(model).with_suffix(".json")

    def build(hp: dict) -> SFCN:
        hyper = check_hyper_parameters(card, hp, "predict", "sfcn", DEFAULT_HYPER)
        if hyper["bin_range"] is None:
            raise CardError(f"{card}: hyper-parameter 'bin_range' is null: a trained card holds the resolved [lo, hi]")
        return build_model(hyper)

    return load_trained(model, build, "cpu", DEFAULT_HYPER)


def mc_predict(net: SFCN, x: torch.Tensor, mc_samples: int, seed: int) -> np.ndarray:
    """Bin probabilities [T, B, K] of ``mc_samples`` passes with dropout on (BatchNorm frozen);
    one pass when the network has no dropout."""
    net.eval()
    passes = max(1, int(mc_samples)) if net.dropout.p > 0 else 1
    if passes > 1:
        net.dropout.train()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    out = []
    try:
        with torch.no_grad():
            feats = net.pooled(x)  # deterministic part, computed once
            for _ in range(passes):
                out.append(F.softmax(net.head(net.dropout(feats)), dim=1).double().numpy())
    finally:
        torch.random.set_rng_state(gen_state)
        net.eval()
    return np.stack(out)


def predict_images(model: str, image_paths: list[str], *, mc_samples: int = 30, interval: float = 0.9, seed: int = 0):
    """Brain age of each image with a predictive interval from the predicted bin distribution.

    Returns a pandas DataFrame, one row per path (index = ``image``), columns ``predicted_age``
    (expectation over the bins of the mixture of the MC-dropout passes' distributions, years),
    ``predicted_lower`` / ``predicted_upper`` (its (1 - interval)/2 and (1 + interval)/2
    quantiles), ``epistemic_sd`` (SD of the passes' expectations; 0 without dropout) and
    ``aleatoric_sd`` (root mean of the passes' within-distribution variances), in years.
    """
    import pandas as pd

    net, card = load_model(model)
    hyper = {**DEFAULT_HYPER, **card.get("hyper_parameters", {})}
    centres = bin_centres(hyper["bin_range"], hyper["bin_width"]).numpy()
    x = torch.stack([torch.from_numpy(prepare_image(p, hyper["voxel_mm"], hyper["input_shape"]))[None]
                     for p in image_paths])
    probs = mc_predict(net, x, mc_samples, seed)  # [T, B, K]
    means = probs @ centres  # [T, B]
    variances = probs @ centres ** 2 - means ** 2 + float(hyper["bin_width"]) ** 2 / 12.0
    mixture = probs.mean(axis=0)
    q = (1.0 - float(interval)) / 2.0
    lower, upper = bin_quantiles(mixture, centres, float(hyper["bin_width"]), [q, 1.0 - q])
    return pd.DataFrame({
        "image": [str(p) for p in image_paths],
        "predicted_age": expected_age(mixture, centres),
        "predicted_lower": lower,
        "predicted_upper": upper,
        "epistemic_sd": means.std(axis=0),
        "aleatoric_sd": np.sqrt(np.clip(variances, 0.0, None).mean(axis=0)),
    }).set_index("image", drop=False)
