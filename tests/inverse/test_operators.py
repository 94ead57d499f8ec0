"""Measurement operators: adjoint identity, pseudo-inverse identities, the blur against scipy, bad input."""

import pytest
import torch

from monge.inverse import (
    AvgPool,
    GaussianBlur,
    GaussianNoise,
    Identity,
    Mask,
    RandomProjection,
    measure,
)

SHAPE = (2, 8, 6)


def operators():
    g = torch.Generator().manual_seed(3)
    return [
        Identity(SHAPE),
        Mask((torch.rand(SHAPE, generator=g) > 0.4).float()),
        Mask.half(SHAPE, "top"),
        GaussianBlur(SHAPE, std=1.2),
        GaussianBlur(SHAPE, std=0.7, radius=4),
        AvgPool(SHAPE, 2),
        RandomProjection(SHAPE, 20, seed=1),
        RandomProjection(5, 3),
    ]


IDS = ["identity", "mask", "half", "blur", "blur_r4", "pool", "project", "project_flat"]


@pytest.mark.parametrize("op", operators(), ids=IDS)
def test_adjoint_identity(op):
    """<A x, y> = <x, A^T y> on random float64 batches."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((7, *op.shape), generator=g, dtype=torch.float64)
    y = torch.randn((7, *op.measurement_shape), generator=g, dtype=torch.float64)
    lhs = (op.forward(x) * y).flatten(1).sum(1)
    rhs = (x * op.adjoint(y)).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", operators(), ids=IDS)
def test_matrix_matches_forward_and_norm(op):
    a = op.matrix()
    x = torch.randn((4, *op.shape), dtype=torch.float64)
    torch.testing.assert_close(op.forward(x).flatten(1), x.flatten(1) @ a.T)
    assert op.norm_sq() == pytest.approx(float(torch.linalg.matrix_norm(a, 2)) ** 2, rel=1e-6)


@pytest.mark.parametrize("op", [o for o in operators() if o.has_pseudo_inverse],
                         ids=[i for i, o in zip(IDS, operators(), strict=True) if o.has_pseudo_inverse])
def test_pseudo_inverse_is_moore_penrose(op):
    """A A+ A = A, A+ A A+ = A+ and A+ equals numpy's pinv of the dense matrix."""
    a = op.matrix()
    p = op.pseudo_inverse(torch.eye(a.shape[0], dtype=torch.float64).reshape(-1, *op.measurement_shape))
    p = p.reshape(a.shape[0], -1).T  # (d, m): column j is A+ e_j
    torch.testing.assert_close(a @ p @ a, a, atol=1e-10, rtol=0)
    torch.testing.assert_close(p @ a @ p, p, atol=1e-10, rtol=0)
    torch.testing.assert_close(p, torch.linalg.pinv(a), atol=1e-9, rtol=0)


def test_blur_has_no_pseudo_inverse():
    op = GaussianBlur(SHAPE)
    with pytest.raises(NotImplementedError, match="no exact pseudo-inverse"):
        op.pseudo_inverse(torch.zeros(1, *SHAPE))


# without s2 only where A A^T is well conditioned (a blur's is not: its noise-free solve is no fair target)
GRAM_CASES = [(op, r2, s2) for op in operators() for r2, s2 in [(0.3, 0.05), (1.0, 0.0)]
              if s2 > 0 or not isinstance(op, GaussianBlur)]


@pytest.mark.parametrize("op,r2,s2", GRAM_CASES, ids=[f"{type(c[0]).__name__}-{c[2]}" for c in GRAM_CASES])
def test_gram_solve(op, r2, s2):
    """(r2 A A^T + s2 I)^{-1} v against a dense least-squares solve, for v in the range of A."""
    a = op.matrix()
    m = r2 * a @ a.T + s2 * torch.eye(a.shape[0], dtype=torch.float64)
    v = (torch.randn(3, op.dim, dtype=torch.float64) @ a.T).reshape(3, *op.measurement_shape)
    ref = (torch.linalg.pinv(m) @ v.reshape(3, -1).T).T
    out = op.gram_solve(v, r2, s2, iters=200, tol=1e-12).reshape(3, -1)
    torch.testing.assert_close(out, ref, atol=1e-7, rtol=1e-6)


def test_blur_matches_scipy_with_zero_boundary():
    ndimage = pytest.importorskip("scipy.ndimage")
    op = GaussianBlur((1, 9, 7), std=1.0)
    x = torch.randn(2, 1, 9, 7, dtype=torch.float64)
    k = op.kernel.numpy()
    ref = ndimage.correlate(x.numpy(), k[None, None, :, None], mode="constant", cval=0.0)
    ref = ndimage.correlate(ref, k[None, None, None, :], mode="constant", cval=0.0)
    torch.testing.assert_close(op(x), torch.from_numpy(ref))
    assert float(op.kernel.sum()) == pytest.approx(1.0)


def test_avgpool_values():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(AvgPool((1, 4, 4), 2)(x), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))


def test_projection_is_seeded():
    a, b, c = RandomProjection(6, 3, seed=0), RandomProjection(6, 3, seed=0), RandomProjection(6, 3, seed=1)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


def test_measure_adds_noise_of_sigma():
    op = Identity(4)
    x = torch.zeros(20000, 4, dtype=torch.float64)
    y = measure(op, x, 0.3, torch.Generator().manual_seed(0))
    assert float(y.std()) == pytest.approx(0.3, rel=0.02)
    assert torch.equal(measure(op, x, 0.0), x)


def test_bad_input():
    with pytest.raises(ValueError, match=r"shape \(batch, 2, 8, 6\)"):
        Identity(SHAPE).forward(torch.zeros(3, 2, 8, 5))
    with pytest.raises(ValueError, match="NaN"):
        AvgPool(SHAPE).adjoint(torch.full((1, 2, 4, 3), float("nan")))
    with pytest.raises(ValueError, match="measurement of shape"):
        AvgPool(SHAPE).adjoint(torch.zeros(1, *SHAPE))
    with pytest.raises(ValueError, match="not divisible"):
        AvgPool((1, 9, 8), 2)
    with pytest.raises(ValueError, match="0 .missing. and 1"):
        Mask(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="does not broadcast"):
        Mask(torch.ones(3), shape=(4,))
    with pytest.raises(ValueError, match="std must be a positive"):
        GaussianBlur(SHAPE, std=0.0)
    with pytest.raises(ValueError, match="image samples"):
        GaussianBlur((5,))
    with pytest.raises(ValueError, match="sigma must be"):
        GaussianNoise(-0.1)
    with pytest.raises(ValueError, match="m must be a positive integer"):
        RandomProjection(4, 0)
    with pytest.raises(ValueError, match="keep must be"):
        Mask.half(SHAPE, "middle")
