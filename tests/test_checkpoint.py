import json

import pytest
import torch

from monge.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    flatten_optimizer_state,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
    unflatten_optimizer_state,
)


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


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


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
