"""k-NN precision and recall against a brute-force numpy reference and on shifted Gaussians."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from monge.metrics.precision_recall import knn_radii, manifold_membership, precision_recall


def _reference(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Direct transcription of Kynkäänniemi et al. (2019), Eq. 1-2, with scipy distances."""

    def radii(x):
        d = cdist(x, x)
        return np.array([np.sort(np.delete(d[i], i))[k - 1] for i in range(len(x))])

    def member(q, s, r):
        d = cdist(q, s)
        return np.array([any(d[i, j] <= r[j] for j in range(len(s))) for i in range(len(q))])

    return float(member(fake, real, radii(real)).mean()), float(member(real, fake, radii(fake)).mean())


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(5, 40), m=st.integers(5, 40), d=st.integers(1, 4), k=st.integers(1, 4),
    shift=st.floats(0.0, 3.0), seed=st.integers(0, 2**16),
)
def test_matches_the_brute_force_definition(n, m, d, k, shift, seed):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d))
    fake = rng.standard_normal((m, d)) * 0.7 + shift
    res = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k, chunk_size=7)
    p, r = _reference(real, fake, k)
    assert res.precision == pytest.approx(p, abs=1e-12)
    assert res.recall == pytest.approx(r, abs=1e-12)


def test_knn_radii_and_membership_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3))
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, 2]
    np.testing.assert_allclose(knn_radii(torch.from_numpy(x), 3, chunk_size=16).numpy(), expected, rtol=1e-12)
    q = rng.standard_normal((20, 3)) * 2
    got = manifold_membership(torch.from_numpy(q), torch.from_numpy(x), torch.from_numpy(expected))
    ref = (cdist(q, x) <= expected[None, :]).any(axis=1)
    assert got.numpy().tolist() == ref.tolist()


def test_identical_sets_score_one_and_shift_lowers_both():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 8, generator=g)
    same = precision_recall(real, real.clone())
    assert same.precision == 1.0 and same.recall == 1.0 and same.k == 3
    fresh = precision_recall(real, torch.randn(1000, 8, generator=g))
    assert fresh.precision > 0.85 and fresh.recall > 0.85
    scores = [precision_recall(real, torch.randn(1000, 8, generator=g) + s).precision for s in (0.5, 1.5, 3.0)]
    assert scores[0] > scores[1] > scores[2] and scores[2] < 0.1


def test_mode_dropping_keeps_precision_and_halves_recall():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[-6.0, 0.0], [6.0, 0.0]])
    real = torch.randn(800, 2, generator=g) * 0.5 + centres[torch.arange(800) % 2]
    fake = torch.randn(800, 2, generator=g) * 0.5 + centres[0]  # one mode only
    res = precision_recall(real, fake)
    assert res.precision > 0.9
    assert res.recall == pytest.approx(0.5, abs=0.06)


def test_image_shaped_inputs_are_flattened():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(30, 1, 4, 4, generator=g)
    b = torch.randn(30, 1, 4, 4, generator=g)
    assert precision_recall(a, b) == precision_recall(a.reshape(30, -1), b.reshape(30, -1))


def test_bad_inputs():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="same sample shape"):
        precision_recall(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="fake has 3 samples but k=3"):
        precision_recall(x, torch.randn(3, 2))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="real contains 1 NaN"):
        precision_recall(torch.tensor([[float("nan"), 0.0]] + [[0.0, 0.0]] * 9), x)
    with pytest.raises(ValueError, match="radii must have one entry per support point"):
        manifold_membership(x, x, torch.ones(3))
