"""The motion stage's floor (:mod:`mrichain.motion`); its classical method is
:func:`mrichain.motion.autofocus.autofocus`."""
from __future__ import annotations

import numpy as np

from mrichain.recon.zerofilled import zerofilled


def none(kspace: np.ndarray, mask: np.ndarray | None, shot: np.ndarray, **params) -> tuple[np.ndarray, np.ndarray]:
    """The floor: no correction (the zero-filled RSS of every acquired line) and no shot flagged
    (every score 0). Other ``params`` are accepted and ignored."""
    return zerofilled(kspace, mask), np.zeros(int(np.max(shot)) + 1)
