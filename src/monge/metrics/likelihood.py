r"""Building blocks of likelihood evaluation: divergences of a field, Gaussian log-densities,
uniform dequantisation and bits per dimension.

The ODE solve that turns them into a log-likelihood lives in :mod:`monge.flow_likelihood` (it uses
the samplers, a layer above the metrics); this module needs only autograd.

Divergence of a field :math:`v : \mathbb R^D \to \mathbb R^D` at :math:`x`:

- exact: :math:`\nabla\cdot v = \operatorname{tr} J_v = \sum_{i=1}^D \partial v_i / \partial x_i`,
  one forward pass and :math:`D` vector-Jacobian products :math:`e_i^\top J_v` (rows of the
  Jacobian of every sample at once, since the samples of a batch do not interact);
- Hutchinson (Hutchinson 1990; FFJORD, Grathwohl et al. 2019):
  :math:`\operatorname{tr} J_v = \mathbb E_\varepsilon[\varepsilon^\top J_v \varepsilon]` for
  probes with :math:`\mathbb E[\varepsilon\varepsilon^\top] = I` (Rademacher or standard normal),
  one forward pass and one vector-Jacobian product :math:`\varepsilon^\top J_v` per probe.

Bits per dimension (the image community's unit; Theis et al. 2016, "A note on the evaluation of
generative models"; Dinh et al. 2017; Papamakarios et al. 2017). Pixels take ``n_bins`` integer
values :math:`k \in \{0, \dots, n_\text{bins} - 1\}`. Uniform dequantisation
:math:`y = (k + U)/n_\text{bins}`, :math:`U \sim \mathcal U[0, 1)^D`, gives a point of the unit
cube whose density lower-bounds the discrete probability:
:math:`\log P(k) \ge \mathbb E_U[\log p_y(y)] - D\log n_\text{bins}`. A model works in model space
:math:`x = a + s\,y` (monge's images: :math:`x \in [-1, 1]`, :math:`a = -1`, scale :math:`s = 2`),
so :math:`\log p_y(y) = \log p_x(x) + D \log s` and the bound in bits per dimension is

.. math:: \mathrm{bpd} = -\frac{\log p_x(x) + D\log s}{D\log 2} + \log_2 n_\text{bins}.

A model uniform on :math:`[-1, 1]^D` has :math:`\log p_x = -D\log 2` and scores exactly
:math:`\log_2 n_\text{bins}` (8 bits for 256 levels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._validation import check_batch, check_finite, check_number, check_positive, check_positive_int

__all__ = [
    "PROBE_DISTRIBUTIONS",
    "standard_normal_log_prob",
    "gaussian_log_prob",
    "exact_divergence",
    "hutchinson_divergence",
    "draw_probes",
    "dequantize",
    "bits_per_dim",
]

Field = Callable[[Tensor, Tensor], Tensor]

#: Probe laws of Hutchinson's estimator: both have identity second moment.
PROBE_DISTRIBUTIONS: tuple[str, ...] = ("rademacher", "gaussian")

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    r""":math:`\log\mathcal N(z; 0, I_D) = -\tfrac12\|z\|^2 - \tfrac D2\log 2\pi` per sample,
    ``z`` of shape ``(batch, *shape)`` with :math:`D = \prod` ``shape``; returns ``(batch,)``."""
    flat = z.flatten(1)
    return -0.5 * flat.pow(2).sum(1) - 0.5 * flat.shape[1] * _LOG_2PI


def gaussian_log_prob(std: float) -> Callable[[Tensor], Tensor]:
    r"""The log-density of :math:`\mathcal N(0, \text{std}^2 I)`:
    :math:`z \mapsto \log\mathcal N(z/\text{std}; 0, I) - D\log\text{std}`."""
    std = check_positive(std, "std")
    log_std = math.log(std)

    def log_prob(z: Tensor) -> Tensor:
        return standard_normal_log_prob(z / std) - z[0].numel() * log_std

    return log_prob


def _forward(field: Field, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(x with grad, v)``: ``field`` evaluated with autograd on, whatever the caller's mode."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = field(xg, t)
    if not torch.is_tensor(v) or v.shape != x.shape:
        got = tuple(v.shape) if torch.is_tensor(v) else type(v).__name__
        raise ValueError(f"field returned {got} for input of shape {tuple(x.shape)}; they must match")
    if not v.requires_grad:
        raise ValueError("the field's output does not depend on x through autograd (no grad_fn); "
                         "likelihoods need a field differentiable in x (do not wrap it in torch.no_grad)")
    return xg, v


#: Vector-Jacobian products taken together in one vmapped backward pass.
_VJP_CHUNK = 64


def _vjps(v: Tensor, xg: Tensor, cotangents: Tensor) -> Tensor:
    r"""``(K, batch, *shape)``: :math:`c_k^\top J_v` for each cotangent :math:`c_k` of ``cotangents``.

    Chunks of up to :data:`_VJP_CHUNK` products run as one vmapped backward pass
    (``is_grads_batched``); a graph whose backward cannot be vmapped falls back to one pass each.
    """
    out = []
    n = cotangents.shape[0]
    with torch.enable_grad():
        for start in range(0, n, _VJP_CHUNK):
            chunk = cotangents[start:start + _VJP_CHUNK]
            keep = start + _VJP_CHUNK < n
            if chunk.shape[0] == 1:  # one product: a plain backward pass, no vmap
                out.append(torch.autograd.grad(v, xg, grad_outputs=chunk[0], retain_graph=keep)[0][None].detach())
                continue
            try:
                (g,) = torch.autograd.grad(v, xg, grad_outputs=chunk, retain_graph=True, is_grads_batched=True)
            except RuntimeError:  # an operation without a batching rule in its backward
                g = torch.stack([torch.autograd.grad(v, xg, grad_outputs=c, retain_graph=True)[0] for c in chunk])
            out.append(g.detach())
            if not keep:
                break
    return torch.cat(out)


def exact_divergence(field: Field, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(v, div)``: the field :math:`v(x, t)` and its exact divergence
    :math:`\sum_i \partial v_i/\partial x_i`, shape ``(batch,)``.

    One forward pass and :math:`D` vector-Jacobian products :math:`e_i^\top J_v` (row :math:`i`
    of every sample's Jacobian at once: a batch's samples must not interact, e.g. no batch norm
    in training mode), vmapped in chunks. Cost and memory grow as :math:`D`; use
    :func:`hutchinson_divergence` for images. Both outputs are detached.
    """
    xg, v = _forward(field, x, t)
    batch, dim = x.shape[0], x[0].numel()
    div = torch.zeros(batch, dtype=v.dtype, device=v.device)
    eye = torch.eye(dim, dtype=v.dtype, device=v.device)
    for start in range(0, dim, _VJP_CHUNK):
        rows = eye[start:start + _VJP_CHUNK]  # (c, D): basis vectors e_i
        cot = rows[:, None, :].expand(rows.shape[0], batch, dim).reshape(rows.shape[0], *x.shape)
        g = _vjps(v, xg, cot).flatten(2)  # (c, batch, D): rows i of the Jacobians
        div = div + torch.diagonal(g[:, :, start:start + rows.shape[0]], dim1=0, dim2=2).sum(-1)
    return v.detach(), div


def hutchinson_divergence(field: Field, x: Tensor, t: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(v, est)``: the field and Hutchinson's estimates :math:`\varepsilon_k^\top J_v \varepsilon_k`
    of its divergence, one per probe: ``probes`` ``(K, batch, *shape)``, ``est`` ``(K, batch)``.

    Their mean over probes is unbiased for the divergence when
    :math:`\mathbb E[\varepsilon\varepsilon^\top] = I` (:func:`draw_probes`). One forward pass
    and ``K`` vector-Jacobian products (vmapped in chunks).
    """
    if probes.dim() != x.dim() + 1 or probes.shape[1:] != x.shape:
        raise ValueError(f"probes must have shape (K, *{tuple(x.shape)}), got {tuple(probes.shape)}")
    xg, v = _forward(field, x, t)
    g = _vjps(v, xg, probes.to(v.dtype))
    return v.detach(), (g * probes).flatten(2).sum(2)


def draw_probes(x: Tensor, probes: int, dist: str = "rademacher",
                generator: torch.Generator | None = None) -> Tensor:
    """``probes`` independent probes shaped like ``x``: ``(probes, *x.shape)``, Rademacher
    (:math:`\\pm 1` with probability 1/2) or standard normal, drawn from ``generator`` on its device."""
    probes = check_positive_int(probes, "probes")
    if dist not in PROBE_DISTRIBUTIONS:
        raise ValueError(f"probe_dist must be one of {', '.join(PROBE_DISTRIBUTIONS)}, got {dist!r}")
    gdev = generator.device if generator is not None else torch.device("cpu")
    shape = (probes, *x.shape)
    if dist == "gaussian":
        eps = torch.randn(shape, generator=generator, device=gdev, dtype=x.dtype)
    else:
        eps = torch.randint(0, 2, shape, generator=generator, device=gdev).to(x.dtype) * 2 - 1
    return eps.to(x.device)


def _check_range(data_range: Sequence[float]) -> tuple[float, float]:
    if not isinstance(data_range, (tuple, list)) or len(data_range) != 2:
        raise ValueError(f"data_range must be a pair (low, high), got {data_range!r}")
    low = check_number(data_range[0], "data_range[0]")
    high = check_number(data_range[1], "data_range[1]")
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range must be finite with high > low, got {data_range!r}")
    return low, high


def dequantize(x: Tensor, *, data_range: Sequence[float] = (-1.0, 1.0), n_bins: int = 256,
               generator: torch.Generator | None = None) -> Tensor:
    r"""Uniform dequantisation of quantised data in model space.

    ``x`` holds values :math:`a + s\,k/(n_\text{bins} - 1)` with :math:`(a, a + s)` = ``data_range``
    (monge's images: :math:`x = 2k/255 - 1`). Each value is rounded to its level :math:`k` and
    replaced by :math:`a + s\,(k + U)/n_\text{bins}`, :math:`U \sim \mathcal U[0, 1)` drawn from
    ``generator``: a continuous point of the level's bin, as :func:`bits_per_dim` assumes.
    Returns a floating tensor of ``x``'s shape (float32 at least).
    """
    check_batch(x, "x", min_dim=1)
    n_bins = check_positive_int(n_bins, "n_bins")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    low, high = _check_range(data_range)
    scale = high - low
    dtype = x.dtype if x.is_floating_point() and x.dtype in (torch.float32, torch.float64) else torch.float32
    u = (x.to(dtype) - low) / scale
    if bool((u < -1e-4).any()) or bool((u > 1 + 1e-4).any()):
        raise ValueError(f"x must lie in data_range {tuple(data_range)}; got values in "
                         f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")
    k = torch.round(u.clamp(0, 1) * (n_bins - 1))
    gdev = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(x.shape, generator=generator, device=gdev, dtype=dtype).to(x.device)
    return low + scale * (k + noise) / n_bins


def bits_per_dim(log_prob: Tensor, x_shape: Sequence[int], *, data_scale: float, n_bins: int = 256) -> Tensor:
    r"""Bits per dimension of dequantised data from model-space log-densities.

    .. math:: \mathrm{bpd} = -\frac{\log p_x(x) + D\log s}{D\log 2} + \log_2 n_\text{bins}

    (derived in the module docstring), with :math:`D = \prod` ``x_shape`` (one sample's shape,
    e.g. ``(C, H, W)``) and :math:`s` = ``data_scale``, the width of the model-space interval
    that holds the pixels' unit interval (2 for monge's :math:`[-1, 1]` images).

    Parameters
    ----------
    log_prob : Tensor
        :math:`\log p_x(x)` in nats of dequantised points (:func:`dequantize`), any shape.
    x_shape : sequence of int
        Shape of one sample (without the batch).
    data_scale : float
        Model-space width of the pixel range, :math:`x = a + s\,u` for :math:`u \in [0, 1]`.
    n_bins : int
        Quantisation levels per dimension (256 for 8-bit images).

    Returns
    -------
    Tensor
        Bits per dimension, the shape of ``log_prob``.
    """
    if not torch.is_tensor(log_prob):
        raise ValueError(f"log_prob must be a tensor, got {type(log_prob).__name__}")
    check_finite(log_prob, "log_prob")
    dims = tuple(x_shape) if isinstance(x_shape, (tuple, list, torch.Size)) else None
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"x_shape must be a non-empty sequence of positive ints, got {x_shape!r}")
    scale = check_positive(data_scale, "data_scale")
    n_bins = check_positive_int(n_bins, "n_bins")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    d = math.prod(dims)
    lp = log_prob.to(torch.float64) if log_prob.dtype != torch.float64 else log_prob
    return -(lp + d * math.log(scale)) / (d * math.log(2.0)) + math.log2(n_bins)
