"""MR fingerprinting: inversion-prepared FISP fingerprints simulated with the extended phase graph,
mapped to T1/T2/PD by dictionary matching (full and SVD-compressed) and by DRONE.

Modules: :mod:`config` (key-named config errors), :mod:`sequence` (the FISP train),
:mod:`epg` (the simulator), :mod:`dictionary` (grid, atoms, SVD, HDF5), :mod:`fingerprints`
(per-voxel fingerprints of a subject's ground truth), :mod:`matching`, :mod:`drone`,
:mod:`scores` (T1/T2 errors per tissue), :mod:`synthesis` (contrast-weighted images from maps).
"""
from __future__ import annotations

from mrichain.plan.stages import MRF, Registry, method_registry, trainer_registry

METHODS: Registry = method_registry(MRF)
"""Method name -> ``(dictionary[, model=]) -> mapper``, ``mapper(fingerprints) -> {"t1", "t2", "pd"}``."""
TRAINERS: Registry = trainer_registry(MRF)

__all__ = ["METHODS", "TRAINERS"]
