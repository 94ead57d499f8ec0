r"""The exact posterior of a Gaussian-mixture prior under a linear Gaussian measurement.

For :math:`x \sim \sum_k w_k \mathcal N(\mu_k, S_k)` and :math:`y = A x + \sigma n`,
:math:`n \sim \mathcal N(0, I)`, the posterior is the Gaussian mixture

.. math::
    p(x \mid y) &= \sum_k \tilde w_k\, \mathcal N(x;\, m_k, C_k),\qquad
    \tilde w_k \propto w_k\, \mathcal N(y;\, A\mu_k,\, A S_k A^\top + \sigma^2 I), \\
    C_k &= \big(S_k^{-1} + A^\top A / \sigma^2\big)^{-1},\qquad
    m_k = C_k \big(S_k^{-1}\mu_k + A^\top y / \sigma^2\big),

here with the isotropic :math:`S_k = s_k^2 I` of :class:`monge.data.GaussianMixture`. Computed in
float64 with Cholesky factors; :math:`\sigma > 0` (without noise the posterior of an injective
:math:`A` is a point mass and of a masked one a degenerate Gaussian).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import MAX_SAMPLES_PER_CALL, check_finite, check_positive, check_positive_int
from ..data.gmm import GaussianMixture
from .operators import LinearOperator

__all__ = ["GaussianMixturePosterior", "gmm_posterior"]


class GaussianMixturePosterior:
    """Mixture :math:`\\sum_k w_k \\mathcal N(m_k, C_k)` with full covariances (float64)."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor) -> None:
        self.weights, self.means, self.covs = weights, means, covs
        self._chol = torch.linalg.cholesky(covs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` samples ``(n, d)``."""
        n = check_positive_int(n, "n", MAX_SAMPLES_PER_CALL)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + (self._chol[k] @ z[..., None])[..., 0]
        return x.to(dtype)

    def _component_log_probs(self, x: Tensor) -> Tensor:
        r"""``(batch, K)``: :math:`\log w_k + \log \mathcal N(x; m_k, C_k)`."""
        x64 = x.reshape(x.shape[0], -1).to(torch.float64)
        diff = x64[:, None, :] - self.means[None]  # (n, K, d)
        sol = torch.linalg.solve_triangular(self._chol[None], diff[..., None], upper=False)[..., 0]
        logdet = 2 * torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        lp = -0.5 * (sol.pow(2).sum(-1) + logdet[None] + self.dim * math.log(2 * math.pi))
        return lp + self.weights.log()[None]

    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log p(x \mid y)`, shape ``(batch,)``."""
        return torch.logsumexp(self._component_log_probs(x), 1).to(x.dtype)

    def responsibilities(self, x: Tensor) -> Tensor:
        r"""``(batch, K)`` posterior probabilities of each component given ``x``."""
        return torch.softmax(self._component_log_probs(x), 1)

    def weight_error(self, x: Tensor) -> float:
        r"""Total variation :math:`\tfrac12\sum_k |f_k - w_k|` between the share :math:`f_k` of
        ``x`` whose most probable component is :math:`k` and the weights :math:`w_k`: how well a
        sampler splits its mass between the modes (exact samples score a few :math:`1/\sqrt n`)."""
        f = torch.bincount(self.responsibilities(x).argmax(1), minlength=len(self.weights)).double() / x.shape[0]
        return float(0.5 * (f - self.weights).abs().sum())


def gmm_posterior(
    prior: GaussianMixture, operator: LinearOperator, y: Tensor, sigma: float
) -> GaussianMixturePosterior:
    r"""The exact posterior :math:`p(x \mid y)` of ``prior`` given one measurement ``y``
    (shape ``operator.measurement_shape``, or with a leading batch of 1) under
    :math:`y = A x + \sigma n`, ``sigma > 0``. Samples are flattened: ``prod(operator.shape)``
    must equal ``prior.dim``."""
    sigma = check_positive(sigma, "sigma")
    if operator.dim != prior.dim:
        raise ValueError(f"the operator acts on samples of {operator.dim} entries {operator.shape}, the prior has "
                         f"dimension {prior.dim}; build the operator for the prior's shape")
    check_finite(y, "y")
    m_shape = operator.measurement_shape
    if tuple(y.shape) == (1, *m_shape):
        y = y[0]
    if tuple(y.shape) != m_shape:
        raise ValueError(f"y must have the measurement shape {m_shape} (one measurement), got {tuple(y.shape)}")
    a = operator.matrix()  # (m, d)
    yv = y.reshape(-1).to(torch.float64)
    mu, s2, w = prior.means.cpu(), prior.stds.cpu() ** 2, prior.weights.cpu()
    d, m = prior.dim, a.shape[0]
    ata = a.T @ a / sigma**2
    eye_d, eye_m = torch.eye(d, dtype=torch.float64), torch.eye(m, dtype=torch.float64)
    covs = torch.linalg.inv(eye_d[None] / s2[:, None, None] + ata[None])
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    means = (covs @ (mu / s2[:, None] + (a.T @ yv / sigma**2)[None])[..., None])[..., 0]
    # evidence of each component: N(y; A mu_k, s_k^2 A A^T + sigma^2 I)
    cov_y = s2[:, None, None] * (a @ a.T)[None] + sigma**2 * eye_m[None]
    chol = torch.linalg.cholesky(cov_y)
    r = (yv[None] - mu @ a.T)[..., None]
    sol = torch.linalg.solve_triangular(chol, r, upper=False)[..., 0]
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_ev = -0.5 * (sol.pow(2).sum(-1) + logdet + m * math.log(2 * math.pi))
    weights = torch.softmax(w.log() + log_ev, 0)
    return GaussianMixturePosterior(weights, means, covs)
