"""The files of a run's fitted couplings (monge.couplings.maps) and the semi-discrete couplings'
settings."""

import dataclasses
import inspect

import pytest
import torch

from monge.couplings import COUPLINGS, ConditionalSemiDiscreteOT, SemiDiscreteOT, Traits
from monge.couplings.maps import FIT_STATE_FILE, FitStates, load_map, load_run_map, save_map
from monge.ot.semidiscrete import SemiDiscreteMap, SemiDiscreteSolver, fit_semidiscrete


def test_map_files_round_trip_and_name_the_file_in_errors(tmp_path):
    g = torch.Generator().manual_seed(0)
    m = SemiDiscreteMap(torch.randn(6, 2, 2, generator=g), torch.randn(6, generator=g), epsilon=0.5)
    assert load_run_map(tmp_path) is None
    save_map(tmp_path / "semidiscrete.safetensors", m)
    back = load_run_map(tmp_path)
    assert torch.equal(back.targets, m.targets) and torch.equal(back.heights, m.heights) and back.epsilon == 0.5
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="bad.safetensors is not a readable safetensors file"):
        load_map(tmp_path / "bad.safetensors")


def test_fit_states_resume_a_fit_bit_for_bit_and_clear(tmp_path):
    y = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))
    states = FitStates(tmp_path / "run")
    assert states.load() is None and states.load("class2") is None
    opts = dict(tol=1e-6, eval_every=10, eval_samples=4000)
    full = fit_semidiscrete(y, max_iter=40, generator=torch.Generator().manual_seed(2), **opts)
    fit_semidiscrete(y, max_iter=15, checkpoint=states.saver(), generator=torch.Generator().manual_seed(2), **opts)
    fit_semidiscrete(y, max_iter=5, checkpoint=states.saver("class2"), generator=torch.Generator().manual_seed(2))
    assert states.path() == tmp_path / "run" / FIT_STATE_FILE and states.path().is_file()
    assert states.path("class2").name == "semidiscrete_fit_class2.safetensors" and states.path("class2").is_file()
    rest = fit_semidiscrete(y, max_iter=40, init=states.load(), **opts)
    assert torch.equal(rest.heights, full.heights)
    states.clear()
    assert not list((tmp_path / "run").iterdir())


def test_semidiscrete_couplings_hold_one_settings_object():
    c = SemiDiscreteOT(n_targets=8, eps_decay=0.8, epsilon=0.1)
    assert c.solver == SemiDiscreteSolver(eps_decay=0.8, epsilon=0.1, max_iter=10_000)
    assert not c.traits.threaded_solve and SemiDiscreteOT.traits.threaded_solve  # the instance's own traits
    params = inspect.signature(SemiDiscreteOT).parameters
    assert [f.name for f in dataclasses.fields(SemiDiscreteSolver)] == list(params)[2:]
    assert params["max_iter"].default == 10_000
    with pytest.raises(ValueError, match="eps_decay must be in"):
        COUPLINGS.build("semidiscrete_ot", eps_decay=1.5)
    with pytest.raises(ValueError, match="accepted: n_targets, progress, epsilon"):
        COUPLINGS.build("semidiscrete_ot", heights=None)
    # the per-class coupling shares the settings and the helpers, not the single map's pairing
    d = ConditionalSemiDiscreteOT(tol=0.1)
    assert d.solver.tol == 0.1 and not hasattr(d, "solve")
    assert d.traits == Traits(uses_labels=True, unthreaded_reason="its pairing needs the batch's labels",
                              prepared_file="semidiscrete_classes.safetensors")


# -- what a cached map was fitted from ---------------------------------------------------------------

def _sd_config(tmp_path, target="moons", **coupling):
    from monge.config import Config

    return Config.from_dict({
        "name": "sd", "output_dir": str(tmp_path / "runs"), "data": {"source": "gaussian", "target": target},
        "coupling": {"name": "semidiscrete_ot", "n_targets": 32, "max_iter": 50, "progress": False, **coupling},
        "model": {"name": "mlp", "hidden": 8, "depth": 1}, "train": {"steps": 2, "batch_size": 8, "eval_samples": 20}})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_cached_map_of_another_sampler_target_or_settings_is_refused(tmp_path):
    from monge.couplings.maps import fit_run_map

    first = fit_run_map(_sd_config(tmp_path), check_samples=2000)
    before = first.path.read_bytes()
    assert not first.loaded and fit_run_map(_sd_config(tmp_path), check_samples=2000).loaded
    for changed in (_sd_config(tmp_path, target="circles"), _sd_config(tmp_path, max_iter=60),
                    _sd_config(tmp_path, epsilon=0.1)):
        with pytest.raises(ValueError, match="fitted from other data.*`monge fit-ot RUN --refit`"):
            fit_run_map(changed, check_samples=2000)
    assert first.path.read_bytes() == before  # refused, not replaced
    again = fit_run_map(_sd_config(tmp_path, target="circles"), refit=True, check_samples=2000)
    assert not again.loaded and load_map(first.path).fingerprint == again.map.fingerprint != ""


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_csv_edited_in_place_is_caught_by_the_cached_map(tmp_path):
    import numpy as np

    from monge.couplings.maps import fit_run_map

    data = np.random.default_rng(0).normal(size=(40, 2))
    csv = tmp_path / "d.csv"
    np.savetxt(csv, data, delimiter=",")
    cfg = _sd_config(tmp_path, target={"name": "csv", "path": str(csv)}, n_targets=None)
    fit_run_map(cfg, check_samples=2000)
    data[39] += 1.0  # one row edited, same count and shape; not among the first rows
    np.savetxt(csv, data, delimiter=",")
    with pytest.raises(ValueError, match="fitted from other data|not points of the data set"):
        fit_run_map(cfg, check_samples=2000)


def test_check_samples_are_bounded_before_any_fit(tmp_path):
    from monge.couplings.maps import fit_run_map, max_check_samples

    cfg = _sd_config(tmp_path)
    for bad in (10**12, 1, 0, -5):
        with pytest.raises(ValueError, match=r"--check-samples must be an integer in \[2, "):
            fit_run_map(cfg, check_samples=bad)
    assert not (cfg.run_dir / "semidiscrete.safetensors").exists()  # nothing fitted
    assert max_check_samples(32) == 4 * 2**20 and max_check_samples(10**6) == 80 * 10**6


def test_fit_ot_refuses_the_run_of_another_recipe(tmp_path):
    from monge.couplings.maps import fit_run_map

    cfg = _sd_config(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text(_sd_config(tmp_path, target="circles").to_yaml())
    with pytest.raises(ValueError, match="holds a run of another recipe \\(data differ\\)"):
        fit_run_map(cfg, check_samples=2000)
    assert sorted(p.name for p in cfg.run_dir.iterdir()) == ["config.yaml"]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
def test_repeated_targets_are_not_counted_as_empty_cells(tmp_path):
    import numpy as np

    from monge.couplings.maps import fit_run_map, merged_duplicates

    data = np.random.default_rng(1).normal(size=(30, 2))
    csv = tmp_path / "dup.csv"
    np.savetxt(csv, np.concatenate([data, data[:6]]), delimiter=",")
    cfg = _sd_config(tmp_path, target={"name": "csv", "path": str(csv)}, n_targets=None, max_iter=300)
    report = fit_run_map(cfg, check_samples=20_000)
    assert report.duplicates == 6 and report.check.empty == 0
    assert "6 repeated targets counted in their first copy's cell" in report.note
    merged, n_dup = merged_duplicates(report.map)
    assert n_dup == 6 and merged.n_targets == 30 and torch.allclose(merged.weights.sum(), torch.tensor(1.0).double()
                                                                     .to(merged.weights.dtype))
    y = torch.randn(10, 2, generator=torch.Generator().manual_seed(3))
    soft = SemiDiscreteMap(torch.cat([y, y[:2]]), torch.randn(12, generator=torch.Generator().manual_seed(4)),
                           epsilon=0.3)
    merged, _ = merged_duplicates(soft)  # entropic cells: the merged cell keeps the group's mass
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(5))
    p_full = torch.softmax((x @ soft.flat.T + soft.heights) / 0.3, dim=1)
    p_merged = torch.softmax((x @ merged.flat.T + merged.heights) / 0.3, dim=1)
    assert torch.allclose(p_merged[:, :2], p_full[:, :2] + p_full[:, 10:], atol=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cached_per_class_maps_of_another_target_are_refused(tmp_path):
    from monge.couplings import prepare_coupling
    from monge.data.conditional import ConditionalToy
    from monge.data.sources import GaussianSource

    src = GaussianSource((2,))
    fitted = ConditionalSemiDiscreteOT(n_targets=24, max_iter=50)
    prepare_coupling(fitted, src, ConditionalToy("moons", "class"), tmp_path, torch.Generator().manual_seed(0))
    again = ConditionalSemiDiscreteOT(n_targets=24, max_iter=50)
    prepare_coupling(again, src, ConditionalToy("moons", "class"), tmp_path)  # the same target: loaded
    assert torch.equal(again.maps[0].heights, fitted.maps[0].heights) and again.maps[0].fingerprint
    with pytest.raises(ValueError, match="fitted from other data or labels"):
        prepare_coupling(ConditionalSemiDiscreteOT(n_targets=24, max_iter=50), src,
                         ConditionalToy("8gaussians", "class"), tmp_path)
