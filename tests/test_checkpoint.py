import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from monge.run.checkpoint import (
    CheckpointError,
    flatten_optimizer_state,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
    unflatten_optimizer_state,
)
from monge.run.load import load_model
from monge.train import Trainer


def test_round_trip(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, tensors, {"name": "x"}, {"step": 7})
    got, config, state = load_checkpoint(path)
    assert torch.equal(got["a"], tensors["a"]) and torch.equal(got["b"], tensors["b"])
    assert config == {"name": "x"} and state == {"step": 7}


def test_directory_form(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.safetensors", {"a": torch.ones(1)}, {}, {"step": 1})
    assert load_checkpoint(tmp_path)[2] == {"step": 1}


@pytest.mark.parametrize(
    "content,msg",
    [(None, "not found"), (b"", "truncated|not a readable"), (b"garbage" * 20, "not a readable|unreadable")],
)
def test_unreadable_checkpoints(tmp_path, content, msg):
    path = tmp_path / "c.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=msg):
        load_checkpoint(path)


def test_plain_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a monge checkpoint"):
        load_checkpoint(path)


def test_optimizer_state_round_trip():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt)
    meta = json.loads(json.dumps(meta))
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    opt2.load_state_dict(unflatten_optimizer_state(tensors, meta))
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 0.01
    for k in s1["state"]:
        for key, v in s1["state"][k].items():
            assert torch.equal(v, s2["state"][k][key])


def test_module_mismatch_names_the_problem():
    src = torch.nn.Linear(3, 2)
    tensors = {f"model.{k}": v for k, v in src.state_dict().items()}
    with pytest.raises(CheckpointError, match="shape mismatch weight"):
        load_module_state(torch.nn.Linear(4, 2), tensors, "model.", "ckpt")
    with pytest.raises(CheckpointError, match="missing"):
        load_module_state(torch.nn.Linear(3, 2), {"model.weight": tensors["model.weight"]}, "model.", "ckpt")


# -- schema checks on load: one clear error each -------------------------------------------------



def _tamper(path, tensors=None, config=None, state=None, metadata=None):
    """Rewrite checkpoint ``path`` with edited parts (functions of the old ones)."""
    t, c, s = load_checkpoint(path)
    t = tensors(t) if tensors else t
    c = config(c) if config else c
    s = state(s) if state else s
    meta = {"format": "monge-checkpoint", "version": "1", "config": json.dumps(c), "state": json.dumps(s)}
    meta.update(metadata or {})
    save_file({k: v.contiguous() for k, v in t.items()}, str(path), metadata=meta)


@pytest.fixture
def trained(tiny_config):
    cfg = tiny_config(train__steps=10, train__checkpoint_every=0)
    Trainer(cfg).fit()
    return cfg


def _without(prefix):
    return lambda t: {k: v for k, v in t.items() if not k.startswith(prefix)}


@pytest.mark.parametrize("edit,message", [
    (dict(metadata={"version": "99"}), "format version '99'; this monge reads version 1"),
    (dict(state=lambda s: {**s, "step": 1e30}), "state.step must be a non-negative integer, got 1e\\+30"),
    (dict(state=lambda s: {**s, "step": -3}), "state.step must be a non-negative integer"),
    (dict(state=lambda s: {**s, "step": "10"}), "state.step must be a non-negative integer"),
    (dict(state=lambda s: [s]), "state must be a mapping"),
    (dict(config=lambda c: "x"), "config must be a mapping"),
])
def test_malformed_checkpoints_are_refused_on_every_load(trained, edit, message):
    path = trained.run_dir / "checkpoint.safetensors"
    _tamper(path, **edit)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
    with pytest.raises(CheckpointError, match=message):
        Trainer(trained).fit(resume=True)


@pytest.mark.parametrize("edit,message", [
    (dict(tensors=_without("optim.")), "no optimiser state for parameter 0; resuming would silently reset AdamW"),
    (dict(state=lambda s: {k: v for k, v in s.items() if k != "optimizer"}), "no valid optimiser state"),
    (dict(state=lambda s: {**s, "optimizer": "adam"}), "no valid optimiser state"),
    (dict(tensors=_without("rng.data")), "random generator state 'rng.data'"),
    (dict(tensors=lambda t: {**t, "rng.torch": torch.zeros(3)}), "random generator state 'rng.torch'"),
    (dict(tensors=lambda t: {**t, "rng.data": torch.zeros(7, dtype=torch.uint8)}), "invalid random generator"),
    (dict(state=lambda s: {**s, "ema_updates": "many"}), "ema_updates must be a non-negative integer"),
    (dict(state=lambda s: {**s, "loss": [1]}), "state.loss must be a number"),
    (dict(tensors=lambda t: {**t, "optim.0.exp_avg": torch.zeros(2, 2)}), "optimiser state exp_avg of parameter 0"),
    (dict(tensors=_without("ema.")), "EMA.*missing"),
])
def test_resume_refuses_incomplete_training_state(trained, edit, message):
    path = trained.run_dir / "checkpoint.safetensors"
    _tamper(path, **edit)
    with pytest.raises(CheckpointError, match=message):
        Trainer(trained).fit(resume=True)


def test_sampling_refuses_nonfinite_weights(trained, tmp_path):
    from typer.testing import CliRunner

    from monge.cli import app

    path = trained.run_dir / "checkpoint.safetensors"
    key = next(k for k in load_file(str(path)) if k.startswith("ema.") and k.endswith("weight"))
    _tamper(path, tensors=lambda t: {**t, key: torch.full_like(t[key], float("inf"))})
    res = CliRunner().invoke(app, ["sample", str(trained.run_dir), "-n", "5", "-o", str(tmp_path / "s.npy")])
    assert res.exit_code == 2 and "non-finite weights" in res.output
    assert not (tmp_path / "s.npy").exists()
    with pytest.raises(CheckpointError, match="non-finite"):
        Trainer(trained).fit(resume=True)


def test_the_checkpoint_stores_the_prediction_and_sampler_kind(trained):
    _, _, state = load_checkpoint(trained.run_dir / "checkpoint.safetensors")
    assert (state["prediction"], state["sampler_kind"]) == ("velocity", "ode")
    model, _ = load_model(trained.run_dir)
    assert (model.prediction, model.sampler_kind) == ("velocity", "ode")


def test_an_older_checkpoint_takes_the_prediction_of_its_objective(trained):
    path = trained.run_dir / "checkpoint.safetensors"
    _tamper(path, state=lambda s: {k: v for k, v in s.items() if k not in ("prediction", "sampler_kind")})
    model, _ = load_model(path)
    assert (model.prediction, model.sampler_kind) == ("velocity", "ode")
    _tamper(path, state=lambda s: {**s, "prediction": 3})
    with pytest.raises(CheckpointError, match="state.prediction must be a non-empty string, got 3"):
        load_model(path)
