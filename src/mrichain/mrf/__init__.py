"""MR fingerprinting: inversion-prepared FISP fingerprints simulated with the extended phase graph,
mapped to T1/T2/PD by dictionary matching (full and SVD-compressed) and by DRONE.

Modules: :mod:`config` (key-named config errors), :mod:`sequence` (the FISP train),
:mod:`epg` (the simulator), :mod:`dictionary` (grid, atoms, SVD, HDF5), :mod:`fingerprints`
(per-voxel fingerprints of a subject's ground truth), :mod:`matching`, :mod:`drone`,
:mod:`scores` (T1/T2 errors per tissue), :mod:`synthesis` (contrast-weighted images from maps).
"""
