"""Fixtures shared across test modules."""
import time

import pytest

from dag import snakemake


@pytest.fixture(scope="session")
def local_run(tmp_path_factory):
    """The whole DAG on config/test.yaml, run locally once per session (integration tests share it;
    none of them may change it: copy it first)."""
    workdir = tmp_path_factory.mktemp("dag")
    t0 = time.perf_counter()
    snakemake(workdir)
    print(f"\nwhole DAG on config/test.yaml: {time.perf_counter() - t0:.1f} s")
    return workdir


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (small tensors; a second thread only waits on a shared 2-core
    machine), restored afterwards for the other modules. Use: pytestmark = usefixtures(...)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
