"""Semi-discrete OT: chunked search vs brute force, fitted cell masses, the 1D quantile map."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save
from scipy.stats import norm

from monge.ot.semidiscrete import (
    SemiDiscreteMap,
    _block_sizes,
    cell_search,
    fit_semidiscrete,
)

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def search_problems(draw):
    m = draw(st.integers(1, 40))
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 6))
    k = draw(st.integers(1, n))
    budget = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    h = torch.randn(n, generator=g, dtype=torch.float64)
    return x, y, h, k, budget


@SETTINGS
@given(search_problems())
def test_chunked_search_matches_brute_force(prob):
    x, y, h, k, budget = prob
    scores = x @ y.T + h
    ref_s, ref_i = scores.topk(k, dim=1)
    s, i = cell_search(x, y, h, k=k, max_block_elements=budget)
    if k == 1:
        s, i = s[:, None], i[:, None]
    torch.testing.assert_close(s, ref_s, rtol=1e-12, atol=1e-12)
    # indices may differ only on exact ties; the scores they point at must agree
    torch.testing.assert_close(scores.gather(1, i), ref_s, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(st.integers(1, 10**6), st.integers(1, 10**6), st.integers(1, 4096), st.integers(1, 2**24))
def test_blocks_respect_the_memory_budget(m, n, d, budget):
    rows, cols = _block_sizes(m, n, d, budget)
    assert 1 <= rows <= m and 1 <= cols <= n
    assert rows * cols <= max(budget, 1)


def test_sharded_search_reduces_to_full_search():
    g = torch.Generator().manual_seed(0)
    x, y, h = torch.randn(50, 5, generator=g), torch.randn(33, 5, generator=g), torch.randn(33, generator=g)
    full_s, full_i = cell_search(x, y, h)
    parts = [cell_search(x, y[a:b], h[a:b], index_offset=a) for a, b in [(0, 10), (10, 25), (25, 33)]]
    s = torch.stack([p[0] for p in parts], 1)
    i = torch.stack([p[1] for p in parts], 1)
    best = s.argmax(1, keepdim=True)
    torch.testing.assert_close(s.gather(1, best)[:, 0], full_s)
    assert torch.equal(i.gather(1, best)[:, 0], full_i)


def test_one_dimensional_map_is_the_gaussian_quantile_map():
    n = 10
    g = torch.Generator().manual_seed(0)
    y = torch.sort(1.5 * torch.randn(n, 1, generator=g, dtype=torch.float64), 0).values
    res = fit_semidiscrete(y, tol=0.02, generator=torch.Generator().manual_seed(1), max_iter=3000)
    assert res.converged, res.error
    # exact map: x -> y_i for Phi^{-1}(i/N) < x < Phi^{-1}((i+1)/N); test away from the
    # boundaries by 0.01 in probability (the fit's mass tolerance)
    u = torch.linspace(0.001, 0.999, 2001, dtype=torch.float64)
    dist = (u[:, None] - torch.arange(1, n, dtype=torch.float64)[None] / n).abs().min(1).values
    u = u[dist > 0.01]
    x = torch.from_numpy(norm.ppf(u.numpy()))[:, None]
    idx, mapped = res.map(x)
    expected = torch.floor(u * n).long()
    assert torch.equal(idx, expected)
    torch.testing.assert_close(mapped, y[expected])
    # the cell boundaries (h_i - h_{i+1}) / (y_{i+1} - y_i) sit at the quantiles
    h, yy = res.heights, y[:, 0]
    bounds = (h[:-1] - h[1:]) / (yy[1:] - yy[:-1])
    probs = torch.from_numpy(norm.cdf(bounds.numpy()))
    torch.testing.assert_close(probs, torch.arange(1, n, dtype=torch.float64) / n, rtol=0, atol=0.01)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_uniform_cells_have_mass_one_over_n(optimizer):
    n = 20
    y = torch.randn(n, 2, generator=torch.Generator().manual_seed(2))
    res = fit_semidiscrete(y, optimizer=optimizer, tol=0.03, generator=torch.Generator().manual_seed(3))
    assert res.converged and res.rms_error <= 0.03, res.error
    # fresh samples: noise of the check is ~0.8 * sqrt(N / 4e5) = 0.6% (mean) per cell
    max_err, mean_err = res.map.mass_error(400_000, torch.Generator().manual_seed(4))
    assert mean_err <= 0.04, mean_err
    assert max_err <= 0.12, max_err
    masses = res.map.cell_masses(400_000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(masses.sum(), torch.tensor(1.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(masses, torch.full((n,), 1 / n), rtol=0.12, atol=0)


def test_weighted_targets_and_custom_source():
    g = torch.Generator().manual_seed(5)
    y = torch.rand(8, 2, generator=g, dtype=torch.float64)
    w = torch.tensor([1, 2, 3, 4, 4, 3, 2, 1], dtype=torch.float64)
    w = w / w.sum()

    def uniform_square(n, generator):
        return torch.rand(n, 2, generator=generator, dtype=torch.float64)

    res = fit_semidiscrete(y, w, source=uniform_square, tol=0.03, generator=torch.Generator().manual_seed(6))
    assert res.converged
    masses = res.map.cell_masses(300_000, torch.Generator().manual_seed(7), source=uniform_square)
    # a weighted RMS relative error of 0.03 allows 0.03 / sqrt(0.05) = 13% on the lightest cell
    torch.testing.assert_close(masses, w, rtol=0.12, atol=0)


def test_map_topk_and_image_shapes():
    g = torch.Generator().manual_seed(8)
    y = torch.randn(30, 2, 2, 2, generator=g)
    h = torch.randn(30, generator=g)
    mp = SemiDiscreteMap(y, h, max_block_elements=64)
    x = torch.randn(17, 2, 2, 2, generator=g)
    idx, out = mp(x)
    assert idx.shape == (17,) and out.shape == (17, 2, 2, 2)
    ref = (x.flatten(1) @ y.flatten(1).T + h).argmax(1)
    assert torch.equal(idx, ref) and torch.equal(out, y[ref])
    kidx, kout, ks = mp.topk(x, 4)
    assert kidx.shape == (17, 4) and kout.shape == (17, 4, 2, 2, 2) and ks.shape == (17, 4)
    assert torch.equal(kidx[:, 0], idx)
    assert bool((ks[:, :-1] >= ks[:, 1:]).all())
    torch.testing.assert_close(ks, (x.flatten(1) @ y.flatten(1).T + h).topk(4, 1).values)


def test_bytes_roundtrip():
    g = torch.Generator().manual_seed(9)
    y, h = torch.randn(12, 3, 2, generator=g), torch.randn(12, generator=g)
    w = torch.rand(12, generator=g)
    mp = SemiDiscreteMap(y, h, w / w.sum())
    back = SemiDiscreteMap.from_bytes(mp.to_bytes())
    assert torch.equal(back.targets, y) and torch.equal(back.heights, h)
    torch.testing.assert_close(back.weights, mp.weights)
    x = torch.randn(20, 3, 2, generator=g)
    assert torch.equal(back(x)[0], mp(x)[0])


def test_from_bytes_rejects_foreign_or_inconsistent_data():
    with pytest.raises(ValueError, match="garbage.safetensors is not a readable safetensors"):
        SemiDiscreteMap.from_bytes(b"\x00\x01not a safetensors file", origin="garbage.safetensors")
    with pytest.raises(ValueError, match="not a semi-discrete map"):
        SemiDiscreteMap.from_bytes(st_save({"targets": torch.zeros(3, 2)}, metadata={"format": "something-else"}))
    meta = {"format": "monge.semidiscrete", "version": "1", "shape": json.dumps([2])}
    with pytest.raises(ValueError, match="inconsistent shapes"):
        SemiDiscreteMap.from_bytes(st_save({"targets": torch.zeros(3, 2), "heights": torch.zeros(4),
                                            "weights": torch.full((3,), 1 / 3)}, metadata=meta))
    with pytest.raises(ValueError, match="weights must sum to 1"):
        SemiDiscreteMap.from_bytes(st_save({"targets": torch.zeros(3, 2), "heights": torch.zeros(3),
                                            "weights": torch.full((3,), 0.5)}, metadata=meta))


@pytest.mark.parametrize(
    "w, match",
    [
        (torch.tensor([0.5, 0.7, -0.2]), "weights has negative"),
        (torch.tensor([0.5, 0.2, 0.2]), "weights must sum to 1"),
        (torch.tensor([0.5, float("nan"), 0.5]), "weights contains NaN"),
        (torch.tensor([]), "weights is empty"),
        (torch.tensor([0.5, 0.5]), r"weights must have shape \(3,\)"),
    ],
)
def test_bad_weights_are_named(w, match):
    with pytest.raises(ValueError, match=match):
        fit_semidiscrete(torch.randn(3, 2), w, max_iter=1)
    with pytest.raises(ValueError, match=match):
        SemiDiscreteMap(torch.randn(3, 2), torch.zeros(3), w)


def test_bad_inputs_are_named():
    y = torch.randn(4, 3)
    with pytest.raises(ValueError, match="targets is empty"):
        fit_semidiscrete(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="targets contains 1 NaN"):
        fit_semidiscrete(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="source must be"):
        fit_semidiscrete(y, source="uniform", max_iter=1)
    with pytest.raises(ValueError, match=r"source\(n, generator\) must return"):
        fit_semidiscrete(y, source=lambda n, g: torch.randn(n, 2), max_iter=1)
    with pytest.raises(ValueError, match="optimizer"):
        fit_semidiscrete(y, optimizer="lbfgs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heights must have shape"):
        SemiDiscreteMap(y, torch.zeros(5))
    mp = SemiDiscreteMap(y, torch.zeros(4))
    with pytest.raises(ValueError, match="x must have 3 features"):
        mp(torch.randn(2, 4))
    with pytest.raises(ValueError, match="k must be <="):
        mp.topk(torch.randn(2, 3), 5)
    with pytest.raises(ValueError, match="targets have 3"):
        cell_search(torch.randn(2, 2), y, torch.zeros(4))
