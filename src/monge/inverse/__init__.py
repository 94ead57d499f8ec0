r"""Inverse problems with a trained flow as prior: measurement operators, the exact posterior of a
Gaussian-mixture prior, and posterior samplers (DPS, ΠGDM / OT-ODE, MMPS, PnP-Flow, D-Flow).

>>> import torch
>>> from monge.data import GaussianMixture
>>> from monge.inverse import Mask, gmm_posterior, pigdm
>>> from monge.paths import LinearPath
>>> prior = GaussianMixture.eight_gaussians()
>>> A = Mask(torch.tensor([1.0, 0.0]))                 # observe the first coordinate only
>>> y = torch.tensor([[2.0, 0.0]])                     # y = A x + 0.1 n
>>> x = pigdm(prior.field(), LinearPath(), A, y.expand(500, 2), sigma_y=0.1, nfe=50)
>>> exact = gmm_posterior(prior, A, y, sigma=0.1).sample(500)
"""

from .operators import (
    AvgPool,
    GaussianBlur,
    GaussianNoise,
    Identity,
    LinearOperator,
    Mask,
    RandomProjection,
    measure,
)
from .posterior import GaussianMixturePosterior, gmm_posterior
from .solvers import INVERSE_SOLVERS, d_flow, dps, mmps, pigdm, pnp_flow

__all__ = [
    "INVERSE_SOLVERS",
    "AvgPool",
    "GaussianBlur",
    "GaussianMixturePosterior",
    "GaussianNoise",
    "Identity",
    "LinearOperator",
    "Mask",
    "RandomProjection",
    "d_flow",
    "dps",
    "gmm_posterior",
    "measure",
    "mmps",
    "pigdm",
    "pnp_flow",
]
