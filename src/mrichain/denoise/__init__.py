"""Denoising methods: ``METHODS[name](image, **params) -> image``.

image: nib.Nifti1Image float [X, Y, Z]; returns float32 nib.Nifti1Image on the same grid/affine.
Learned methods (``TRAINERS``) also take ``model=<state dict .pt>`` (its card JSON beside it).
"""
from __future__ import annotations



from mrichain.methods import Registry

METHODS: Registry = Registry({"antsnlm": "mrichain.denoise.antsnlm:antsnlm", "dncnn": "mrichain.denoise.dncnn:dncnn"})

#: Learned methods: ``TRAINERS[name](manifest, params, out_path, seed) -> mrichain.train.FitResult``;
#: the method then takes ``model=out_path``.
TRAINERS: Registry = Registry({"dncnn": "mrichain.denoise.dncnn:train"})
