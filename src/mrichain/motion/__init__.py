"""Motion: detecting and correcting rigid head motion in k-space (simulated by
:mod:`mrichain.simulate.motion`)."""
