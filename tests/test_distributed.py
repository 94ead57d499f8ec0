"""Data-parallel training under torchrun (2 gloo processes) against one process."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from monge.run.checkpoint import load_checkpoint
from monge.run.distributed import DistInfo, all_gather_objects, all_reduce_mean, info, is_main, setup


def _recipe(tmp_path, name, batch, coupling="independent"):
    raw = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": "gaussian", "target": "8gaussians"},
        "coupling": coupling,
        "path": {"name": "linear"},
        "model": {"name": "mlp", "hidden": 32, "depth": 2},
        "train": {"steps": 30, "batch_size": batch, "lr": 3e-3, "checkpoint_every": 15,
                  "eval_samples": 100, "progress": False, "log_every": 5},
        "sample": {"sampler": "euler", "nfe": [2], "adaptive": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(args, nproc=None):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "monge", "train", *args, "--no-progress"]
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "monge", "train", *args, "--no-progress"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _log(run_dir):
    lines = (run_dir / "log.csv").read_text().splitlines()[1:]
    return torch.tensor([float(line.split(",")[1]) for line in lines])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    _run([str(_recipe(tmp, "ddp", 32))], nproc=2)
    _run([str(_recipe(tmp, "single", 64))])
    return tmp / "runs"


def test_two_processes_match_one_process_with_the_global_batch(runs):
    """Each rank trains on its half of the same global batch: DDP-averaged gradients equal the
    one-process gradient, so the weights and the loss curve agree to float tolerance."""
    ddp, _, ddp_state = load_checkpoint(runs / "ddp" / "checkpoint.safetensors")
    one, _, _ = load_checkpoint(runs / "single" / "checkpoint.safetensors")
    assert ddp_state["world_size"] == 2 and "rng.local.1" in ddp
    for key in (k for k in one if k.startswith("model.")):
        assert torch.allclose(ddp[key], one[key], atol=2e-5, rtol=1e-4), key
    assert torch.allclose(_log(runs / "ddp"), _log(runs / "single"), rtol=1e-4, atol=1e-5)
    assert (runs / "ddp" / "eval.md").is_file()


def test_ddp_resume_is_exact_with_per_rank_exact_ot(tmp_path):
    """15 steps + resume to 30 equals 30 straight steps: every rank's generator is checkpointed."""
    cfg = _recipe(tmp_path, "ot", 32, coupling="exact_ot")
    _run([str(cfg), "train.steps=15"], nproc=2)
    _run([str(cfg), "--resume"], nproc=2)
    _run([str(cfg), "name=ot_straight"], nproc=2)
    resumed, _, state = load_checkpoint(tmp_path / "runs" / "ot" / "checkpoint.safetensors")
    straight, _, _ = load_checkpoint(tmp_path / "runs" / "ot_straight" / "checkpoint.safetensors")
    assert state["step"] == 30
    for key in (k for k in straight if k.startswith(("model.", "ema."))):
        assert torch.equal(resumed[key], straight[key]), key
    assert torch.equal(_log(tmp_path / "runs" / "ot"), _log(tmp_path / "runs" / "ot_straight"))


def test_single_process_helpers_are_no_ops():
    assert setup() == DistInfo() == info() and not info().enabled and is_main()
    assert all_reduce_mean(torch.tensor(3.5)) == 3.5
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
