"""Smooth random diffeomorphic warps: random velocity field integrated by scaling and squaring.

Convention: a displacement ``u`` [X, Y, Z, 3] in RAS millimetres maps subject voxel positions to
template positions, so ``subject(x) = template(x + u(x))`` (a pull-back, as in voxelmorph/ANTs
"warp" fields).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def smooth_random_field(
    shape: tuple[int, ...], voxel_mm: float, smoothness_mm: float, rng: np.random.Generator, n: int = 1
) -> np.ndarray:
    """``n`` smooth Gaussian random fields on a grid of ``shape`` (isotropic ``voxel_mm`` voxels).

    White noise is drawn on a coarse grid (spacing ``smoothness_mm / 4``, padded by 3 sigma so the
    field has no boundary or wrap-around artefacts), smoothed with a Gaussian of standard deviation
    ``smoothness_mm`` and interpolated (cubic) to the fine grid. Returns float64 [n, *shape]
    with arbitrary scale; callers normalise.
    """
    h = max(smoothness_mm / 4.0, voxel_mm)
    sigma_c = smoothness_mm / h
    pad = int(np.ceil(3 * sigma_c))
    cshape = tuple(int(np.ceil(s * voxel_mm / h)) + 2 + 2 * pad for s in shape)
    noise = rng.standard_normal((n, *cshape))
    axes = [pad + np.arange(s) * (voxel_mm / h) for s in shape]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    out = np.empty((n, *shape))
    for i in range(n):
        sm = ndi.gaussian_filter(noise[i], sigma_c, mode="nearest")
        out[i] = ndi.map_coordinates(sm, coords, order=3, mode="nearest")
    return out


def _mm_to_vox(disp_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[..., 3] mm displacement -> [3, ...] voxel displacement."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3])
    return np.moveaxis(disp_mm @ inv.T, -1, 0)


def _vox_to_mm(disp_vox: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """[3, ...] voxel displacement -> [..., 3] mm displacement."""
    return np.moveaxis(disp_vox, 0, -1) @ np.asarray(affine, dtype=np.float64)[:3, :3].T


def _grid(shape) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))


def compose_voxel(f: np.ndarray, u: np.ndarray, grid: np.ndarray | None = None, order: int = 1) -> np.ndarray:
    """Sample each channel of ``f`` [C, X, Y, Z] at ``x + u(x)`` (``u`` [3, X, Y, Z] in voxels)."""
    grid = _grid(u.shape[1:]) if grid is None else grid
    coords = grid + u
    return np.stack([ndi.map_coordinates(c, coords, order=order, mode="nearest") for c in f])


def integrate_velocity(v_vox: np.ndarray, max_step_vox: float = 0.5) -> np.ndarray:
    """Scaling and squaring: stationary velocity [3, X, Y, Z] (voxels) -> displacement (voxels)."""
    vmax = float(np.sqrt((v_vox**2).sum(0)).max())
    n = max(0, int(np.ceil(np.log2(max(vmax / max_step_vox, 1.0))))) + 2
    u = v_vox / 2.0**n
    grid = _grid(v_vox.shape[1:])
    for _ in range(n):
        u = u + compose_voxel(u, u, grid)
    return u


def random_displacement(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    max_displacement_mm: float,
    smoothness_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A smooth random diffeomorphism as a displacement field, float32 [X, Y, Z, 3] in RAS mm.

    The velocity field (3 smooth Gaussian random fields of correlation length ``smoothness_mm``)
    is scaled so its largest vector is ``max_displacement_mm`` long, integrated by scaling and
    squaring, and the result rescaled so its largest displacement is exactly
    ``max_displacement_mm`` (a factor close to 1; the map stays invertible for smooth fields).
    """
    voxel_mm = float(np.abs(np.linalg.det(np.asarray(affine)[:3, :3])) ** (1 / 3))
    v = smooth_random_field(shape, voxel_mm, smoothness_mm, rng, n=3)  # treat as mm, RAS
    v = np.moveaxis(v, 0, -1)
    norm = float(np.sqrt((v**2).sum(-1)).max())
    if max_displacement_mm <= 0 or norm == 0:
        return np.zeros((*shape, 3), np.float32)
    v *= max_displacement_mm / norm
    u = _vox_to_mm(integrate_velocity(_mm_to_vox(v, affine)), affine)
    u *= max_displacement_mm / float(np.sqrt((u**2).sum(-1)).max())
    return u.astype(np.float32)


def apply_displacement(volume: np.ndarray, disp_mm: np.ndarray, affine: np.ndarray, order: int = 1) -> np.ndarray:
    """Pull ``volume`` ([X, Y, Z] or [C, X, Y, Z]) through ``disp_mm`` [X, Y, Z, 3]: out(x) = volume(x + u(x)).

    Linear interpolation by default (order=0 for labels); edges extend the nearest value.
    """
    vol = np.asarray(volume, dtype=np.float64)
    squeeze = vol.ndim == 3
    vol = vol[None] if squeeze else vol
    out = compose_voxel(vol, _mm_to_vox(np.asarray(disp_mm, np.float64), affine), order=order)
    return out[0] if squeeze else out


def jacobian_determinant(disp_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """det(I + du/dx) of the map x -> x + u(x), float32 [X, Y, Z] (<= 0 means folding)."""
    u = _mm_to_vox(np.asarray(disp_mm, np.float64), affine)  # voxel units: du_vox/dx_vox
    jac = np.empty(u.shape[1:] + (3, 3))
    for i in range(3):
        g = np.gradient(u[i], axis=(0, 1, 2))
        for j in range(3):
            jac[..., i, j] = g[j] + (1.0 if i == j else 0.0)
    return np.linalg.det(jac).astype(np.float32)
