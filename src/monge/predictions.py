r"""Prediction types of a network and exact conversions between them.

For an affine path :math:`x_t = \sigma_t x_0 + \alpha_t x_1` (``x0`` noise, ``x1`` data, flow time
``t = 0`` noise, ``t = 1`` data) a network can predict any of

- ``"velocity"``: :math:`u = \dot\sigma_t \hat x_0 + \dot\alpha_t \hat x_1` (flow matching);
- ``"noise"``: :math:`\hat x_0 = \mathbb E[x_0 \mid x_t]` (the :math:`\epsilon`-prediction of DDPM);
- ``"data"``: :math:`\hat x_1 = \mathbb E[x_1 \mid x_t]` (the ":math:`x_0`-prediction" of diffusion papers);
- ``"score"``: :math:`\nabla \log p_t(x_t) = -\hat x_0 / \sigma_t` (Tweedie).

Since :math:`x_t = \sigma_t \hat x_0 + \alpha_t \hat x_1` holds for the posterior means, any one of
them fixes the others; with :math:`\Delta = \alpha_t\dot\sigma_t - \sigma_t\dot\alpha_t
= -\tfrac12\alpha_t\sigma_t\dot\lambda_t` (non-zero while the log-SNR :math:`\lambda_t` is strictly
increasing),

.. math:: \hat x_0 = \frac{\alpha_t u - \dot\alpha_t x_t}{\Delta},\qquad
          \hat x_1 = \frac{\dot\sigma_t x_t - \sigma_t u}{\Delta}.

So a model trained with one prediction type can drive every sampler (Kingma et al. 2021,
"Variational Diffusion Models"; Lipman et al. 2023, "Flow Matching"). Conversions that divide by
:math:`\alpha_t` (to ``data`` from ``noise``/``score``) are undefined at a pure-noise point
(:math:`\alpha_t = 0`); those dividing by :math:`\sigma_t` at a noise-free point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._validation import check_same_shape
from .paths import Schedule, expand_t

__all__ = ["PREDICTIONS", "Model", "convert", "convert_with", "as_denoiser", "as_velocity"]

#: The prediction types a model may output.
PREDICTIONS: tuple[str, ...] = ("velocity", "noise", "data", "score")

Model = Callable[[Tensor, Tensor], Tensor]


def _check_type(value: object, name: str) -> str:
    if value not in PREDICTIONS:
        raise ValueError(f"{name} must be one of {', '.join(PREDICTIONS)}; got {value!r}")
    return value


def _to_noise(pred: Tensor, kind: str, x: Tensor, a, s, da, ds) -> Tensor:
    if kind == "noise":
        return pred
    if kind == "data":
        return (x - a * pred) / s
    if kind == "score":
        return -s * pred
    return (a * pred - da * x) / (a * ds - s * da)  # velocity


def _to_data(pred: Tensor, kind: str, x: Tensor, a, s, da, ds) -> Tensor:
    if kind == "data":
        return pred
    if kind == "noise":
        return (x - s * pred) / a
    if kind == "score":
        return (x + s * s * pred) / a
    return (ds * x - s * pred) / (a * ds - s * da)  # velocity


def convert(pred: Tensor, from_type: str, to_type: str, x_t: Tensor, t: Tensor | float,
            schedule: Schedule) -> Tensor:
    r"""Convert a prediction ``pred`` made at ``(x_t, t)`` from ``from_type`` to ``to_type``.

    The formulas are those of the module docstring; to ``velocity`` uses
    :math:`u = \dot\sigma_t \hat x_0 + \dot\alpha_t \hat x_1` with whichever of
    :math:`\hat x_0, \hat x_1` is known directly.

    Parameters
    ----------
    pred, x_t : Tensor
        ``(batch, *shape)`` tensors of the same shape.
    from_type, to_type : str
        One of :data:`PREDICTIONS`.
    t : Tensor or float
        Flow time, scalar or ``(batch,)``.
    schedule : Schedule
        The path's :math:`(\alpha_t, \sigma_t)`.
    """
    _check_type(from_type, "from_type")
    _check_type(to_type, "to_type")
    if not torch.is_tensor(pred) or not torch.is_tensor(x_t):
        raise ValueError("pred and x_t must be torch tensors of shape (batch, *shape)")
    check_same_shape(pred, x_t, "pred", "x_t")
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a monge.paths.Schedule, got {type(schedule).__name__}")
    if from_type == to_type:
        return pred
    t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
    # one time for the whole batch: evaluate the schedule once and broadcast
    tt = t.reshape([1] * x_t.dim()) if t.numel() == 1 else expand_t(t, x_t)
    a, s = schedule.alpha(tt), schedule.sigma(tt)
    da = ds = None  # the derivatives enter only conversions from or to a velocity
    if "velocity" in (from_type, to_type):
        da, ds = schedule.d_alpha(tt), schedule.d_sigma(tt)
    return convert_with(pred, from_type, to_type, x_t, a, s, da, ds)


def convert_with(pred: Tensor, from_type: str, to_type: str, x_t: Tensor, a, s, da=None, ds=None) -> Tensor:
    r""":func:`convert` with the coefficients :math:`\alpha_t, \sigma_t` (and :math:`\dot\alpha_t,
    \dot\sigma_t`, needed only from or to ``velocity``) given, as tensors that broadcast against ``x_t``.
    The samplers use it with the coefficients of their grid, computed once per grid."""
    if from_type == to_type:
        return pred
    if to_type == "noise":
        return _to_noise(pred, from_type, x_t, a, s, da, ds)
    if to_type == "data":
        return _to_data(pred, from_type, x_t, a, s, da, ds)
    if to_type == "score":
        return -_to_noise(pred, from_type, x_t, a, s, da, ds) / s
    # to velocity: use the directly known posterior mean to avoid a needless division
    if from_type == "data":
        return (ds / s) * x_t + (da - ds * a / s) * pred
    eps = _to_noise(pred, from_type, x_t, a, s, da, ds)
    return (da / a) * x_t + (ds - da * s / a) * eps


def as_denoiser(model: Model, prediction: str, schedule: Schedule, output: str = "data") -> Model:
    r"""Wrap ``model(x, t)`` (outputting ``prediction``) into ``(x, t) -> output`` prediction.

    ``output="data"`` gives the denoiser :math:`D(x_t, t) = \mathbb E[x_1 \mid x_t]` used by
    DDIM / DPM-Solver++ / UniPC; ``"noise"`` the :math:`\epsilon`-predictor; ``"velocity"`` the
    flow field of the ODE samplers; ``"score"`` the score. ``t`` is a ``(batch,)`` flow time.
    """
    _check_type(prediction, "prediction")
    _check_type(output, "output")
    if not callable(model):
        raise ValueError(f"model must be callable as model(x, t), got {type(model).__name__}")
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a monge.paths.Schedule, got {type(schedule).__name__}")
    if prediction == output:
        return model

    def wrapped(x: Tensor, t: Tensor) -> Tensor:
        return convert(model(x, t), prediction, output, x, t, schedule)

    return wrapped


def as_velocity(model: Model, prediction: str, schedule: Schedule) -> Model:
    """``as_denoiser(model, prediction, schedule, output="velocity")``: a field for the ODE samplers."""
    return as_denoiser(model, prediction, schedule, output="velocity")

