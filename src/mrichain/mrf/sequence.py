"""The inversion-prepared FISP MR fingerprinting sequence (Jiang et al., MRM 74:1621, 2015).

One acquisition is an ideal adiabatic inversion, a delay ``ti_ms``, then ``n_timepoints``
repetitions. Repetition ``i`` plays an RF pulse of flip angle ``flip_deg[i]`` (phase 0), reads
the signal at ``te_ms`` and ends, ``tr_ms[i]`` after its pulse, with an unbalanced gradient that
dephases the magnetisation by one full cycle across the voxel (the FISP spoiler: one EPG state per
repetition, see :mod:`mrichain.mrf.epg`).

- Flip-angle train: ``n_lobes`` sinusoidal lobes of equal length. Lobe ``j`` rises from
  ``min_flip_deg`` to its peak and back: ``min + (peak_j - min) sin(pi u)``, ``u`` in (0, 1) the
  position inside the lobe; even lobes peak at ``max_flip_deg``, odd lobes at half of it (lobes
  of different height separate T2 from B1 and T1 better than equal ones).
- TR pattern: pseudo-random, uniform in ``[tr_min_ms, tr_max_ms]`` (default 12-15 ms), drawn from
  ``numpy.random.default_rng(seed)``, so the pattern is fixed by ``seed``.

Times in ms, angles in degrees. :func:`FispSequence.from_config` reads ``mrf.sequence`` and
names the key of a bad value (:class:`~mrichain.mrf.config.MrfConfigError`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mrichain.mrf.config import MrfConfigError, as_float, as_int, check_keys


@dataclass(frozen=True)
class FispSequence:
    """Parameters of an inversion-prepared FISP fingerprinting train (see the module docstring)."""

    n_timepoints: int = 1000
    n_lobes: int = 5
    max_flip_deg: float = 60.0
    min_flip_deg: float = 5.0
    tr_min_ms: float = 12.0
    tr_max_ms: float = 15.0
    te_ms: float = 2.0
    inversion: bool = True
    ti_ms: float = 40.0
    seed: int = 0

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ the train
    def flip_angles_deg(self) -> np.ndarray:
        """Flip angle of each repetition, float64 [n_timepoints], degrees."""
        t = self.n_timepoints
        lobe_len = t / self.n_lobes
        i = np.arange(t, dtype=np.float64)
        lobe = np.minimum((i // lobe_len).astype(int), self.n_lobes - 1)
        u = (i - lobe * lobe_len + 0.5) / lobe_len
        peak = np.where(lobe % 2 == 0, self.max_flip_deg, 0.5 * self.max_flip_deg)
        return self.min_flip_deg + (peak - self.min_flip_deg) * np.sin(np.pi * u)

    def repetition_times_ms(self) -> np.ndarray:
        """Repetition time of each repetition, float64 [n_timepoints], ms (fixed by ``seed``)."""
        rng = np.random.default_rng(self.seed)
        return rng.uniform(self.tr_min_ms, self.tr_max_ms, self.n_timepoints)

    def duration_ms(self) -> float:
        """Length of one acquisition (inversion delay included), ms."""
        return float(self.repetition_times_ms().sum() + (self.ti_ms if self.inversion else 0.0))

    def to_dict(self) -> dict:
        """The parameters as a JSON/HDF5-attribute friendly dict (``from_config`` reads it back)."""
        return asdict(self)

    # ------------------------------------------------------------------ config
    def validate(self, key: str = "mrf.sequence") -> None:
        """Raise :class:`MrfConfigError` naming ``<key>.<field>`` for an impossible value."""
        as_int(self.n_timepoints, f"{key}.n_timepoints", 10, 100_000)
        as_int(self.n_lobes, f"{key}.n_lobes", 1, self.n_timepoints)
        as_float(self.max_flip_deg, f"{key}.max_flip_deg", 0.0, 180.0, lo_open=True)
        as_float(self.min_flip_deg, f"{key}.min_flip_deg", 0.0, self.max_flip_deg)
        as_float(self.tr_min_ms, f"{key}.tr_min_ms", 0.0, lo_open=True)
        as_float(self.tr_max_ms, f"{key}.tr_max_ms", self.tr_min_ms)
        as_float(self.te_ms, f"{key}.te_ms", 0.0, lo_open=True)
        if self.te_ms >= self.tr_min_ms:
            raise MrfConfigError(f"{key}.te_ms: must be below tr_min_ms ({self.tr_min_ms:g}), got {self.te_ms:g}")
        if not isinstance(self.inversion, bool):
            raise MrfConfigError(f"{key}.inversion: must be true or false, got {self.inversion!r}")
        as_float(self.ti_ms, f"{key}.ti_ms", 0.0)
        as_int(self.seed, f"{key}.seed", 0)

    @classmethod
    def from_config(cls, block: dict | None) -> "FispSequence":
        """The sequence of the config block ``mrf.sequence`` (missing keys take the defaults)."""
        key = "mrf.sequence"
        values = check_keys(block, _DEFAULTS, key)
        for name, default in _DEFAULTS.items():  # types first, so that the dataclass gets clean values
            if isinstance(default, bool):
                continue
            if isinstance(default, int):
                values[name] = as_int(values[name], f"{key}.{name}")
            else:
                values[name] = as_float(values[name], f"{key}.{name}")
        return cls(**values)  # __post_init__ checks the ranges, naming the key


_DEFAULTS = {name: getattr(FispSequence, name) for name in FispSequence.__dataclass_fields__}
