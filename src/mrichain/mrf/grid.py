"""The dictionary's (T1, T2[, B1]) grid and the ``mrf.dictionary`` settings, without torch: the
config check (:mod:`mrichain.plan.config`, run when the Snakefile is parsed) validates them before any
job. :mod:`mrichain.mrf.dictionary` simulates the atoms of a grid.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mrichain.mrf.config import MrfConfigError, as_float, as_int, as_range, check_keys

DEFAULT_STATES = 64
"""EPG dephasing orders kept by default (:mod:`mrichain.mrf.epg`)."""


@dataclass(frozen=True)
class Grid:
    """The (T1, T2[, B1]) points of a dictionary (T1/T2 in ms, B1 relative)."""

    t1_range_ms: tuple[float, float] = (20.0, 5000.0)
    t1_steps: int = 60
    t2_range_ms: tuple[float, float] = (5.0, 2500.0)
    t2_steps: int = 60
    b1_values: tuple[float, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "t1_range_ms", tuple(float(v) for v in self.t1_range_ms))
        object.__setattr__(self, "t2_range_ms", tuple(float(v) for v in self.t2_range_ms))
        if self.b1_values is not None:
            object.__setattr__(self, "b1_values", tuple(float(v) for v in self.b1_values))
        self.validate()

    def validate(self, key: str = "mrf.dictionary") -> None:
        """Raise :class:`MrfConfigError` naming the key of an empty or unphysical grid."""
        as_range(self.t1_range_ms, f"{key}.t1_range_ms")
        as_range(self.t2_range_ms, f"{key}.t2_range_ms")
        for axis in ("t1_steps", "t2_steps"):
            steps = getattr(self, axis)
            if isinstance(steps, (int, float)) and not isinstance(steps, bool) and steps < 1:
                raise MrfConfigError(f"{key}.{axis}: the grid is empty ({axis} = {steps}); need >= 1")
            as_int(steps, f"{key}.{axis}", 1, 100_000)
        if self.b1_values is not None:
            if len(self.b1_values) == 0:
                raise MrfConfigError(f"{key}.b1_values: the grid is empty (no B1 value); "
                                     "leave it out (null) for B1 = 1")
            for i, v in enumerate(self.b1_values):
                as_float(v, f"{key}.b1_values[{i}]", 0.0, 3.0, lo_open=True)
        t1, t2 = self.axes()[:2]
        if not (t2[:, None] < t1[None, :]).any():
            raise MrfConfigError(
                f"{key}.t2_range_ms: every grid point has T2 >= T1 (T2 from {t2.min():g} ms, T1 up to "
                f"{t1.max():g} ms): the dictionary keeps only T2 < T1, so it would be empty")

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The T1 [t1_steps], T2 [t2_steps] (ms, log-spaced) and B1 [n_b1] axes, float64."""
        t1 = np.geomspace(*self.t1_range_ms, int(self.t1_steps))
        t2 = np.geomspace(*self.t2_range_ms, int(self.t2_steps))
        b1 = np.asarray(self.b1_values if self.b1_values is not None else (1.0,), np.float64)
        return t1, t2, b1

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """T1, T2 (ms), B1 of every atom, float64 [n_atoms]: T1-major, then T2, then B1; T2 < T1 only."""
        t1, t2, b1 = self.axes()
        g1, g2, gb = np.meshgrid(t1, t2, b1, indexing="ij")
        keep = g2 < g1
        return g1[keep], g2[keep], gb[keep]

    def __len__(self) -> int:
        return int(self.points()[0].size)

    def quantisation_error(self) -> float:
        """The largest relative error of snapping a T1 or T2 inside the ranges to the grid:
        ``sqrt(r) - 1`` for the larger step ratio ``r`` of the two log-spaced axes (0 for one step
        over a zero-width range)."""
        worst = 0.0
        for (lo, hi), n in ((self.t1_range_ms, self.t1_steps), (self.t2_range_ms, self.t2_steps)):
            if n > 1:
                worst = max(worst, float(np.sqrt((hi / lo) ** (1.0 / (n - 1))) - 1.0))
            elif hi > lo:
                worst = max(worst, float(hi / lo - 1.0))
        return worst

    def to_dict(self) -> dict:
        d = asdict(self)
        d["t1_range_ms"], d["t2_range_ms"] = list(self.t1_range_ms), list(self.t2_range_ms)
        d["b1_values"] = None if self.b1_values is None else list(self.b1_values)
        return d

    @classmethod
    def from_config(cls, block: dict | None) -> "Grid":
        """The grid of the config block ``mrf.dictionary`` (other keys of the block, such as
        ``svd_rank`` and ``n_states``, are read by :func:`dictionary_settings`)."""
        key = "mrf.dictionary"
        values = check_keys({k: v for k, v in (block or {}).items() if k not in _OTHER_KEYS},
                            _GRID_DEFAULTS, key)
        for name in ("t1_range_ms", "t2_range_ms"):
            as_range(values[name], f"{key}.{name}")
        for name in ("t1_steps", "t2_steps"):
            v = values[name]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 1:
                raise MrfConfigError(f"{key}.{name}: the grid is empty ({name} = {v}); need >= 1")
            as_int(v, f"{key}.{name}", 1, 100_000)
        b1 = values["b1_values"]
        if b1 is not None:
            if not isinstance(b1, (list, tuple)):
                raise MrfConfigError(f"{key}.b1_values: must be a list of relative B1 values or null, got {b1!r}")
            for i, v in enumerate(b1):
                as_float(v, f"{key}.b1_values[{i}]", 0.0, 3.0, lo_open=True)
        return cls(**values)  # validates the rest (empty grid, T2 >= T1 everywhere), naming the key


_GRID_DEFAULTS = {name: getattr(Grid, name) for name in Grid.__dataclass_fields__}
_OTHER_KEYS = ("svd_rank", "n_states")


def dictionary_settings(block: dict | None, n_timepoints: int) -> dict:
    """``{"grid": Grid, "svd_rank": int, "n_states": int}`` of the config block ``mrf.dictionary``.

    ``svd_rank`` (default 25) must be in [1, n_timepoints]; ``n_states`` (EPG orders, default
    :data:`~mrichain.mrf.epg.DEFAULT_STATES`) >= 1. Errors name the key.
    """
    key = "mrf.dictionary"
    block = dict(block or {})
    grid = Grid.from_config(block)
    rank = check_rank(block.get("svd_rank", 25), n_timepoints, len(grid), f"{key}.svd_rank")
    n_states = as_int(block.get("n_states", DEFAULT_STATES), f"{key}.n_states", 1, 100_000)
    return {"grid": grid, "svd_rank": rank, "n_states": n_states}


def check_rank(rank, n_timepoints: int, n_atoms: int | None = None, key: str = "mrf.dictionary.svd_rank") -> int:
    """``rank`` if 1 <= rank <= min(n_timepoints, n_atoms), else :class:`MrfConfigError` naming ``key``."""
    rank = as_int(rank, key, 1)
    if rank > n_timepoints:
        raise MrfConfigError(f"{key}: rank {rank} is more than the sequence's {n_timepoints} time points "
                             "(mrf.sequence.n_timepoints)")
    if n_atoms is not None and rank > n_atoms:
        raise MrfConfigError(f"{key}: rank {rank} is more than the dictionary's {n_atoms} atoms")
    return rank
