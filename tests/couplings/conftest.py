import pytest


def _pair_cost(x0, x1) -> float:
    return ((x0 - x1) ** 2).sum(1).mean().item()


def _sq_cost(a, b):
    return ((a.reshape(len(a), -1)[:, None].double() - b.reshape(len(b), -1)[None].double()) ** 2).sum(-1)


def _rows_index(sub, full):
    eq = (sub[:, None, :] == full[None, :, :]).all(-1)
    assert bool((eq.sum(1) == 1).all())
    return eq.float().argmax(1)


@pytest.fixture
def pair_cost():
    """Mean squared distance of the pairs ``(x0[i], x1[i])``."""
    return _pair_cost


@pytest.fixture
def sq_cost():
    """Squared-distance matrix ``(len(a), len(b))`` of flattened samples, in float64."""
    return _sq_cost


@pytest.fixture
def rows_index():
    """Index in ``full`` of each row of ``sub`` (rows of ``full`` are distinct)."""
    return _rows_index
