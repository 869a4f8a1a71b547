"""MR fingerprinting: inversion-prepared FISP fingerprints simulated with the extended phase graph,
mapped to T1/T2/PD by dictionary matching (full and SVD-compressed) and by DRONE.

Modules: :mod:`config` (key-named config errors), :mod:`sequence` (the FISP train),
:mod:`epg` (the simulator), :mod:`dictionary` (grid, atoms, SVD, HDF5), :mod:`fingerprints`
(per-voxel fingerprints of a subject's ground truth), :mod:`matching`, :mod:`drone`,
:mod:`scores` (T1/T2 errors per tissue), :mod:`synthesis` (contrast-weighted images from maps).
"""
from __future__ import annotations

from mrichain.plan.stages import MRF_METHODS, Registry

METHODS: Registry = Registry({m.name: m.entry for m in MRF_METHODS})
"""Method name -> ``(dictionary[, model=]) -> mapper``, ``mapper(fingerprints) -> {"t1", "t2", "pd"}``."""
TRAINERS: Registry = Registry({m.name: m.trainer for m in MRF_METHODS if m.learned})

__all__ = ["METHODS", "TRAINERS"]
