"""ANTs non-local means denoising (``DenoiseImage``, Manjon et al. 2010) via antspyx."""
from __future__ import annotations

import nibabel as nib

from mrichain.antsbridge import ants_env, from_ants, to_ants


def antsnlm(
    image: nib.Nifti1Image,
    *,
    noise_model: str = "Rician",
    shrink_factor: int = 1,
    patch_radius: int = 1,
    search_radius: int = 2,
    threads: int = 1,
) -> nib.Nifti1Image:
    """Denoise a magnitude image with ANTs' adaptive non-local means.

    image: [X, Y, Z] float (magnitude, arbitrary signal units). ``noise_model`` 'Rician'
    (magnitude MRI) or 'Gaussian'; ``patch_radius`` / ``search_radius`` in voxels.
    Returns float32 [X, Y, Z] on the same grid and affine. Deterministic (no random sampling).
    """
    import ants

    with ants_env(threads):
        out = ants.denoise_image(
            to_ants(image), shrink_factor=int(shrink_factor), p=int(patch_radius),
            r=int(search_radius), noise_model=str(noise_model),
        )
    return from_ants(out, image.affine)
