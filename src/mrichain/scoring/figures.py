"""PNG montages: several volumes side by side on three orthogonal mid-slices (matplotlib)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LABEL_CMAP = matplotlib.colors.ListedColormap(["black", "#3b8bd9", "#a0a0a0", "#f2f2f2"])


def save_figure(fig, path: str | Path, title: str = "") -> Path:
    """Title (if any), lay out, write ``fig`` as a PNG at 80 dpi and close it; returns ``path``."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def _mid_slices(vol: np.ndarray) -> list[np.ndarray]:
    """Sagittal, coronal, axial mid-slices of a [X, Y, Z] RAS volume, oriented for display."""
    x, y, z = (s // 2 for s in vol.shape)
    return [np.rot90(vol[x, :, :]), np.rot90(vol[:, y, :]), np.rot90(vol[:, :, z])]


def save_montage(panels: list[tuple[str, np.ndarray, str]], path: str | Path, title: str = "") -> Path:
    """Draw ``panels`` as columns and the three mid-slices as rows, and save a PNG.

    panels: (title, volume [X, Y, Z], kind) with kind ``"image"`` (grey, shared window per
    column: 0 to the 99.5th percentile), ``"labels"`` (0 BG, 1 CSF, 2 GM, 3 WM) or ``"error"``
    (absolute difference, hot colour map, one scale shared by all error panels).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(panels)
    errors = [float(np.percentile(np.asarray(v, dtype=np.float32), 99.5)) for _, v, k in panels if k == "error"]
    error_max = max(errors) if errors and max(errors) > 0 else 1.0  # one scale: errors compare across methods
    fig, axes = plt.subplots(3, n, figsize=(2.4 * n, 7.2), squeeze=False)
    for col, (name, vol, kind) in enumerate(panels):
        vol = np.asarray(vol, dtype=np.float32)
        if kind == "labels":
            kw = dict(cmap=LABEL_CMAP, vmin=0, vmax=3, interpolation="nearest")
        elif kind == "error":
            kw = dict(cmap="hot", vmin=0, vmax=error_max)
        else:
            kw = dict(cmap="gray", vmin=0, vmax=float(np.percentile(vol, 99.5)) or 1.0)
        for row, sl in enumerate(_mid_slices(vol)):
            ax = axes[row, col]
            ax.imshow(sl, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    return save_figure(fig, path, title)


def save_scatter(x, y, path: str | Path, *, xlabel: str, ylabel: str, title: str = "") -> Path:
    """Scatter plot of y against x with the identity line (e.g. predicted vs true age)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x, y, s=18)
    lo, hi = float(min(np.min(x), np.min(y))), float(max(np.max(x), np.max(y)))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
