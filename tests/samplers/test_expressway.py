import math

import pytest
import torch

from monge.couplings import SemiDiscreteOT
from monge.data.sources import GaussianSource, ToySource
from monge.samplers.expressway import Expressway, expressway_sample, expressway_start


def _fitted(n_targets=32, seed=0):
    c = SemiDiscreteOT(n_targets=n_targets, tol=0.05)
    c.prepare(GaussianSource((2,)), ToySource("8gaussians"), torch.Generator().manual_seed(seed))
    return c


def test_expressway_start_and_sample():
    c = _fitted(seed=8)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(9))
    y = c.map(z)[1]
    x, t = expressway_start(c.map, z, 0.6, "linear", reuse_noise=True)
    assert t == 0.6
    torch.testing.assert_close(x, 0.4 * z + 0.6 * y)
    x, _ = expressway_start(c.map, z, 0.6, "vp", generator=torch.Generator().manual_seed(1))
    xi = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        x, torch.cos(torch.tensor(0.3 * math.pi)) * xi + torch.sin(torch.tensor(0.3 * math.pi)) * y
    )
    # with the exact conditional field towards y, the sampler lands on y from the start
    field = lambda xt, tt: (y - xt) / (1 - tt[:, None])  # noqa: E731
    out = expressway_sample(field, c.map, z, t_start=0.5, nfe=2, reuse_noise=True)
    assert out.nfe == 2
    torch.testing.assert_close(out.x, y, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="t_start must be"):
        expressway_start(c.map, z, 1.0)
    with pytest.raises(ValueError, match="affine path"):
        expressway_start(c.map, z, 0.5, object())  # type: ignore[arg-type]



def test_expressway_setting_samples_like_the_function():
    c = _fitted(seed=8)
    z = torch.randn(100, 2, generator=torch.Generator().manual_seed(9))
    field = lambda xt, tt: -xt  # noqa: E731
    ex = Expressway(c.map, 0.25, "linear")
    a = ex.sample(field, z, nfe=3, generator=torch.Generator().manual_seed(4))
    b = expressway_sample(
        field, c.map, z, t_start=0.25, nfe=3, path="linear", generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe == 3
    with pytest.raises(ValueError, match="t_start must be"):
        Expressway(c.map, 1.5)


