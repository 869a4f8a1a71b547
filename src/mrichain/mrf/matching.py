"""Dictionary matching: maximum normalised inner product (Ma et al., Nature 495:187, 2013), full
and SVD-compressed (McGivney et al. 2014).

For a fingerprint ``f`` [T] and unit atoms ``d_j`` the match is ``j* = argmax_j |<d_j, f>|``
(``<d, f> = sum_t conj(d_t) f_t``; the fingerprint's own scale does not change the argmax, so it
need not be normalised). T1, T2 (and B1) are those of atom ``j*``, and PD is the scale of the
match: ``f ~ PD * norm_j * d_j`` gives ``PD = |<d_j*, f>| / norm_j*``.

SVD-compressed: fingerprints are projected onto the dictionary's basis ``V_r`` [T, rank]
(``f_c = f V_r``) and matched against the renormalised compressed atoms; PD is
``|<c_j*, f_c>| / (norm_j* * cnorm_j*)`` with ``cnorm`` the norm of the atom inside the subspace.

Voxels are matched in chunks whose score matrix [chunk, n_atoms] stays under ``memory_mb``, so
memory is bounded for any number of voxels; the scores are one complex matrix product per chunk
(BLAS on the CPU, cuBLAS when the tensors are on CUDA).
"""
from __future__ import annotations

import torch

from mrichain.mrf.dictionary import Dictionary


def match(fingerprints: torch.Tensor, dictionary: Dictionary, *, compressed: bool = False,
          memory_mb: float = 256.0) -> dict[str, torch.Tensor]:
    """Match every fingerprint to the dictionary.

    fingerprints: complex [n_voxels, T] (on the dictionary's device); compressed: match in the SVD
    space (the dictionary must carry a basis: :func:`~mrichain.mrf.dictionary.compress`).
    Returns ``{"t1", "t2" (ms), "b1", "pd": float32 [n_voxels], "index": int64 [n_voxels]}``.
    """
    if compressed:
        if dictionary.basis is None:
            raise ValueError("compressed matching needs a dictionary with an SVD basis (dictionary.compress)")
        atoms, scale = dictionary.compressed, dictionary.norms * dictionary.compressed_norms
        basis = dictionary.basis.to(fingerprints.dtype)
    else:
        atoms, scale, basis = dictionary.atoms, dictionary.norms, None
    atoms_h = atoms.conj().T.to(fingerprints.dtype)  # [T or rank, n_atoms]
    n_atoms = atoms_h.shape[1]
    chunk = max(1, int(memory_mb * 2**20 // (n_atoms * 12)))  # complex64 scores + float32 magnitudes
    best = torch.empty(fingerprints.shape[0], dtype=torch.int64, device=fingerprints.device)
    size = torch.empty(fingerprints.shape[0], dtype=torch.float32, device=fingerprints.device)
    for s in range(0, fingerprints.shape[0], chunk):
        f = fingerprints[s:s + chunk]
        if basis is not None:
            f = f @ basis
        mag = (f @ atoms_h).abs()
        value, idx = mag.max(dim=1)
        best[s:s + chunk], size[s:s + chunk] = idx, value.float()
    best_cpu = best.to(dictionary.t1.device)
    pd = size / scale.to(size.device)[best]
    return {"t1": dictionary.t1[best_cpu], "t2": dictionary.t2[best_cpu], "b1": dictionary.b1[best_cpu],
            "pd": pd, "index": best}



def full_mapper(dictionary: Dictionary):
    """The ``matching`` method: fingerprints [n_voxels, T] -> :func:`match` against the full atoms."""
    return lambda fingerprints: match(fingerprints, dictionary, compressed=False)


def svd_mapper(dictionary: Dictionary):
    """The ``matchingsvd`` method: fingerprints [n_voxels, T] -> :func:`match` in the dictionary's
    SVD space (refused at once, before any fingerprint, without a basis)."""
    if dictionary.basis is None:
        raise ValueError("compressed matching needs a dictionary with an SVD basis (dictionary.compress)")
    return lambda fingerprints: match(fingerprints, dictionary, compressed=True)
