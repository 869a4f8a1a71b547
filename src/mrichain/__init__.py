"""mrichain: the MRI chain (simulate, acquire, reconstruct, denoise, register, segment, predict),
classical and learned methods side by side, scored against simulated ground truth."""

__version__ = "0.1.0"

LABELS = {0: "BG", 1: "CSF", 2: "GM", 3: "WM"}
"""Tissue label values used by every label map in the pipeline."""


class UserError(Exception):
    """An error the user can act on (a bad input file, a job given a GPU its torch cannot use).

    The command line prints its message as one line and exits with status 2, with no traceback
    (``mrichain.cli.main``); anything else is a bug and keeps its traceback.
    """
