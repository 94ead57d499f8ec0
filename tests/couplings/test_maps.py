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
