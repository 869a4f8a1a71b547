"""mrichain: the MRI chain (simulate, acquire, reconstruct, denoise, register, segment, predict),
classical and learned methods side by side, scored against simulated ground truth."""

__version__ = "0.1.0"

LABELS = {0: "BG", 1: "CSF", 2: "GM", 3: "WM"}
"""Tissue label values used by every label map in the pipeline."""
