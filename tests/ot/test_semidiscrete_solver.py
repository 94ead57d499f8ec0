"""The entropic semi-discrete solver: independent references (POT, OTT-JAX, closed forms),
convergence by the independent estimator, exact resume, the entropic sampler, bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2 as chi2_dist

from monge.ot.semidiscrete import (
    MarginalReport,
    SemiDiscreteMap,
    SemiDiscreteSolver,
    SemiDiscreteState,
    fit_semidiscrete,
    marginal_error,
)


def _g25(n: int = 256) -> torch.Tensor:
    """25 Gaussians (std 0.1) on the grid {-2..2}^2, as the ``25gaussians`` toy set."""
    g = torch.Generator().manual_seed(0)
    ticks = torch.arange(-2.0, 3.0)
    centres = torch.stack(torch.meshgrid(ticks, ticks, indexing="ij"), -1).reshape(-1, 2)
    return centres[torch.randint(0, 25, (n,), generator=g)] + 0.1 * torch.randn(n, 2, generator=g)


# ------------------------------------------------------------------------- the estimator
def test_estimator_is_unbiased_for_a_known_map():
    """1D, two targets +-1 with h = 0: cells are x < 0 and x > 0, masses 1/2 each. With weights
    (0.3, 0.7) the exact chi2 is 0.2^2/0.3 + 0.2^2/0.7; the U-statistic recovers it within its
    noise, while the plug-in carries the extra noise term."""
    y = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    exact = 0.2**2 / 0.3 + 0.2**2 / 0.7
    e = marginal_error(torch.zeros(2, dtype=torch.float64), y, w, 200_000, torch.Generator().manual_seed(0))
    assert isinstance(e, MarginalReport)
    assert abs(e.chi2 - exact) < 5 * (2 * 0.5 / 200_000**0.5), e
    assert math.isclose(e.chi2_raw, e.chi2 + e.chi2_noise, rel_tol=1e-9)
    # uniform weights: exact map, chi2 is centred on 0 with std ~ sqrt(2 (N-1)) / M
    e0 = marginal_error(torch.zeros(2, dtype=torch.float64), y, None, 100_000, torch.Generator().manual_seed(1))
    assert abs(e0.chi2) < 5 * e0.chi2_std + 1e-12 and e0.rms < 0.02


# ------------------------------------------------------------------------- references
def test_cells_match_pot_emd_on_a_fine_discretisation():
    """POT reference: the source discretised by 6000 Gaussian draws (uniform weights) onto
    N = 6 weighted targets with ot.emd (cost -<x, y>, equivalent to |x - y|^2 / 2); the fitted
    map's hard cells must agree with the emd assignment on all but the points near boundaries."""
    ot = pytest.importorskip("ot")
    g = torch.Generator().manual_seed(3)
    y = torch.randn(6, 2, generator=g, dtype=torch.float64) * 1.5
    w = torch.tensor([1, 2, 3, 1, 2, 3], dtype=torch.float64)
    w = w / w.sum()
    res = fit_semidiscrete(y, w, tol=0.04, max_iter=1500, generator=torch.Generator().manual_seed(4))
    assert res.converged, res.error
    x = torch.randn(6000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = np.full(6000, 1 / 6000)
    plan = ot.emd(a, w.numpy(), (-(x @ y.T)).numpy())
    ref = torch.from_numpy(plan.argmax(1))
    agree = float((res.map(x)[0] == ref).double().mean())
    assert agree > 0.95, agree


def test_matches_ott_jax_potentials():
    """OTT-JAX's entropic semi-discrete solver on the same small problem: convert its dual g
    (cost |x - y|^2, eps_ott) to monge's heights h = (g - |y|^2)/2 + (eps_ott/2) log b at
    eps = eps_ott / 2, and compare to monge's fit (both centred)."""
    pytest.importorskip("ott")
    import jax
    import jax.numpy as jnp
    import optax
    from ott.geometry.semidiscrete_pointcloud import SemidiscretePointCloud
    from ott.problems.linear.semidiscrete_linear_problem import SemidiscreteLinearProblem
    from ott.solvers.linear.semidiscrete import SemidiscreteSolver

    jax.config.update("jax_enable_x64", True)
    try:
        y = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, 1.5], [0.5, -1.0]], dtype=torch.float64)
        eps_ott = 0.5
        sampler = lambda rng, shape, dtype=jnp.float64: jax.random.normal(rng, shape, dtype=dtype)  # noqa: E731
        geom = SemidiscretePointCloud(sampler, jnp.asarray(y.numpy()), epsilon=eps_ott)
        prob = SemidiscreteLinearProblem(geom)
        solver = SemidiscreteSolver(num_iterations=2000, batch_size=512, optimizer=optax.sgd(0.5),
                                    error_eval_every=3000, potential_ema=0.99)
        out = solver(jax.random.key(0), prob)
        g = torch.from_numpy(np.array(out.g))
    finally:
        jax.config.update("jax_enable_x64", False)
    b = torch.full((4,), 0.25, dtype=torch.float64)
    h_ott = (g - y.square().sum(1)) / 2 + eps_ott / 2 * torch.log(b)
    h_ott -= h_ott.mean()
    res = fit_semidiscrete(y, epsilon=eps_ott / 2, tol=0.02, max_iter=1500, generator=torch.Generator().manual_seed(0))
    assert res.converged, res.error
    e_ott = marginal_error(h_ott, y, eps=eps_ott / 2, n_samples=200_000, generator=torch.Generator().manual_seed(1))
    assert e_ott.rms < 0.03, e_ott  # OTT converged, as judged by monge's estimator
    torch.testing.assert_close(res.heights, h_ott, atol=0.03, rtol=0)


# ------------------------------------------------------------------------- convergence
def test_clustered_targets_converge_to_five_percent():
    y = _g25(256)
    res = fit_semidiscrete(y, tol=0.05, max_iter=3000, generator=torch.Generator().manual_seed(1))
    assert res.converged and res.reason == "converged", res.error
    # an independent check with another seed and more samples
    e = marginal_error(res.map, n_samples=400 * 256, generator=torch.Generator().manual_seed(2))
    assert e.rms <= 0.06 and e.mean_rel <= 0.06 + e.mean_rel_noise, e


def test_fit_terminates_and_reports_non_convergence_honestly():
    res = fit_semidiscrete(_g25(256), tol=1e-4, max_iter=30, generator=torch.Generator().manual_seed(1))
    assert not res.converged and res.reason == "max_iter" and res.n_iter == 30
    assert res.rms_error > 1e-4


def test_entropic_target_epsilon_converges():
    y = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    res = fit_semidiscrete(y, epsilon=0.3, tol=0.04, max_iter=1500, generator=torch.Generator().manual_seed(1))
    assert res.converged and res.map.epsilon == 0.3 and res.error.epsilon == 0.3
    e = marginal_error(res.map, n_samples=200_000, generator=torch.Generator().manual_seed(2))
    assert e.rms <= 0.05, e


def _digits(n: int) -> torch.Tensor:
    """The first ``n`` scikit-learn digits (64-D), standardised: clustered, high-dimensional targets
    on which hard cells left empty by the entropic phase stay empty under Adam alone."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data[:n], dtype=torch.float32)
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def test_starved_cells_are_refilled_and_the_fit_converges():
    y = _digits(300)
    res = fit_semidiscrete(y, tol=0.05, max_iter=800, generator=torch.Generator().manual_seed(1))
    assert res.converged and res.state.refilled > 0, res.error
    e = marginal_error(res.map, n_samples=400 * 300, generator=torch.Generator().manual_seed(2))
    assert e.rms <= 0.06 and e.empty == 0, e  # the fit stops at its first passing check: a little slack
    # the same fit without the line search is still far off after as many steps
    slow = fit_semidiscrete(y, tol=0.05, max_iter=800, refill=False, generator=torch.Generator().manual_seed(1))
    assert not slow.converged and slow.state.refilled == 0 and slow.rms_error > 0.05


def test_low_margins_are_the_heights_that_fill_a_cell():
    """Brute force: margins max_j s_j(x) - s_i(x) sorted per target; raising h_i by the k-th
    (plus a hair) puts exactly k of the rows into cell i."""
    from monge.ot._sd_kernels import Layout

    g = torch.Generator().manual_seed(0)
    y = torch.randn(9, 3, generator=g, dtype=torch.float64)
    h = torch.randn(9, generator=g, dtype=torch.float64)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64)
    cells = torch.tensor([4, 0, 7])
    h[0] -= 3.0  # an empty cell
    low = Layout(y, 9, max_block_elements=64).low_margins(x, h, cells, 6)
    s = x @ y.T + h
    brute = (s.max(1, keepdim=True).values - s)[:, cells].sort(0).values[:6]
    torch.testing.assert_close(low, brute)
    assert not bool((s.argmax(1) == 0).any())  # cell 0 is empty
    for j, i in enumerate(cells.tolist()):
        already = int((s.argmax(1) == i).sum())
        for k in (1, 3, 6):
            h2 = h.clone()
            h2[i] += low[k - 1, j] + 1e-9
            inside = int(((x @ y.T + h2).argmax(1) == i).sum())
            assert inside == max(k, already), (i, k, inside)


# ------------------------------------------------------------------------- resume
def test_resume_is_bit_for_bit():
    y = _g25(64)
    opts = dict(tol=1e-6, eval_every=10, eval_samples=5000)
    full = fit_semidiscrete(y, max_iter=60, generator=torch.Generator().manual_seed(7), **opts)
    kept: list[bytes] = []
    part = fit_semidiscrete(y, max_iter=25, checkpoint=lambda st: kept.append(st.to_bytes()), checkpoint_every=5,
                            generator=torch.Generator().manual_seed(7), **opts)
    assert len(kept) == 25 // 5 + 1  # every 5 steps and at the end
    state = SemiDiscreteState.from_bytes(kept[-1])
    assert state.step == 25
    rest = fit_semidiscrete(y, max_iter=60, init=state, tol=1e-6, eval_every=10, eval_samples=5000)
    assert rest.n_iter == 60
    assert torch.equal(rest.heights, full.heights)
    assert torch.equal(rest.state.heights, full.state.heights)
    assert [h for h in full.history if h[0] > 25] == list(rest.history)
    assert part.n_iter == 25
    with pytest.raises(ValueError, match="other targets"):
        fit_semidiscrete(y + 1, max_iter=60, init=state)


def test_resume_is_bit_for_bit_through_refills():
    y = _digits(300)
    refills: list[int] = []  # steps at which starved cells were moved

    def watch(state, err):
        if state.refilled > (refills[-1][1] if refills else 0):
            refills.append((state.step, state.refilled))

    full = fit_semidiscrete(y, max_iter=150, tol=1e-6, callback=watch, generator=torch.Generator().manual_seed(1))
    assert refills, "the test needs a fit with starved cells"
    stop = refills[-1][0] - 1  # resume inside the window that ends with the last refill
    kept: list[bytes] = []
    fit_semidiscrete(y, max_iter=stop, checkpoint=lambda st: kept.append(st.to_bytes()), checkpoint_every=10,
                     tol=1e-6, generator=torch.Generator().manual_seed(1))
    state = SemiDiscreteState.from_bytes(kept[-1])
    assert state.step == stop and state.window_draws > 0  # stopped inside a window
    before = state.refilled
    rest = fit_semidiscrete(y, max_iter=150, init=state, tol=1e-6)
    assert torch.equal(rest.heights, full.heights) and rest.state.refilled == full.state.refilled > before


def test_state_version_1_loads_with_an_empty_window(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    res = fit_semidiscrete(_g25(32), max_iter=20, tol=1e-6, generator=torch.Generator().manual_seed(0))
    (tmp_path / "v2.safetensors").write_bytes(res.state.to_bytes())
    tensors = load_file(tmp_path / "v2.safetensors")
    del tensors["window_counts"]
    scalars = {k: v for k, v in json.loads(json.dumps(vars(res.state), default=lambda _: None)).items()
               if k not in ("heights", "average", "moment1", "moment2", "rng_state", "window_counts",
                            "window_draws", "refilled")}
    save_file(tensors, tmp_path / "v1.safetensors",
              metadata={"format": "monge.semidiscrete.state", "version": "1", "scalars": json.dumps(scalars)})
    old = SemiDiscreteState.from_bytes((tmp_path / "v1.safetensors").read_bytes())
    assert old.window_draws == 0 and torch.equal(old.window_counts, torch.zeros(32))
    assert torch.equal(old.heights, res.state.heights) and old.step == 20


# ------------------------------------------------------------------------- sampler
def test_entropic_sampler_follows_the_softmax():
    g = torch.Generator().manual_seed(0)
    y, h = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)
    mp = SemiDiscreteMap(y, h, max_block_elements=20, epsilon=0.8)
    x0 = torch.randn(1, 3, generator=g, dtype=torch.float64)
    x = x0.expand(8000, 3)
    idx, out = mp.sample_cells(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, y[idx])
    p = torch.softmax((x0 @ y.T + h) / 0.8, 1)[0]
    counts = torch.bincount(idx, minlength=7).double()
    stat = float(((counts - 8000 * p) ** 2 / (8000 * p)).sum())
    assert stat < chi2_dist.ppf(0.999, 6), stat
    again = mp.sample_cells(x, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(idx, again)  # deterministic given the generator
    big = SemiDiscreteMap(y, h, epsilon=0.8).sample_cells(x, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(idx, big)  # and independent of the block size
    assert torch.equal(mp.sample_cells(x[:5], eps=0.0)[0], mp(x[:5])[0])


def test_map_bytes_keep_epsilon_and_read_version_1():
    import json

    from safetensors.torch import save as st_save

    y, h = torch.randn(5, 2), torch.randn(5)
    assert SemiDiscreteMap.from_bytes(SemiDiscreteMap(y, h, epsilon=0.25).to_bytes()).epsilon == 0.25
    meta = {"format": "monge.semidiscrete", "version": "1", "shape": json.dumps([2])}
    old = st_save({"targets": y, "heights": h, "weights": torch.full((5,), 0.2)}, metadata=meta)
    assert SemiDiscreteMap.from_bytes(old).epsilon == 0.0


# ------------------------------------------------------------------------- bad input
def test_duplicate_targets_are_merged_with_a_warning():
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    with pytest.warns(UserWarning, match="1 repeated points"):
        res = fit_semidiscrete(y, tol=0.04, max_iter=1500, generator=torch.Generator().manual_seed(0))
    assert res.duplicates == 1 and res.converged
    masses = res.map.cell_masses(200_000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(masses, torch.tensor([0.25, 0.5, 0.25, 0.0]), atol=0.03, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epsilon=-0.1), r"epsilon must be in \[0, inf\)"),
        (dict(epsilon=float("nan")), "epsilon must be"),
        (dict(eps_decay=1.0), "eps_decay must be in"),
        (dict(eps_decay=0.0), "eps_decay must be a positive"),
        (dict(eps_init=0.1, epsilon=0.5), "eps_init .* must be >= epsilon"),
        (dict(hard_blur=2.0), "hard_blur must be in"),
        (dict(ema=1.0), "ema must be in"),
        (dict(tol=0.0), "tol must be a positive"),
        (dict(optimizer="lbfgs"), "optimizer must be"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(max_time=-1.0), "max_time must be a positive"),
    ],
)
def test_bad_options_fail_before_work(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SemiDiscreteSolver(**kwargs)  # when the settings are made, before any targets
    with pytest.raises(ValueError, match=match):
        fit_semidiscrete(torch.randn(5, 2), **kwargs)


# ------------------------------------------------------------------------- the settings
def test_settings_are_one_frozen_validated_record_called_on_the_targets():
    solver = SemiDiscreteSolver(max_iter=50, tol=1e-6, max_time=None, eval_samples=4000)
    assert solver.max_time == math.inf and isinstance(solver.tol, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        solver.max_iter = 10  # type: ignore[misc]
    y = _g25(40)
    a = solver(y, torch.Generator().manual_seed(3))
    b = fit_semidiscrete(y, generator=torch.Generator().manual_seed(3), max_iter=50, tol=1e-6, eval_samples=4000)
    assert torch.equal(a.heights, b.heights) and a.n_iter == b.n_iter == 50
    with pytest.raises(ValueError, match="unknown semi-discrete option.*'heights'.*valid: epsilon"):
        fit_semidiscrete(y, heights=torch.zeros(40))
    with pytest.raises(ValueError, match="checkpoint must be callable"):
        solver(y, checkpoint="fit.safetensors")  # type: ignore[arg-type]


def test_every_setting_is_documented_once():
    doc = SemiDiscreteSolver.__doc__ or ""
    for f in dataclasses.fields(SemiDiscreteSolver):
        assert doc.count(f"\n    {f.name} : ") == 1, f.name


def test_bad_targets_and_weights():
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_semidiscrete(torch.randn(1, 3))
    with pytest.raises(ValueError, match="NaN/Inf"):
        fit_semidiscrete(torch.tensor([[0.0, float("inf")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="zero entries"):
        fit_semidiscrete(torch.randn(3, 2), torch.tensor([0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="must sum to 1"):
        fit_semidiscrete(torch.randn(3, 2), torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="negative"):
        fit_semidiscrete(torch.randn(3, 2), torch.tensor([0.5, 0.7, -0.2]))
    with pytest.raises(ValueError, match="pass the targets"):
        marginal_error(torch.zeros(3))
    with pytest.raises(ValueError, match="eps must be"):
        SemiDiscreteMap(torch.randn(3, 2), torch.zeros(3)).sample_cells(torch.randn(2, 2), eps=-1.0)


# ---------------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("sharded_path", [False, True])
def test_fused_entropic_sums_match_the_dense_softmax(monkeypatch, sharded_path):
    """The fused in-place softmax blocks (and the normalised path used by shards) equal a dense
    softmax, subnormals flushed or not, and the caller's flush mode is left as it was."""
    from monge.ot import _sd_kernels as K

    g = torch.Generator().manual_seed(0)
    y, x = torch.randn(300, 3, generator=g, dtype=torch.float64), torch.randn(700, 3, generator=g, dtype=torch.float64)
    h = 0.1 * torch.randn(300, generator=g, dtype=torch.float64)
    eps = 0.002  # most probabilities underflow into subnormals
    p = torch.softmax((x @ y.T + h) / eps, 1)
    lay = K.Layout(y, 300, max_block_elements=5000)
    if sharded_path:
        monkeypatch.setattr(lay, "sharded", True)
        monkeypatch.setattr(lay, "all_max", lambda t: t)
        monkeypatch.setattr(lay, "all_sum", lambda t: t)
        monkeypatch.setattr(lay, "gather_vec", lambda t: t)
    for flush in (True, False):
        monkeypatch.setattr(K, "FLUSH_DENORMAL", flush)
        s1, s2, blur = lay.soft_sums(x, h, eps)
        torch.testing.assert_close(s1, p.sum(0), atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(s2, p.square().sum(0), atol=1e-9, rtol=1e-9)
        assert blur == pytest.approx(float((1 - p.square().sum(1)).clamp_min(0).sum()), abs=1e-6)
        assert lay.soft_sums(x, h, eps, need_s2=False)[1] is None
        assert float(torch.tensor([1e-39]) * 2.0) != 0.0  # subnormals are back on after the call


@pytest.mark.parametrize("floor", [True, False])
def test_rarely_hit_cells_do_not_drive_the_heights_away(floor):
    """4000 targets, batches of 32 (a cell expects 0.008 hits per step): with Adam's second
    moment floored at the exact-map variance nu (1 - nu) / B the fit stays near its (good)
    starting heights; without the floor, full-size normalised steps on every miss and kicks on
    each hit drive the chi2 up several-fold (the case the floor exists for)."""
    y = torch.randn(4000, 16, generator=torch.Generator().manual_seed(0))
    opts = dict(epsilon=0.05, batch_size=32, eval_samples=4096, eval_every=10**6, variance_floor=floor)
    start = fit_semidiscrete(y, max_iter=1, generator=torch.Generator().manual_seed(1), **opts)
    end = fit_semidiscrete(y, max_iter=300, generator=torch.Generator().manual_seed(1), **opts)
    chi2 = [marginal_error(r.heights, y, eps=0.05, n_samples=80_000, generator=torch.Generator().manual_seed(2)).chi2
            for r in (start, end)]
    if floor:
        assert chi2[1] <= 2 * chi2[0], chi2
    else:
        assert chi2[1] >= 3 * chi2[0], chi2
