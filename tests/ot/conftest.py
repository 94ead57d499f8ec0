import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The OT tests run many tiny kernels; on a shared 2-core machine intra-op threads only
    contend (a 64x48 logsumexp takes ~100x longer with 2 threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
