r"""Linear measurement operators and Gaussian measurement noise.

A measurement is :math:`y = A x + \sigma_y n`, :math:`n \sim \mathcal N(0, I)`, with :math:`x` of
sample shape ``operator.shape`` and :math:`y` of shape ``operator.measurement_shape``. Every
operator maps batches ``(batch, *shape) -> (batch, *measurement_shape)`` and gives

- ``forward(x)`` :math:`= A x` (also ``operator(x)``), ``adjoint(y)`` :math:`= A^\top y`;
- ``pseudo_inverse(y)`` :math:`= A^+ y` where it is exact and cheap (identity, mask, average
  pooling, random projection); the blur has none and raises;
- ``gram_solve(v, r2, s2)`` :math:`= (r^2 A A^\top + s^2 I)^{-1} v`, the solve of
  pseudo-inverse guidance: in closed form where :math:`AA^\top` is diagonal or small, by
  conjugate gradients otherwise;
- ``norm_sq()`` :math:`= \|A\|_2^2`, the largest eigenvalue of :math:`A^\top A`;
- ``matrix()``, the dense ``(m, d)`` matrix of :math:`A` on flattened samples (for small ``d``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_finite, check_number, check_positive, check_positive_int

__all__ = [
    "AvgPool",
    "GaussianBlur",
    "GaussianNoise",
    "Identity",
    "LinearOperator",
    "Mask",
    "RandomProjection",
    "measure",
]


def _shape(shape: int | Sequence[int], name: str = "shape") -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"{name} must be a positive integer or a sequence of them (one sample's shape), got {shape!r}")
    return dims


class LinearOperator(ABC):
    """A linear map from samples of shape :attr:`shape` to measurements of :attr:`measurement_shape`."""

    shape: tuple[int, ...]
    measurement_shape: tuple[int, ...]
    #: whether :meth:`pseudo_inverse` is exact
    has_pseudo_inverse: bool = False

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _forward(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def _adjoint(self, y: Tensor) -> Tensor: ...

    def _pseudo_inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no exact pseudo-inverse; use gram_solve (conjugate gradients) "
            "or a solver that needs only forward and adjoint (dps, pigdm, pnp_flow, d_flow)"
        )

    # ------------------------------------------------------------------ checked public API
    @property
    def dim(self) -> int:
        """Number of entries of one sample."""
        return math.prod(self.shape)

    def check_data(self, x: Tensor, name: str = "x") -> Tensor:
        """Raise unless ``x`` is a finite ``(batch, *shape)`` tensor."""
        return self._check(x, self.shape, name, "data")

    def check_measurement(self, y: Tensor, name: str = "y") -> Tensor:
        """Raise unless ``y`` is a finite ``(batch, *measurement_shape)`` tensor."""
        return self._check(y, self.measurement_shape, name, "measurement")

    def _check(self, x: Tensor, shape: tuple[int, ...], name: str, what: str) -> Tensor:
        check_finite(x, name)
        if tuple(x.shape[1:]) != shape or x.dim() != len(shape) + 1 or x.shape[0] == 0:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, shape))}) for {self!r}, got {tuple(x.shape)}: "
                f"the operator was built for {what} of shape {shape}; build it for your data's shape"
            )
        return x

    def forward(self, x: Tensor) -> Tensor:
        r""":math:`A x` for ``x`` of shape ``(batch, *shape)``."""
        return self._forward(self.check_data(x))

    __call__ = forward

    def adjoint(self, y: Tensor) -> Tensor:
        r""":math:`A^\top y` for ``y`` of shape ``(batch, *measurement_shape)``."""
        return self._adjoint(self.check_measurement(y))

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        r""":math:`A^+ y` (Moore-Penrose), where exact; raises ``NotImplementedError`` otherwise."""
        return self._pseudo_inverse(self.check_measurement(y))

    def norm_sq(self) -> float:
        r""":math:`\|A\|_2^2`; the base class runs 100 power iterations on :math:`A^\top A`."""
        x = torch.randn((1, *self.shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        lam = 0.0
        for _ in range(100):
            x = x / x.norm()
            z = self._adjoint(self._forward(x))
            lam = float((z * x).sum())
            x = z
        return lam

    def gram_solve(self, v: Tensor, r2: float, s2: float, iters: int = 50, tol: float = 1e-6) -> Tensor:
        r""":math:`(r^2 A A^\top + s^2 I)^{-1} v` for ``v`` of shape ``(batch, *measurement_shape)``.

        The base class runs batched conjugate gradients (at most ``iters``, until the residual
        falls below ``tol`` times that of ``v``); with :math:`s = 0` and :math:`A A^\top`
        singular it returns the minimum-norm solution for ``v`` in the range of :math:`A`.
        """
        def op(u: Tensor) -> Tensor:
            return r2 * self._forward(self._adjoint(u)) + s2 * u

        dims = tuple(range(1, v.dim()))
        x = torch.zeros_like(v)
        r = v.clone()
        p = r.clone()
        rs = (r * r).sum(dims, keepdim=True)
        stop = (tol**2) * rs.clamp_min(torch.finfo(v.dtype).tiny)
        for _ in range(iters):
            if bool((rs <= stop).all()):
                break
            ap = op(p)
            denom = (p * ap).sum(dims, keepdim=True)
            alpha = torch.where(rs > stop, rs / denom.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(rs))
            x = x + alpha * p
            r = r - alpha * ap
            rs_new = (r * r).sum(dims, keepdim=True)
            p = r + (rs_new / rs.clamp_min(torch.finfo(v.dtype).tiny)) * p
            rs = rs_new
        return x

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense ``(m, d)`` matrix of :math:`A` on flattened samples (``d`` up to 4096)."""
        if self.dim > 4096:
            raise ValueError(f"matrix() builds a dense (m, {self.dim}) matrix; samples of {self.dim} entries are too "
                             "many")
        eye = torch.eye(self.dim, dtype=dtype).reshape(self.dim, *self.shape)
        return self._forward(eye).reshape(self.dim, -1).T.contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


def _like(t: Tensor, x: Tensor) -> Tensor:
    return t.to(device=x.device, dtype=x.dtype)


class Identity(LinearOperator):
    r"""Denoising: :math:`A = I`; :math:`A^+ = A^\top = I`."""

    has_pseudo_inverse = True

    def __init__(self, shape: int | Sequence[int]) -> None:
        self.shape = self.measurement_shape = _shape(shape)

    def _forward(self, x: Tensor) -> Tensor:
        return x

    def _adjoint(self, y: Tensor) -> Tensor:
        return y

    def _pseudo_inverse(self, y: Tensor) -> Tensor:
        return y

    def norm_sq(self) -> float:
        return 1.0

    def gram_solve(self, v: Tensor, r2: float, s2: float, iters: int = 50, tol: float = 1e-6) -> Tensor:
        return v / (r2 + s2)


class Mask(LinearOperator):
    r"""Inpainting: :math:`A x = m \odot x` with a 0/1 mask :math:`m` (1 = observed).

    The measurement keeps the data's shape, with zeros where nothing is observed. :math:`A` is an
    orthogonal projection, so :math:`A^\top = A^+ = A`. ``mask`` has the sample shape, or
    broadcasts to ``shape`` (e.g. an ``(H, W)`` mask for ``(C, H, W)`` images).
    """

    has_pseudo_inverse = True

    def __init__(self, mask: Tensor, shape: int | Sequence[int] | None = None) -> None:
        mask = torch.as_tensor(mask)
        check_finite(mask.to(torch.float64), "mask")
        self.shape = self.measurement_shape = tuple(mask.shape) if shape is None else _shape(shape)
        try:
            full = torch.broadcast_to(mask, self.shape)
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the data shape {self.shape}"
            ) from None
        m = full.to(torch.float64)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask must hold only 0 (missing) and 1 (observed) values")
        self.mask = m.contiguous()

    @classmethod
    def half(cls, shape: Sequence[int], keep: str = "top") -> Mask:
        """Keep the ``top``/``bottom``/``left``/``right`` half of ``(..., H, W)`` images."""
        shape = _shape(shape)
        if len(shape) < 2:
            raise ValueError(f"half masks need image samples (..., H, W), got shape {shape}")
        h, w = shape[-2:]
        m = torch.zeros(h, w)
        if keep == "top":
            m[: h // 2] = 1
        elif keep == "bottom":
            m[h // 2:] = 1
        elif keep == "left":
            m[:, : w // 2] = 1
        elif keep == "right":
            m[:, w // 2:] = 1
        else:
            raise ValueError(f"keep must be 'top', 'bottom', 'left' or 'right', got {keep!r}")
        return cls(m, shape)

    def _forward(self, x: Tensor) -> Tensor:
        return x * _like(self.mask, x)

    def _adjoint(self, y: Tensor) -> Tensor:  # a mask is its own adjoint and pseudo-inverse
        return self._forward(y)

    def _pseudo_inverse(self, y: Tensor) -> Tensor:
        return self._forward(y)

    def norm_sq(self) -> float:
        return float(self.mask.max())

    def gram_solve(self, v: Tensor, r2: float, s2: float, iters: int = 50, tol: float = 1e-6) -> Tensor:
        d = r2 * _like(self.mask, v) + s2
        return torch.where(d > 0, v / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(v))


class GaussianBlur(LinearOperator):
    r"""Deblurring: separable convolution of the last two axes with a normalised Gaussian kernel.

    .. math:: g_i \propto e^{-i^2 / (2 s^2)},\quad |i| \le \lceil 3s \rceil,\qquad
              (A x)_{hw} = \sum_{i, j} g_i g_j\, x_{h + i,\, w + j},

    with **zero boundary**: pixels outside the image count as 0, and the output has the input's
    size. The adjoint is the same sum with the flipped kernel :math:`g_{-i}` (equal to
    :math:`g_i` here) and the same zero padding. No exact pseudo-inverse (:meth:`gram_solve`
    uses conjugate gradients).
    """

    def __init__(self, shape: Sequence[int], std: float = 1.0, radius: int | None = None) -> None:
        self.shape = self.measurement_shape = _shape(shape)
        if len(self.shape) < 2:
            raise ValueError(f"GaussianBlur needs image samples (..., H, W), got shape {self.shape}")
        self.std = check_positive(std, "std")
        radius = math.ceil(3 * self.std) if radius is None else int(check_number(radius, "radius", 1, integer=True))
        i = torch.arange(-radius, radius + 1, dtype=torch.float64)
        g = torch.exp(-0.5 * (i / self.std) ** 2)
        self.kernel = g / g.sum()

    def _conv(self, x: Tensor, kernel: Tensor) -> Tensor:
        k = _like(kernel, x)
        r = (k.numel() - 1) // 2
        h, w = self.shape[-2:]
        z = x.reshape(-1, 1, h, w)
        z = F.conv2d(z, k.reshape(1, 1, -1, 1), padding=(r, 0))  # conv2d is a correlation
        z = F.conv2d(z, k.reshape(1, 1, 1, -1), padding=(0, r))
        return z.reshape(x.shape)

    def _forward(self, x: Tensor) -> Tensor:
        return self._conv(x, self.kernel)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._conv(y, self.kernel.flip(0))

    def __repr__(self) -> str:
        return f"GaussianBlur(shape={self.shape}, std={self.std:g})"


class AvgPool(LinearOperator):
    r"""Super-resolution: average over ``factor x factor`` blocks of the last two axes.

    :math:`A^\top y` is the nearest upsampling of :math:`y` divided by ``factor``:sup:`2`;
    :math:`AA^\top = I/f^2`, so :math:`A^+ = f^2 A^\top` is the nearest upsampling itself.
    """

    has_pseudo_inverse = True

    def __init__(self, shape: Sequence[int], factor: int = 2) -> None:
        self.shape = _shape(shape)
        self.factor = check_positive_int(factor, "factor")
        if len(self.shape) < 2:
            raise ValueError(f"AvgPool needs image samples (..., H, W), got shape {self.shape}")
        h, w = self.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {h}x{w} is not divisible by factor {self.factor}")
        self.measurement_shape = (*self.shape[:-2], h // self.factor, w // self.factor)

    def _forward(self, x: Tensor) -> Tensor:
        h, w = self.shape[-2:]
        z = F.avg_pool2d(x.reshape(-1, 1, h, w), self.factor)
        return z.reshape(x.shape[0], *self.measurement_shape)

    def _upsample(self, y: Tensor) -> Tensor:
        return y.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._upsample(y) / self.factor**2

    def _pseudo_inverse(self, y: Tensor) -> Tensor:
        return self._upsample(y)

    def norm_sq(self) -> float:
        return 1.0 / self.factor**2

    def gram_solve(self, v: Tensor, r2: float, s2: float, iters: int = 50, tol: float = 1e-6) -> Tensor:
        return v / (r2 / self.factor**2 + s2)

    def __repr__(self) -> str:
        return f"AvgPool(shape={self.shape}, factor={self.factor})"


class RandomProjection(LinearOperator):
    r"""Compressed sensing: :math:`A x = W \operatorname{vec}(x)` with :math:`W_{ij} \sim \mathcal N(0, 1/m)`,
    ``(m, d)``, drawn from ``seed``. :math:`A^+ = W^\top (W W^\top)^{-1}` for ``m <= d``
    (:func:`torch.linalg.pinv` in float64)."""

    has_pseudo_inverse = True

    def __init__(self, shape: int | Sequence[int], m: int, seed: int = 0) -> None:
        self.shape = _shape(shape)
        self.m = check_positive_int(m, "m", 4096)
        self.seed = int(check_number(seed, "seed", 0, integer=True))
        self.measurement_shape = (self.m,)
        g = torch.Generator().manual_seed(self.seed)
        self.weight = torch.randn(self.m, self.dim, generator=g, dtype=torch.float64) / math.sqrt(self.m)
        self.pinv = torch.linalg.pinv(self.weight)
        self._eig, self._vec = torch.linalg.eigh(self.weight @ self.weight.T)

    def _forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ _like(self.weight, x).T

    def _adjoint(self, y: Tensor) -> Tensor:
        return (y @ _like(self.weight, y)).reshape(y.shape[0], *self.shape)

    def _pseudo_inverse(self, y: Tensor) -> Tensor:
        return (y @ _like(self.pinv, y).T).reshape(y.shape[0], *self.shape)

    def norm_sq(self) -> float:
        return float(self._eig.max())

    def gram_solve(self, v: Tensor, r2: float, s2: float, iters: int = 50, tol: float = 1e-6) -> Tensor:
        q, lam = _like(self._vec, v), _like(self._eig, v)
        d = r2 * lam + s2
        coef = torch.where(d > 0, 1.0 / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
        return ((v @ q) * coef) @ q.T

    def __repr__(self) -> str:
        return f"RandomProjection(shape={self.shape}, m={self.m}, seed={self.seed})"


class GaussianNoise:
    r"""Measurement noise :math:`\sigma_y n`, :math:`n \sim \mathcal N(0, I)`; ``sigma = 0`` is noise-free."""

    def __init__(self, sigma: float) -> None:
        self.sigma = check_number(sigma, "sigma", 0.0, math.inf, high_open=True)

    def __call__(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``y`` plus noise, drawn on the CPU (or the generator's device) and moved to ``y``."""
        if self.sigma == 0.0:
            return y
        dev = generator.device if generator is not None else torch.device("cpu")
        n = torch.randn(y.shape, generator=generator, device=dev, dtype=y.dtype).to(y.device)
        return y + self.sigma * n

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma:g})"


def measure(
    operator: LinearOperator, x: Tensor, sigma: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""A measurement :math:`y = A x + \sigma n` of ``x`` ``(batch, *shape)``."""
    return GaussianNoise(sigma)(operator.forward(x), generator)
