r"""Posterior sampling for linear inverse problems with a trained flow as prior.

Conventions of monge: flow time runs from ``t = 0`` (noise, :math:`x_0 \sim \mathcal N(0, I)`) to
``t = 1`` (data), :math:`x_t = \sigma_t x_0 + \alpha_t x_1`; the measurement is
:math:`y = A x_1 + \sigma_y n`. Every solver reads the network through its data prediction
(the denoiser) :math:`\hat x_1(x, t) = \mathbb E[x_1 \mid x_t = x]`, converted from any
prediction type by :func:`monge.predictions.convert`, so one evaluation gives both
:math:`\hat x_1` and the velocity :math:`u_t(x)`.

By Tweedie, :math:`\hat x_1 = (x + \sigma_t^2 \nabla\log p_t(x)) / \alpha_t`, hence
:math:`u_t = \tfrac{\dot\alpha_t}{\alpha_t} x + c_t \nabla\log p_t(x)` with
:math:`c_t = \dot\alpha_t\sigma_t^2/\alpha_t - \dot\sigma_t\sigma_t` (:math:`(1-t)/t` on the
linear path). Replacing the score by the posterior score
:math:`\nabla\log p_t(x) + \nabla_x \log p_t(y \mid x)` gives the posterior velocity

.. math:: u_t(x \mid y) = u_t(x) + c_t\, \nabla_x \log p_t(y \mid x_t = x),

whose ODE carries :math:`p_0` to :math:`p(x_1 \mid y)`. The guided solvers (:func:`dps`,
:func:`pigdm`, :func:`mmps`) differ in how they approximate the intractable likelihood
:math:`p_t(y \mid x_t)`; :func:`pnp_flow` and :func:`d_flow` are not posterior-velocity methods.
None is exact beyond a Gaussian prior (ΠGDM and MMPS are exact there); their errors on Gaussian
mixtures, against the closed-form posterior, are measured in ``bench/results/inverse.md``.

Every solver takes ``y`` ``(batch, *measurement_shape)`` and returns one posterior sample per row
``(batch, *shape)``; repeat ``y`` for several samples of one measurement. Grids from the noise
start at ``t = 0``, or at :data:`T_MIN_NOISE_PREDICTION` for a model predicting noise or score.
``nfe`` counts network evaluations; the guided solvers also backpropagate through each.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import check_number, check_positive, check_positive_int
from ..paths import Schedule, expand_t
from ..predictions import as_denoiser, convert
from ..registry import Registry
from .operators import LinearOperator

__all__ = ["INVERSE_SOLVERS", "d_flow", "dps", "mmps", "pigdm", "pnp_flow"]

#: The posterior samplers by name (``monge restore --solver``).
INVERSE_SOLVERS: Registry[Tensor] = Registry("inverse solver")

Model = Callable[[Tensor, Tensor], Tensor]


def _schedule(path: object) -> Schedule:
    schedule = path if isinstance(path, Schedule) else getattr(path, "schedule", None)
    if not isinstance(schedule, Schedule):
        raise ValueError(f"path must be an affine monge.paths.ProbPath (with a .schedule) or a Schedule, got "
                         f"{type(path).__name__}; posterior solvers need the path's alpha/sigma")
    return schedule


def _setup(model: Model, path: object, operator: LinearOperator, y: Tensor, sigma_y: float, prediction: str,
           x0: Tensor | None, generator: torch.Generator | None):
    """Checks everything before any work; returns (denoiser, schedule, y, x0, sigma_y)."""
    if not isinstance(operator, LinearOperator):
        raise ValueError(f"operator must be a monge.inverse LinearOperator, got {type(operator).__name__}")
    schedule = _schedule(path)
    den = as_denoiser(model, prediction, schedule, output="data")
    y = operator.check_measurement(y, "y (the measurement)")
    sigma_y = check_number(sigma_y, "sigma_y", 0.0, math.inf, high_open=True)
    if x0 is None:
        dev = generator.device if generator is not None else torch.device("cpu")
        x0 = torch.randn((y.shape[0], *operator.shape), generator=generator, device=dev, dtype=y.dtype).to(y.device)
    else:
        operator.check_data(x0, "x0 (the starting noise)")
        if x0.shape[0] != y.shape[0]:
            raise ValueError(f"x0 has {x0.shape[0]} samples, y {y.shape[0]} measurements: one noise per measurement")
    return den, schedule, y, x0, sigma_y


def _coefficients(schedule: Schedule, t: float, x: Tensor):
    tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    te = expand_t(tt, x)
    return tt, schedule.alpha(te), schedule.sigma(te), schedule.d_alpha(te), schedule.d_sigma(te)


def _denoise_with_graph(den: Model, x: Tensor, tt: Tensor) -> tuple[Tensor, Tensor]:
    """``(x with grad, x̂_1(x, t))`` with the graph kept for one vector-Jacobian product."""
    xg = x.detach().requires_grad_(True)
    return xg, den(xg, tt)


#: first time of a grid from the noise for models predicting noise or score, whose data prediction
#: divides by alpha_t (undefined at alpha_0 = 0)
T_MIN_NOISE_PREDICTION = 1e-3


def _grid(t_start: float, steps: int, prediction: str = "velocity") -> list[float]:
    if t_start == 0.0 and prediction in ("noise", "score"):
        t_start = T_MIN_NOISE_PREDICTION
    return torch.linspace(float(t_start), 1.0, steps + 1, dtype=torch.float64).tolist()


def _flow_step(den: Model, schedule: Schedule, x: Tensor, t: float, h: float) -> Tensor:
    """One unguided Euler step of the flow."""
    tt, *_ = _coefficients(schedule, t, x)
    with torch.no_grad():
        return x + h * convert(den(x, tt), "data", "velocity", x, tt, schedule)


@INVERSE_SOLVERS.register("dps")
def dps(model: Model, path: object, operator: LinearOperator, y: Tensor, *, sigma_y: float = 0.0,
        prediction: str = "velocity", nfe: int = 100, step_size: float = 10.0, t_start: float = 0.0,
        x0: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""Diffusion posterior sampling (Chung et al. 2023, "Diffusion Posterior Sampling for General
    Noisy Inverse Problems", ICLR) on the flow ODE: ``nfe`` Euler steps on [0, 1], those from
    :math:`t \ge` ``t_start`` guided,

    .. math:: x \leftarrow x + h\,u_t(x) - \zeta h\, \nabla_x \big\|y - A\hat x_1(x, t)\big\|_2,

    i.e. DPS's step :math:`\zeta_i \nabla\|y - A\hat x_1\|^2` with its normalisation
    :math:`\zeta_i = \zeta'/\|y - A\hat x_1\|`, written per unit of flow time (``step_size`` =
    :math:`\zeta`, per-step :math:`\zeta' = \zeta h / 2`) so that it does not depend on ``nfe``.
    ``sigma_y`` is not used (DPS's step size absorbs it). ``nfe`` Euler steps, one network
    evaluation and one backward pass each.
    """
    den, schedule, y, x, _ = _setup(model, path, operator, y, sigma_y, prediction, x0, generator)
    steps = check_positive_int(nfe, "nfe")
    zeta = check_positive(step_size, "step_size")
    t_start = check_number(t_start, "t_start", 0.0, 1.0, high_open=True)
    ts = _grid(0.0, steps, prediction)
    for k in range(steps):
        tt, *_ = _coefficients(schedule, ts[k], x)
        h = ts[k + 1] - ts[k]
        if ts[k] < t_start:
            x = _flow_step(den, schedule, x, ts[k], h)
            continue
        with torch.enable_grad():
            xg, x1 = _denoise_with_graph(den, x, tt)
            res = (y - operator._forward(x1)).flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(res.sum(), xg)
        u = convert(x1.detach(), "data", "velocity", x, tt, schedule)
        x = (x + h * u - zeta * h * grad).detach()
    return x


@INVERSE_SOLVERS.register("pigdm")
def pigdm(model: Model, path: object, operator: LinearOperator, y: Tensor, *, sigma_y: float = 0.0,
          prediction: str = "velocity", nfe: int = 100, guidance: float = 1.0, data_var: float = 1.0,
          t_start: float = 0.05, init: str = "noise", x0: Tensor | None = None,
          generator: torch.Generator | None = None) -> Tensor:
    r"""Pseudo-inverse guided flow (ΠGDM, Song et al. 2023, "Pseudoinverse-Guided Diffusion Models
    for Inverse Problems", ICLR; its flow form is OT-ODE, Pokle et al. 2024, "Training-free
    Linear Image Inverses via Flows", TMLR). :math:`p_t(x_1 \mid x_t) \approx
    \mathcal N(\hat x_1, r_t^2 I)`, with :math:`r_t^2 = v\sigma_t^2/(\sigma_t^2 + \alpha_t^2 v)`
    the posterior variance for data of variance :math:`v` (``data_var``), gives

    .. math:: \nabla_x \log p_t(y \mid x) \approx \Big(\frac{\partial \hat x_1}{\partial x}\Big)^{\!\top}
              A^\top \big(r_t^2 A A^\top + \sigma_y^2 I\big)^{-1} \big(y - A\hat x_1\big),

    (:math:`A^+ (y - A\hat x_1) / r_t^2` for :math:`\sigma_y = 0` and :math:`AA^\top` invertible), one
    vector-Jacobian product per step, and Euler steps on
    :math:`u_t(x) + \gamma\, c_t \nabla_x \log p_t(y \mid x)` (``guidance`` = :math:`\gamma`).
    ``init="noise"``: ``nfe`` Euler steps on [0, 1] from ``x0``, unguided before ``t_start``
    (:math:`c_t \sim 1/\alpha_t` would amplify a trained network's Jacobian error near
    :math:`\alpha_t = 0`); ``"pseudo_inverse"``: ``nfe`` guided steps on [``t_start``, 1] from
    :math:`\alpha_{t_s} A^+ y + \sigma_{t_s} x_0` (OT-ODE's start, with e.g. ``t_start=0.2``).
    """
    den, schedule, y, x, sigma_y = _setup(model, path, operator, y, sigma_y, prediction, x0, generator)
    steps = check_positive_int(nfe, "nfe")
    gamma = check_number(guidance, "guidance", 0.0, math.inf, high_open=True)
    v = check_positive(data_var, "data_var")
    t_start = check_number(t_start, "t_start", 0.0, 1.0, low_open=True, high_open=True)
    if init not in ("noise", "pseudo_inverse"):
        raise ValueError(f"init must be 'noise' or 'pseudo_inverse', got {init!r}")
    ts = _grid(t_start if init == "pseudo_inverse" else 0.0, steps, prediction)
    if init == "pseudo_inverse":
        _, a0, s0, _, _ = _coefficients(schedule, ts[0], x)
        x = s0 * x + a0 * operator.pseudo_inverse(y)
    for k in range(steps):
        tt, a, s, da, ds = _coefficients(schedule, ts[k], x)
        h = ts[k + 1] - ts[k]
        if ts[k] < t_start:
            x = _flow_step(den, schedule, x, ts[k], h)
            continue
        a_, s_ = float(a.flatten()[0]), float(s.flatten()[0])
        r2 = v * s_**2 / (s_**2 + a_**2 * v)
        with torch.enable_grad():
            xg, x1 = _denoise_with_graph(den, x, tt)
            g = operator._adjoint(operator.gram_solve((y - operator._forward(x1)).detach(), r2, sigma_y**2))
            (vjp,) = torch.autograd.grad(x1, xg, grad_outputs=g)
        u = convert(x1.detach(), "data", "velocity", x, tt, schedule)
        c = da * s * s / a - ds * s
        x = (x + h * (u + gamma * c * vjp)).detach()
    return x


@INVERSE_SOLVERS.register("pnp_flow")
def pnp_flow(model: Model, path: object, operator: LinearOperator, y: Tensor, *, sigma_y: float = 0.0,
             prediction: str = "velocity", nfe: int = 100, step_size: float = 1.0, decay: float = 0.0,
             x0: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""PnP-Flow (Martin et al. 2025, "PnP-Flow: Plug-and-Play Image Restoration with Flow
    Matching", ICLR): for :math:`t_k = k/N`, :math:`k = 0, \dots, N-1` (``N = nfe``; the grid of
    the other solvers without its end),

    .. math:: z = x - \gamma_k A^\top(Ax - y),\qquad
              \tilde z = \alpha_{t_k} z + \sigma_{t_k}\varepsilon,\ \varepsilon \sim \mathcal N(0, I),\qquad
              x = \hat x_1(\tilde z, t_k),

    a gradient step on :math:`\tfrac12\|Ax - y\|^2`, re-interpolation to time :math:`t_k` with
    fresh noise, and the flow's denoiser. :math:`\gamma_k = \gamma (1 - t_k)^{a} / \|A\|^2`
    (``step_size`` = :math:`\gamma`, ``decay`` = :math:`a`); :math:`\gamma = 1` projects onto
    :math:`\{Ax = y\}` when :math:`A` is a mask. The default :math:`a = 0` keeps the last
    iterates consistent with :math:`y`, and so with its noise: for a strongly noisy measurement
    :math:`a \approx 1` (steps vanishing as :math:`t \to 1`) lets the last denoising steps remove it.
    The start ``x0`` (default noise) enters only through the first data step. No gradient through
    the network. ``sigma_y`` is not used.
    """
    den, schedule, y, x, _ = _setup(model, path, operator, y, sigma_y, prediction, x0, generator)
    steps = check_positive_int(nfe, "nfe")
    gamma = check_positive(step_size, "step_size") / max(operator.norm_sq(), 1e-12)
    decay = check_number(decay, "decay", 0.0, math.inf, high_open=True)
    dev = generator.device if generator is not None else torch.device("cpu")
    ts = _grid(0.0, steps, prediction)
    for k in range(steps):
        t = ts[k]
        tt, a, s, _, _ = _coefficients(schedule, t, x)
        z = x - gamma * (1.0 - t) ** decay * operator._adjoint(operator._forward(x) - y)
        eps = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
        with torch.no_grad():
            x = den(a * z + s * eps, tt)
    return x


@INVERSE_SOLVERS.register("d_flow")
def d_flow(model: Model, path: object, operator: LinearOperator, y: Tensor, *, sigma_y: float = 0.0,
           prediction: str = "velocity", nfe: int = 100, sampler_steps: int = 5, reg: float | None = None,
           lr: float = 1.0, x0: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""D-Flow (Ben-Hamu et al. 2024, "D-Flow: Differentiating through Flows for Controlled
    Generation", ICML): optimise the source noise :math:`z` through a few-step Euler sampler
    :math:`\Phi` (``sampler_steps`` steps from ``t = 0`` to 1) by L-BFGS,

    .. math:: \min_z\ \tfrac12\|A\Phi(z) - y\|^2 + \tfrac{\lambda}{2}\|z\|^2,

    with :math:`\lambda` = ``reg`` (default :math:`\sigma_y^2`: the maximum a posteriori noise
    of the latent Gaussian; 0 without noise), starting at ``x0``, one optimisation per
    measurement (a batch is a loop: slow for large batches); returns :math:`\Phi(z)`. The
    optimiser stops after about ``nfe`` network evaluations (``nfe // sampler_steps`` evaluations
    of :math:`\Phi`, each with a backward pass). A mode-seeking method: its spread comes from the
    starting noises and the early stop, not from the posterior.
    """
    den, schedule, y, z0, sigma_y = _setup(model, path, operator, y, sigma_y, prediction, x0, generator)
    k = check_positive_int(sampler_steps, "sampler_steps")
    evals = check_positive_int(nfe, "nfe") // k
    if evals < 1:
        raise ValueError(f"nfe={nfe} is below sampler_steps={k}: D-Flow needs at least one pass of the sampler")
    lam = sigma_y**2 if reg is None else check_number(reg, "reg", 0.0, math.inf, high_open=True)
    lr = check_positive(lr, "lr")
    ts = _grid(0.0, k, prediction)

    def flow(z: Tensor) -> Tensor:
        x = z
        for i in range(k):
            tt, *_ = _coefficients(schedule, ts[i], x)
            x = x + (ts[i + 1] - ts[i]) * convert(den(x, tt), "data", "velocity", x, tt, schedule)
        return x

    def fit(z0: Tensor, y: Tensor) -> Tensor:
        z = z0.detach().clone().requires_grad_(True)
        opt = torch.optim.LBFGS([z], lr=lr, max_iter=evals, max_eval=evals, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            loss = 0.5 * (operator._forward(flow(z)) - y).pow(2).sum() + 0.5 * lam * z.pow(2).sum()
            (z.grad,) = torch.autograd.grad(loss, z)  # not backward(): the network's weights stay untouched
            return loss.detach()

        with torch.enable_grad():
            opt.step(closure)
        return z.detach()

    # one L-BFGS run per measurement: a shared line search over the batch would couple the problems
    z = torch.cat([fit(z0[i:i + 1], y[i:i + 1]) for i in range(y.shape[0])])
    with torch.no_grad():
        return flow(z)


def _cg(matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int) -> Tensor:
    """``iters`` batched conjugate-gradient steps on ``matvec(x) = b`` from 0; a sample stops at
    its first direction of non-positive curvature (truncated CG), keeping its last iterate."""
    dims = tuple(range(1, b.dim()))
    tiny = torch.finfo(b.dtype).tiny
    x, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), (r * r).sum(dims, keepdim=True)
    active = rs > 0
    for _ in range(iters):
        ap = matvec(p)
        curv = (p * ap).sum(dims, keepdim=True)
        active = active & (curv > 0) & torch.isfinite(curv)
        alpha = torch.where(active, rs / torch.where(active, curv, torch.ones_like(curv)), torch.zeros_like(curv))
        x, r = x + alpha * p, r - alpha * ap
        rs_new = (r * r).sum(dims, keepdim=True)
        p, rs = r + rs_new / rs.clamp_min(tiny) * p, rs_new
        active = active & (rs > 0)
        if not bool(active.any()):
            break
    return x


def _moment_matching_guidance(den: Model, operator: LinearOperator, x: Tensor, tt: Tensor, y: Tensor,
                              scale: Tensor, sigma_y: float, iters: int) -> tuple[Tensor, Tensor]:
    r"""``(x̂_1, J^T A^T (A Σ A^T + σ_y^2 I)^{-1}(y - A x̂_1))`` with :math:`\Sigma = ` ``scale`` :math:`J`."""
    with torch.enable_grad():
        xg, x1 = _denoise_with_graph(den, x, tt)

        def gram(v: Tensor) -> Tensor:
            jv = torch.autograd.grad(x1, xg, grad_outputs=operator._adjoint(v), retain_graph=True)[0]
            return operator._forward(scale * jv) + sigma_y**2 * v

        v = _cg(gram, (y - operator._forward(x1)).detach(), iters)
        (vjp,) = torch.autograd.grad(x1, xg, grad_outputs=operator._adjoint(v))
    return x1.detach(), vjp


@INVERSE_SOLVERS.register("mmps")
def mmps(model: Model, path: object, operator: LinearOperator, y: Tensor, *, sigma_y: float = 0.0,
         prediction: str = "velocity", nfe: int = 100, cg_iters: int = 3, t_start: float = 0.05,
         x0: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    r"""Moment-matching posterior sampling (MMPS, Rozet et al. 2024, "Learning Diffusion Priors
    from Observations by Expectation Maximization", NeurIPS): ΠGDM's Gaussian
    :math:`p_t(x_1 \mid x_t)` with Tweedie's exact covariance instead of :math:`r_t^2 I`,

    .. math:: \Sigma_t = \operatorname{Cov}[x_1 \mid x_t] = \frac{\sigma_t^2}{\alpha_t}\,
              \frac{\partial \hat x_1}{\partial x_t},\qquad
              \nabla_x \log p_t(y \mid x) \approx \Big(\frac{\partial \hat x_1}{\partial x}\Big)^{\!\top}
              A^\top \big(A\Sigma_t A^\top + \sigma_y^2 I\big)^{-1}\big(y - A\hat x_1\big),

    the solve by ``cg_iters`` conjugate-gradient steps, each one vector-Jacobian product
    (:math:`\partial\hat x_1/\partial x` is symmetric for an exact denoiser). Euler steps on
    :math:`u_t(x) + c_t \nabla_x \log p_t(y \mid x)`: ``nfe`` steps on [0, 1] from ``x0``, unguided
    before ``t_start`` (as :func:`pigdm`). A trained network's Jacobian is not exactly symmetric
    positive: conjugate gradients stop for a sample at the first direction of non-positive curvature.
    ``nfe`` network evaluations, each with ``cg_iters + 1`` backward passes.
    """
    den, schedule, y, x, sigma_y = _setup(model, path, operator, y, sigma_y, prediction, x0, generator)
    steps = check_positive_int(nfe, "nfe")
    iters = check_positive_int(cg_iters, "cg_iters", 1000)
    t_start = check_number(t_start, "t_start", 0.0, 1.0, low_open=True, high_open=True)
    ts = _grid(0.0, steps, prediction)
    for k in range(steps):
        tt, a, s, da, ds = _coefficients(schedule, ts[k], x)
        h = ts[k + 1] - ts[k]
        if ts[k] < t_start:
            x = _flow_step(den, schedule, x, ts[k], h)
            continue
        x1, vjp = _moment_matching_guidance(den, operator, x, tt, y, s * s / a, sigma_y, iters)
        u = convert(x1, "data", "velocity", x, tt, schedule)
        x = (x + h * (u + (da * s * s / a - ds * s) * vjp)).detach()
    return x
