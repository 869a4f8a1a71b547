"""The fingerprint dictionary: a log-spaced T1 x T2 (x B1) grid, its simulated atoms, SVD
compression (McGivney et al., IEEE TMI 33:2311, 2014) and HDF5 storage.

- Grid (:class:`~mrichain.mrf.grid.Grid`, config ``mrf.dictionary``; torch-free, so the config check reads it): ``t1_steps`` T1 values log-spaced over
  ``t1_range_ms``, ``t2_steps`` T2 values over ``t2_range_ms``, only the pairs with T2 < T1 (a
  T2 above T1 is not physical), optionally times ``b1_values``. Log spacing gives every value
  the same relative step, so the grid's *quantisation error* (:meth:`Grid.quantisation_error`:
  the largest relative distance of a value in the range to its nearest grid value,
  ``sqrt(step ratio) - 1``) is one number per axis.
- Atoms (:func:`build_dictionary`): the EPG fingerprints of the grid points, complex
  [n_atoms, n_timepoints], each divided by its norm; the norms are kept, because a voxel's
  fingerprint is ``PD * norm * atom`` and PD comes from that scale.
- SVD (:func:`compress`): the first ``rank`` right singular vectors ``V_r`` [n_timepoints, rank]
  of the atom matrix (from the eigenvectors of the Gram matrix ``D^H D``, which BLAS builds faster
  than an SVD of the tall matrix). Atoms and fingerprints are projected, ``x V_r``, and matched in
  the rank-dimensional space; the compressed atoms are renormalised there (``compressed``, with
  ``compressed_norms``, the norm each kept of its unit atom: the energy inside the subspace).
- HDF5 (:func:`save_dictionary` / :func:`load_dictionary`): datasets ``atoms``, ``norms``, ``t1``,
  ``t2``, ``b1`` (+ ``basis``, ``compressed``, ``compressed_norms``), attributes ``sequence`` and
  ``grid`` (JSON) and ``n_states``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from mrichain.mrf.epg import simulate_fisp
from mrichain.mrf.grid import DEFAULT_STATES, Grid, check_rank, dictionary_settings  # noqa: F401 (re-exported)
from mrichain.mrf.sequence import FispSequence

FORMAT = "mrichain-mrf-dictionary/1"


@dataclass
class Dictionary:
    """Normalised atoms and their grid.

    atoms: complex64 [n_atoms, n_timepoints], unit norm; norms: float32 [n_atoms], the norm of the
    simulated fingerprint (PD 1) of each atom; t1, t2 (ms), b1: float32 [n_atoms]; basis: complex64
    [n_timepoints, rank] or None; compressed: complex64 [n_atoms, rank] unit-norm projections
    ``atoms @ basis`` (renormalised), compressed_norms: float32 [n_atoms] their norms before that.
    """

    atoms: torch.Tensor
    norms: torch.Tensor
    t1: torch.Tensor
    t2: torch.Tensor
    b1: torch.Tensor
    sequence: FispSequence
    grid: Grid
    n_states: int = DEFAULT_STATES
    basis: torch.Tensor | None = None
    compressed: torch.Tensor | None = None
    compressed_norms: torch.Tensor | None = None
    source: str | None = None
    """The file it was read from (:func:`load_dictionary`), for messages; None when built."""

    def __len__(self) -> int:
        return int(self.atoms.shape[0])

    @property
    def rank(self) -> int | None:
        return None if self.basis is None else int(self.basis.shape[1])

    def to(self, device) -> "Dictionary":
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return replace(self, atoms=move(self.atoms), norms=move(self.norms), t1=move(self.t1), t2=move(self.t2),
                       b1=move(self.b1), basis=move(self.basis), compressed=move(self.compressed),
                       compressed_norms=move(self.compressed_norms))

    def nearest(self, t1_ms, t2_ms, b1=None) -> torch.Tensor:
        """Index of the atom nearest to each (T1, T2[, B1]) on the log grid, int64 [n].

        Rounds log T1 and log T2 to the nearest grid step (B1 to the nearest value; default 1);
        a (T1, T2) whose nearest grid point has T2 >= T1 takes the longest T2 below T1 of its T1
        row (or, if that row has none, of the first row that has one).
        """
        t1_ax, t2_ax, b1_ax = self.grid.axes()
        table = _index_table(self.grid)
        t1 = np.asarray(torch.as_tensor(t1_ms).detach().cpu(), np.float64).reshape(-1)
        t2 = np.asarray(torch.as_tensor(t2_ms).detach().cpu(), np.float64).reshape(-1)
        i = _nearest_log(t1_ax, t1)
        j = _nearest_log(t2_ax, t2)
        b = np.ones_like(t1) if b1 is None else np.broadcast_to(
            np.asarray(torch.as_tensor(b1).detach().cpu(), np.float64).reshape(-1), t1.shape)
        k = np.abs(b[:, None] - b1_ax[None, :]).argmin(1)
        return torch.as_tensor(table[i, j, k], dtype=torch.int64)


def _nearest_log(axis: np.ndarray, values: np.ndarray) -> np.ndarray:
    if axis.size == 1:
        return np.zeros(values.shape, np.int64)
    lv = np.log(np.clip(values, 1e-6, None))
    step = (np.log(axis[-1]) - np.log(axis[0])) / (axis.size - 1)
    return np.clip(np.rint((lv - np.log(axis[0])) / step), 0, axis.size - 1).astype(np.int64)


@lru_cache(maxsize=8)
def _index_table(grid: Grid) -> np.ndarray:
    """Atom index of every (T1, T2, B1) grid cell, int64 [n1, n2, nb]; cells with T2 >= T1 point
    to the longest valid T2 of their row (see :meth:`Dictionary.nearest`). Cached per grid (read-only)."""
    t1, t2, b1 = grid.axes()
    valid = t2[None, :] < t1[:, None]  # [n1, n2]
    table = -np.ones((t1.size, t2.size, b1.size), np.int64)
    table[valid] = np.arange(int(valid.sum()) * b1.size).reshape(-1, b1.size)
    first_row = int(np.argmax(valid.any(1)))
    for i in range(t1.size):
        row = i if valid[i].any() else first_row
        j_max = int(np.nonzero(valid[row])[0].max())
        fill = table[row, j_max]
        table[i, ~valid[i]] = fill
    table.flags.writeable = False
    return table


def build_dictionary(sequence: FispSequence, grid: Grid, *, n_states: int = DEFAULT_STATES,
                     device: str | torch.device = "cpu", chunk: int | None = None) -> Dictionary:
    """Simulate the atoms of every grid point with :func:`~mrichain.mrf.epg.simulate_fisp`,
    normalise them and keep their norms. Returns a :class:`Dictionary` on the CPU."""
    t1, t2, b1 = grid.points()
    kwargs = {} if chunk is None else {"chunk": int(chunk)}
    sig = simulate_fisp(sequence, torch.as_tensor(t1, device=device), torch.as_tensor(t2, device=device),
                        torch.as_tensor(b1, device=device), n_states=n_states, **kwargs).cpu()
    norms = torch.linalg.vector_norm(sig, dim=1)
    atoms = (sig / norms.clamp_min(1e-30)[:, None]).to(torch.complex64)
    f32 = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    return Dictionary(atoms, norms.float(), f32(t1), f32(t2), f32(b1), sequence, grid, int(n_states))


def svd_basis(atoms: torch.Tensor, rank: int) -> torch.Tensor:
    """The first ``rank`` right singular vectors of ``atoms`` [n_atoms, T], complex [T, rank]
    (eigenvectors of the Gram matrix ``atoms^H atoms`` of largest eigenvalue, computed in float64)."""
    gram = (atoms.conj().T @ atoms).to(torch.complex128)
    _, vecs = torch.linalg.eigh(gram)  # ascending eigenvalues
    return vecs[:, -rank:].flip(1).to(atoms.dtype)


def compress(dictionary: Dictionary, rank: int, key: str = "mrf.dictionary.svd_rank") -> Dictionary:
    """``dictionary`` with its SVD basis of ``rank`` and its compressed atoms (see the module
    docstring). A rank above the time points or the atoms raises :class:`MrfConfigError` naming ``key``."""
    rank = check_rank(rank, dictionary.atoms.shape[1], len(dictionary), key)
    basis = svd_basis(dictionary.atoms, rank)
    comp = dictionary.atoms @ basis
    cnorm = torch.linalg.vector_norm(comp, dim=1)
    return replace(dictionary, basis=basis, compressed=comp / cnorm.clamp_min(1e-30)[:, None],
                   compressed_norms=cnorm.float())


def save_dictionary(dictionary: Dictionary, path: str | Path) -> Path:
    """Write ``dictionary`` to HDF5 ``path`` (see the module docstring for the layout)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with h5py.File(tmp, "w") as f:
        for name in ("atoms", "norms", "t1", "t2", "b1", "basis", "compressed", "compressed_norms"):
            value = getattr(dictionary, name)
            if value is not None:
                f.create_dataset(name, data=value.detach().cpu().numpy())
        f.attrs["format"] = FORMAT
        f.attrs["sequence"] = json.dumps(dictionary.sequence.to_dict(), sort_keys=True)
        f.attrs["grid"] = json.dumps(dictionary.grid.to_dict(), sort_keys=True)
        f.attrs["n_states"] = int(dictionary.n_states)
        f.attrs["quantisation_error"] = dictionary.grid.quantisation_error()
    tmp.replace(path)
    return path


def load_dictionary(path: str | Path) -> Dictionary:
    """Read a dictionary written by :func:`save_dictionary`."""
    import h5py

    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path}: not an mrichain MRF dictionary (format {f.attrs.get('format')!r})")
        get = lambda name: torch.from_numpy(f[name][()]) if name in f else None  # noqa: E731
        seq = FispSequence(**json.loads(f.attrs["sequence"]))
        grid = Grid(**json.loads(f.attrs["grid"]))
        return Dictionary(get("atoms"), get("norms"), get("t1"), get("t2"), get("b1"), seq, grid,
                          int(f.attrs["n_states"]), get("basis"), get("compressed"), get("compressed_norms"),
                          source=str(path))
