"""Real scans into the chain: fastMRI-layout k-space files and BIDS structural images.

``fastmri``: the ISMRMRD header, slice-batched reconstruction, fastMRI's crop and evaluation,
retrospective undersampling.
``structural``: reorientation, resampling, bias correction and skull stripping of a lab's T1w.
``bids``: the T1w images of a BIDS dataset (pybids), their keys, masks and ages; the manifest.
``derivatives``: BIDS derivative names (one path builder), ``dataset_description.json``, name checks.
"""
