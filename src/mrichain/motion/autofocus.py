"""Retrospective motion correction by autofocus: each shot's in-plane translation found by making
the image sharpest (lowest entropy: :func:`mrichain.motion.quality.entropy_focus`), then undone in
k-space.

Atkinson et al. (IEEE Trans Med Imaging 16:903, 1997): a head that moved between shots leaves ghosts and blur that
spread the image's energy over more pixels, which raises the entropy of the intensity
distribution (the *entropy focus criterion*, EFC, also an image-quality index of MRIQC). A shot
acquired after a translation ``t`` carries its lines multiplied by ``exp(-2 pi i k.t)``
(:mod:`mrichain.simulate.motion`), so multiplying them by ``exp(+2 pi i k.t')`` undoes it exactly
when ``t' = t``, whatever the ordering or the acceleration; the entropy of the zero-filled
root-sum-of-squares image is lowest near there. Each shot's shift is searched by coordinates
(read-out, then phase encode), on a coarse grid then finer ones around the best value, shot after
shot, in ``sweeps`` passes (a shot's best shift depends on the others'). Shifts are
relative to the median shot (the head rests during most shots: the still pose is the reference).

What it cannot undo: rotation and through-plane motion (a rotated shot's lines are rotated
k-space, not a phase; a through-plane shift samples another slice). Shifts found for a rotated
shot are the translation that best aligns it, a partial correction; the shift magnitudes still
rank the shots, and so does the entropy each shot's shift removed (its *gain*, the detection
score of :func:`autofocus_shifts`).

Written here: no Python MRI library offers autofocus on multi-coil Cartesian k-space (sigpy,
torchio and MONAI have none); the search is a few lines of NumPy.
"""
from __future__ import annotations

import numpy as np

from mrichain.fft import ifft2c, rss
from mrichain.motion.consistency import scored_slices
from mrichain.motion.quality import entropy_focus


def _phase(shape_hw: tuple[int, int], t: np.ndarray) -> np.ndarray:
    """complex [H, W]: ``exp(+2 pi i (kx tx + ky ty))``, ``t`` the (tx, ty) shift in pixels of every
    line [W, 2] or of all of them [2] (kx, ky in cycles per pixel of the centred FFT)."""
    H, W = shape_hw
    kx = (np.arange(H) - H // 2) / H
    ky = (np.arange(W) - W // 2) / W
    t = np.broadcast_to(np.asarray(t, np.float64), (W, 2))
    return np.exp(2j * np.pi * (kx[:, None] * t[None, :, 0] + ky[None, :] * t[None, :, 1]))


def shift_shots(kspace: np.ndarray, shot: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """k-space [..., H, W] with every line of shot ``s`` moved back by ``shifts[s]`` (pixels along H
    and W): the linear phase of a translation by ``-shifts[s]``. complex64."""
    t = np.asarray(shifts, np.float64)[np.asarray(shot)]
    return (np.asarray(kspace) * _phase(np.shape(kspace)[-2:], t)).astype(np.complex64)


def autofocus_shifts(kspace: np.ndarray, mask: np.ndarray | None, shot: np.ndarray, *, n_slices: int,
                     max_shift: float, coarse_step: float, fine_step: float,
                     sweeps: int) -> tuple[np.ndarray, np.ndarray]:
    """Each shot's in-plane translation and how much undoing it sharpens the image.

    kspace: complex [S, C, H, W] (unacquired lines zero); mask: [W] or None; shot: int [W].
    Minimises :func:`entropy_focus` of the zero-filled RSS of
    :func:`mrichain.motion.consistency.scored_slices`. Search: per shot, one axis then the other,
    over the grid ``-max_shift .. max_shift`` pixels by ``coarse_step`` (first sweep), then
    ``+-4 coarse_step`` by ``coarse_step`` around the current value (middle sweeps: the best
    read-out shift depends on the phase-encode one), then ``+-coarse_step`` by ``fine_step``
    (last sweep); :func:`autofocus` holds the defaults.

    Returns shifts float64 [n_shots, 2] in pixels (read-out H, phase encode W) relative to the
    median shot, and gains float64 [n_shots]: how much higher the final image's entropy is with
    that one shot left uncorrected, relative (0 for the reference shot 0 and for shots with no
    acquired line). A still shot gains about nothing whatever its shift (a shot of a few
    outer lines barely changes the entropy, so its shift is unreliable, its gain small): the gain
    is the detection score.
    """
    k = np.asarray(kspace)[scored_slices(kspace, n_slices)]
    if mask is not None:
        k = k * (np.asarray(mask).reshape(-1) > 0)
    shot = np.asarray(shot).reshape(-1)
    n_shots = int(shot.max()) + 1
    hw = k.shape[-2:]
    # each shot's coil images, linear in its lines: image(t) = RSS(sum_s ifft(K_s * phase(t_s)))
    parts = [shot == s for s in range(n_shots)]
    t = np.zeros((n_shots, 2))
    images = np.stack([ifft2c(k * p) for p in parts])  # [n_shots, S', C, H, W]
    total = images.sum(axis=0)
    for sweep in range(sweeps):
        for s in range(1, n_shots):
            if not parts[s].any():
                continue
            others = total - images[s]
            ks = k * parts[s]
            best = entropy_focus(rss(total, coil_axis=1))
            for ax in range(2):
                centre = t[s, ax]
                if sweep == 0:
                    grid = np.arange(-max_shift, max_shift + 1e-9, coarse_step)
                elif sweep < sweeps - 1:
                    grid = centre + np.arange(-4 * coarse_step, 4 * coarse_step + 1e-9, coarse_step)
                else:
                    grid = centre + np.arange(-coarse_step, coarse_step + 1e-9, fine_step)
                for v in grid:
                    tt = t[s].copy()
                    tt[ax] = v
                    e = entropy_focus(rss(others + ifft2c(ks * _phase(hw, tt)), coil_axis=1))
                    if e < best:
                        best, t[s, ax] = e, v
            images[s] = ifft2c(ks * _phase(hw, t[s]))
            total = others + images[s]
    # each shot's gain: what undoing its shift removes from the final image's entropy
    final = entropy_focus(rss(total, coil_axis=1))
    gains = np.zeros(n_shots)
    for s in range(1, n_shots):
        if parts[s].any():
            uncorrected = entropy_focus(rss(total - images[s] + ifft2c(k * parts[s]), coil_axis=1))
            gains[s] = (uncorrected - final) / uncorrected
    return t - np.median(t, axis=0), gains


def autofocus(kspace: np.ndarray, mask: np.ndarray | None, shot: np.ndarray, *, n_slices: int = 8,
              max_shift: float = 4.0, coarse_step: float = 0.25, fine_step: float = 0.025, sweeps: int = 3,
              **params) -> tuple[np.ndarray, np.ndarray]:
    """The motion stage's ``autofocus`` (:mod:`mrichain.motion`): each shot's in-plane translation
    found (:func:`autofocus_shifts`; the search settings, with their defaults, are these) and undone.

    kspace: complex [S, C, H, W]; mask: [W] or None; shot: int [W]. Returns the zero-filled RSS
    image float32 [S, H, W] of the corrected k-space and each shot's gain [n_shots] (its
    detection score). Other ``params`` are accepted and ignored.
    """
    from mrichain.recon.zerofilled import zerofilled

    shifts, gains = autofocus_shifts(kspace, mask, shot, n_slices=n_slices, max_shift=max_shift,
                                     coarse_step=coarse_step, fine_step=fine_step, sweeps=sweeps)
    return zerofilled(shift_shots(kspace, shot, shifts), mask), gains
