import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monge.couplings import COUPLINGS, ConditionalSemiDiscreteOT, SemiDiscreteOT, prepare_coupling
from monge.couplings.maps import CLASS_MAPS_FILE, MAP_FILE, load_prepared, save_prepared
from monge.data.conditional import ConditionalToy
from monge.data.sources import GaussianSource, ToySource

_CACHE: dict = {}


def _fitted() -> ConditionalSemiDiscreteOT:
    """Per-class maps onto 48 draws of 8gaussians (8 classes, about 6 targets each), fitted once."""
    if "c" not in _CACHE:
        c = ConditionalSemiDiscreteOT(n_targets=48, tol=0.05)
        c.prepare(GaussianSource((2,)), ToySource("8gaussians"), torch.Generator().manual_seed(0))
        _CACHE["c"] = c
    return _CACHE["c"]


def _class_of_targets(c: ConditionalSemiDiscreteOT) -> dict[tuple, int]:
    return {tuple(t.tolist()): k for k, m in c.maps.items() for t in m.targets}


def test_each_class_map_is_a_fitted_semidiscrete_map_with_uniform_cells():
    c = _fitted()
    assert COUPLINGS.build("conditional_semidiscrete_ot").traits.uses_labels
    assert sorted(c.maps) == list(range(8)) and sum(m.n_targets for m in c.maps.values()) == 48
    for k, m in c.maps.items():
        assert c.fit_info["classes"][k]["converged"]
        # the targets of class k are points of mode k (8gaussians: std 0.35 around radius 2.83)
        centre = (
            2
            * 2**0.5
            * torch.tensor([torch.cos(torch.tensor(k * torch.pi / 4)), torch.sin(torch.tensor(k * torch.pi / 4))])
        )
        assert float((m.targets - centre).norm(dim=1).max()) < 2.0
        # cells of equal source mass, measured on fresh draws (noise ~ sqrt(n_k / 1e5))
        masses = m.cell_masses(100_000, torch.Generator().manual_seed(k))
        assert float((masses * m.n_targets - 1).abs().max()) < 0.15


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 64))
def test_pairs_never_cross_classes_and_follow_the_class_map(seed, b):
    c = _fitted()
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(b, 2, generator=g), torch.randn(b, 2, generator=g)
    y = torch.randint(8, (b,), generator=g)
    out = c(x0, x1, generator=g, labels=y)
    assert torch.equal(out.x0, x0) and out.index1 is None and out.plan_entropy == 0.0
    owner = _class_of_targets(c)
    for j in range(b):
        assert owner[tuple(out.x1[j].tolist())] == int(y[j])  # the target is a point of the data point's class
        m = c.maps[int(y[j])]  # brute force: the class's argmax_i <x, y_i> + h_i
        best = (x0[j].double() @ m.flat.double().T + m.heights.double()).argmax()
        assert torch.equal(out.x1[j], m.targets[best])


def test_maps_are_cached_in_their_own_file_and_reloaded(tmp_path):
    c = _fitted()
    save_prepared(c, tmp_path / CLASS_MAPS_FILE)
    d = ConditionalSemiDiscreteOT()
    load_prepared(d, tmp_path / CLASS_MAPS_FILE)
    for k in c.maps:
        assert torch.equal(d.maps[k].targets, c.maps[k].targets) and torch.equal(d.maps[k].heights, c.maps[k].heights)
    g = torch.Generator().manual_seed(3)
    x0, y = torch.randn(20, 2, generator=g), torch.randint(8, (20,), generator=g)
    assert torch.equal(d(x0, x0, labels=y).x1, c(x0, x0, labels=y).x1)
    # the single map's file is another format: each coupling refuses the other's
    single = SemiDiscreteOT(n_targets=8)
    single.prepare(GaussianSource((2,)), ToySource("8gaussians"), g)
    save_prepared(single, tmp_path / MAP_FILE)
    with pytest.raises(ValueError, match="not a per-class"):
        load_prepared(d, tmp_path / MAP_FILE)
    with pytest.raises(ValueError, match="not a semi-discrete map"):
        load_prepared(SemiDiscreteOT(), tmp_path / CLASS_MAPS_FILE)


def test_prepare_run_fits_once_and_resumes_from_the_cache(tmp_path):
    src, tgt = GaussianSource((2,)), ConditionalToy("moons", "class")
    c = ConditionalSemiDiscreteOT(n_targets=24, tol=0.05)
    path = prepare_coupling(c, src, tgt, tmp_path, torch.Generator().manual_seed(0))
    assert path == tmp_path / CLASS_MAPS_FILE and path.is_file() and sorted(c.maps) == [0, 1]
    assert not list(tmp_path.glob("semidiscrete_fit*"))  # fit states removed once the maps are saved
    d = ConditionalSemiDiscreteOT(n_targets=24)
    prepare_coupling(d, src, tgt, tmp_path, torch.Generator().manual_seed(5))  # loaded, not refitted
    assert torch.equal(d.maps[1].heights, c.maps[1].heights)
    with pytest.raises(ValueError, match="cover classes"):
        prepare_coupling(ConditionalSemiDiscreteOT(), src, ToySource("8gaussians"), tmp_path)


def test_bad_input_is_refused():
    c = _fitted()
    x0 = torch.randn(4, 2)
    with pytest.raises(ValueError, match="needs the data's labels"):
        c(x0, x0)
    with pytest.raises(ValueError, match="integer class labels"):
        c(x0, x0, labels=torch.rand(4))
    with pytest.raises(ValueError, match="class 9 of the batch has no fitted map"):
        c(x0, x0, labels=torch.tensor([0, 1, 9, 2]))
    with pytest.raises(ValueError, match="not fitted"):
        ConditionalSemiDiscreteOT()(x0, x0, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="accepted: n_targets, progress, epsilon"):
        COUPLINGS.build("conditional_semidiscrete_ot", foo=1)
    with pytest.raises(ValueError, match="has no class labels"):
        ConditionalSemiDiscreteOT(n_targets=8).prepare(GaussianSource((2,)), ToySource("moons"))


def test_a_class_with_one_target_maps_all_its_noise_there():
    class Few(ConditionalToy):
        def sample_with_labels(self, n, generator=None, device="cpu"):
            x, y = super().sample_with_labels(n, generator, device)
            y[:] = 0
            y[0] = 1  # class 1: a single target
            return x, y

    c = ConditionalSemiDiscreteOT(n_targets=12, tol=0.1)
    with pytest.warns(RuntimeWarning, match="class 1 has a single target point"):
        c.prepare(GaussianSource((2,)), Few("moons", "class"), torch.Generator().manual_seed(0))
    x0 = torch.randn(5, 2)
    out = c(x0, x0, labels=torch.ones(5, dtype=torch.long))
    assert torch.equal(out.x1, c.maps[1].targets.expand(5, 2))
