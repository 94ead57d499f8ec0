import dataclasses

import pytest
import torch

from monge.couplings import COUPLINGS, SemiDiscreteOT, prepare_coupling
from monge.couplings.maps import FIT_STATE_FILE, fit_or_load_map
from monge.couplings.semidiscrete import SAMPLER_TARGETS
from monge.data.sources import GaussianSource, ToySource


def _fitted(n_targets=32, seed=0, target="8gaussians"):
    c = SemiDiscreteOT(n_targets=n_targets, tol=0.05)
    c.prepare(GaussianSource((2,)), ToySource(target), torch.Generator().manual_seed(seed))
    return c


def test_semidiscrete_pairs_match_fitted_cells(pair_cost):
    c = _fitted()
    m = c.map
    assert m.n_targets == 32 and c.fit_info["converged"]
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    out = c(x0, x1, generator=g)
    assert torch.equal(out.x0, x0)
    # brute force: argmax_i <x, y_i> + h_i
    best = (x0.double() @ m.flat.double().T + m.heights.double()).argmax(1)
    torch.testing.assert_close(out.x1, m.targets[best])
    # cells of the fitted map carry equal source mass (fresh samples; noise ~ sqrt(32/2e5) = 1.3%)
    masses = m.cell_masses(200_000, torch.Generator().manual_seed(2))
    assert (masses * 32 - 1).abs().mean().item() < 0.08
    # OT: lower mean pair cost than pairing the noise with random targets
    rand = m.targets[torch.randint(32, (500,), generator=g)]
    assert pair_cost(out.x0, out.x1) < 0.7 * pair_cost(x0, rand)


def test_semidiscrete_uses_finite_data_sets_and_other_sources():
    class Finite(GaussianSource):
        def __init__(self, data):
            super().__init__((3,))
            self.data = data

    data = torch.randn(40, 3, generator=torch.Generator().manual_seed(3)) + 2
    whole = SemiDiscreteOT(n_targets=None, tol=0.1)
    whole.prepare(GaussianSource((3,)), Finite(data), torch.Generator().manual_seed(4))
    assert torch.equal(whole.map.targets, data)
    sub = SemiDiscreteOT(n_targets=10, tol=0.1)
    y = sub.targets_from(Finite(data), torch.Generator().manual_seed(5))
    assert y.shape == (10, 3) and bool(((y[:, None] == data[None]).all(-1)).any(1).all())
    assert len(torch.unique(y, dim=0)) == 10  # a subset without repeats
    # a non-Gaussian source: cells equal in the mass of that source
    src = ToySource("moons")
    c = SemiDiscreteOT(n_targets=16, tol=0.05)
    c.prepare(src, ToySource("8gaussians"), torch.Generator().manual_seed(6))
    masses = c.map.cell_masses(100_000, torch.Generator().manual_seed(7), source=lambda n, g: src.sample(n, g))
    assert (masses * 16 - 1).abs().mean().item() < 0.1
    # a sampler gives SAMPLER_TARGETS points by default (a finite set: all of them)
    y = SemiDiscreteOT().targets_from(ToySource("moons"), torch.Generator().manual_seed(0))
    assert y.shape == (SAMPLER_TARGETS, 2)


def test_semidiscrete_prepare_is_cached_next_to_the_checkpoint(tmp_path):
    src, tgt = GaussianSource((2,)), ToySource("moons")
    a = COUPLINGS.build("semidiscrete_ot", n_targets=24, tol=0.1)
    path = prepare_coupling(a, src, tgt, tmp_path, torch.Generator().manual_seed(0))
    assert path == tmp_path / "semidiscrete.safetensors" and path.is_file()
    b = COUPLINGS.build("semidiscrete_ot", n_targets=24, tol=0.1)
    b.prepare = None  # type: ignore[assignment]  # must load, not refit
    assert prepare_coupling(b, src, tgt, tmp_path) == path
    x0 = torch.randn(64, 2)
    assert torch.equal(a(x0, x0).x1, b(x0, x0).x1)
    assert prepare_coupling(COUPLINGS.build("exact_ot"), src, tgt, tmp_path) is None
    with pytest.raises(ValueError, match="semidiscrete_ot is not fitted"):
        SemiDiscreteOT()(x0, x0)


def test_semidiscrete_pairs_through_solve_and_pair_solved():
    c = _fitted(seed=3)
    assert c.traits.threaded_solve  # the hard-cell search is random-free: pairing workers may run it
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(4))
    cells = c.solve(x0, x0)
    assert torch.equal(cells, c.cells(x0))
    assert torch.equal(c.pair_solved(x0, x0, cells, None).x1, c(x0, x0).x1)


def test_cached_map_that_no_longer_fits_the_data_is_refused(tmp_path):
    class Finite(GaussianSource):
        def __init__(self, data):
            super().__init__(tuple(data.shape[1:]))
            self.data = data

    g = torch.Generator().manual_seed(0)
    data = torch.randn(30, 2, generator=g)
    src = GaussianSource((2,))
    first = SemiDiscreteOT(n_targets=None, tol=0.2)
    prepare_coupling(first, src, Finite(data), tmp_path, torch.Generator().manual_seed(1))
    # same data and settings: loaded and accepted
    prepare_coupling(SemiDiscreteOT(n_targets=None, tol=0.2), src, Finite(data), tmp_path)
    # a subset drawn from the same data is accepted too (its rows are points of the data)
    sub = SemiDiscreteOT(n_targets=10, tol=0.2)
    prepare_coupling(sub, src, Finite(data), tmp_path / "sub", torch.Generator().manual_seed(1))
    prepare_coupling(SemiDiscreteOT(n_targets=10, tol=0.2), src, Finite(data), tmp_path / "sub")
    with pytest.raises(ValueError, match="other fit settings.*fit-ot RUN --refit"):  # another tolerance
        prepare_coupling(SemiDiscreteOT(n_targets=10, tol=0.1), src, Finite(data), tmp_path / "sub")
    with pytest.raises(ValueError, match="30 targets of shape \\(2,\\), but the data gives 40 of shape \\(2,\\)"):
        prepare_coupling(SemiDiscreteOT(n_targets=None), src, Finite(torch.randn(40, 2)), tmp_path)
    with pytest.raises(ValueError, match="not points of the data set.*fit-ot RUN --refit"):
        prepare_coupling(SemiDiscreteOT(n_targets=None), src, Finite(data + 1), tmp_path)
    with pytest.raises(ValueError, match="targets of shape \\(2,\\), but the data gives 30 of shape \\(3,\\)"):
        prepare_coupling(SemiDiscreteOT(n_targets=None), GaussianSource((3,)), Finite(torch.randn(30, 3)), tmp_path)


class _Finite(GaussianSource):
    def __init__(self, data):
        super().__init__(tuple(data.shape[1:]))
        self.data = data


def test_whole_data_set_is_the_default_target():
    data = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) * 2
    c = SemiDiscreteOT(tol=0.1)
    c.prepare(GaussianSource((2,)), _Finite(data), torch.Generator().manual_seed(1))
    assert torch.equal(c.map.targets, data) and c.fit_info["n_targets"] == 50
    assert c.fit_info["converged"] and c.fit_info["rms_error"] <= 0.1


def test_entropic_pairing_draws_from_the_cell_probabilities():
    """With epsilon > 0 each noise is paired with y_i with probability softmax_i(s_i(x)/eps):
    the frequencies over many draws match the probabilities computed directly."""
    data = torch.tensor([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.5]])
    c = SemiDiscreteOT(epsilon=0.5, tol=0.1)
    c.prepare(GaussianSource((2,)), _Finite(data), torch.Generator().manual_seed(0))
    assert not c.traits.threaded_solve and c.map.epsilon == 0.5
    x = torch.tensor([[0.3, -0.2]]).expand(4000, 2)
    out = c(x, torch.zeros(4000, 2), generator=torch.Generator().manual_seed(1))
    idx = (out.x1[:, None] == data[None]).all(-1).float().argmax(1)
    freq = torch.bincount(idx, minlength=3).float() / 4000
    p = torch.softmax((x[0] @ data.T + c.map.heights) / 0.5, 0)
    assert (freq - p).abs().max() < 0.03
    # the same generator state gives the same pairs
    again = c(x, torch.zeros(4000, 2), generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.x1, again.x1)
    with pytest.raises(ValueError, match="epsilon must be in"):
        SemiDiscreteOT(epsilon=-1.0)


def test_fit_state_is_checkpointed_and_removed_once_the_map_is_saved(tmp_path, monkeypatch):
    """An interrupted fit leaves its state in the run; the next prepare resumes from it (the
    resumed map equals an uninterrupted fit's) and removes it after writing the map."""
    import monge.ot.semidiscrete as sd

    data = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    params = dict(tol=0.02, max_iter=60)
    whole = fit_or_load_map(GaussianSource((2,)), _Finite(data), tmp_path / "whole", params,
                            generator=torch.Generator().manual_seed(1))
    real = sd.SemiDiscreteSolver.__call__

    def interrupted(self, *args, **kw):
        real(dataclasses.replace(self, max_iter=25), *args, **kw)  # writes its checkpoint, then the "process dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(sd.SemiDiscreteSolver, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_or_load_map(GaussianSource((2,)), _Finite(data), tmp_path / "cut", params,
                        generator=torch.Generator().manual_seed(1))
    assert (tmp_path / "cut" / FIT_STATE_FILE).is_file()
    assert not (tmp_path / "cut" / "semidiscrete.safetensors").exists()
    monkeypatch.setattr(sd.SemiDiscreteSolver, "__call__", real)
    resumed = fit_or_load_map(GaussianSource((2,)), _Finite(data), tmp_path / "cut", params,
                              generator=torch.Generator().manual_seed(1))
    assert torch.equal(resumed.heights, whole.heights)
    assert not (tmp_path / "cut" / FIT_STATE_FILE).exists()
    assert not (tmp_path / "whole" / FIT_STATE_FILE).exists()


def test_unconverged_fit_warns_with_the_measured_error():
    data = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    c = SemiDiscreteOT(tol=1e-4, max_iter=3)
    with pytest.warns(RuntimeWarning, match=r"stopped \(max_iter\) after 3 steps at an RMS relative cell-mass error"):
        c.prepare(GaussianSource((2,)), _Finite(data), torch.Generator().manual_seed(1))
    assert not c.fit_info["converged"] and c.fit_info["reason"] == "max_iter"


def test_pairing_workers_take_hard_cells_only():
    from monge.config import Config, ConfigError

    raw = {"data": {"source": "gaussian", "target": "moons"}, "model": {"name": "mlp", "hidden": 8, "depth": 1},
           "train": {"pairing_workers": 1}}
    Config.from_dict({**raw, "coupling": {"name": "semidiscrete_ot"}})
    with pytest.raises(ConfigError, match="with epsilon > 0 its pairing draws cells"):
        Config.from_dict({**raw, "coupling": {"name": "semidiscrete_ot", "epsilon": 0.1}})


def test_an_interrupted_refit_keeps_the_old_map_and_resumes(tmp_path, monkeypatch):
    import monge.ot.semidiscrete as sd

    data = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    params = dict(tol=0.02, max_iter=40)
    fit_or_load_map(GaussianSource((2,)), _Finite(data), tmp_path, params, generator=torch.Generator().manual_seed(1))
    before = (tmp_path / "semidiscrete.safetensors").read_bytes()
    real = sd.SemiDiscreteSolver.__call__

    def interrupted(self, *args, **kw):
        real(dataclasses.replace(self, max_iter=10), *args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(sd.SemiDiscreteSolver, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_or_load_map(GaussianSource((2,)), _Finite(data), tmp_path, params,
                        generator=torch.Generator().manual_seed(1), refit=True)
    assert (tmp_path / "semidiscrete.safetensors").read_bytes() == before  # the old map is still there
    assert (tmp_path / FIT_STATE_FILE).is_file()
    monkeypatch.setattr(sd.SemiDiscreteSolver, "__call__", real)
    fit_or_load_map(GaussianSource((2,)), _Finite(data), tmp_path, params, generator=torch.Generator().manual_seed(1),
                    refit=True)
    assert not (tmp_path / FIT_STATE_FILE).exists()
