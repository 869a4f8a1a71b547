"""The motion stage's methods (:mod:`mrichain.motion`): ``(kspace, mask, shot, **params) -> (image,
scores)``, see the package docstring for the shapes."""
from __future__ import annotations

import numpy as np

from mrichain.fft import ifft2c, rss


def none(kspace: np.ndarray, mask: np.ndarray | None, shot: np.ndarray, **params) -> tuple[np.ndarray, np.ndarray]:
    """The floor: no correction (the zero-filled RSS of every acquired line) and no shot flagged
    (every score 0). Other ``params`` are accepted and ignored."""
    k = np.asarray(kspace)
    if mask is not None:
        k = k * (np.asarray(mask).reshape(-1) > 0)
    return rss(ifft2c(k), coil_axis=1).astype(np.float32), np.zeros(int(np.max(shot)) + 1)


def autofocus(kspace: np.ndarray, mask: np.ndarray | None, shot: np.ndarray, *, n_slices: int = 8,
              max_shift: float = 4.0, coarse_step: float = 0.25, fine_step: float = 0.025,
              sweeps: int = 3, **params) -> tuple[np.ndarray, np.ndarray]:
    """Each shot's in-plane translation undone (:func:`mrichain.motion.autofocus.autofocus`): the
    corrected zero-filled RSS and each shot's gain (how much sharper the image is with its shift
    undone) as its score. Other ``params`` are accepted and ignored."""
    from mrichain.motion.autofocus import autofocus as search

    image, _, gains = search(kspace, mask, shot, n_slices=n_slices, max_shift=max_shift, coarse_step=coarse_step,
                             fine_step=fine_step, sweeps=sweeps)
    return image, gains
