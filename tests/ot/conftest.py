import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The OT tests run many tiny kernels: one intra-op thread (see ``one_thread``)."""
    yield
