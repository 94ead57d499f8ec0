"""A process killed (SIGKILL) in the middle of a checkpoint write leaves the last good one."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from monge.checkpoint import load_checkpoint
from monge.config import Config
from monge.train import Trainer

SAVER = textwrap.dedent(
    """
    import sys
    from monge.config import Config
    from monge.train import Trainer
    import yaml
    cfg = Config.from_dict(yaml.safe_load(open(sys.argv[1])))
    trainer = Trainer(cfg)
    trainer.fit()  # writes a first complete checkpoint
    print("ready", flush=True)
    while True:  # keep overwriting it with large checkpoints until killed
        trainer.train_step()
        trainer.save()
    """
)


def _config(tmp_path) -> Config:
    return Config.from_dict({
        "name": "crash",
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": "gaussian", "target": "8gaussians"},
        "model": {"name": "mlp", "hidden": 1024, "depth": 4},  # ~3M params: saves take a while
        "train": {"steps": 2, "batch_size": 16, "checkpoint_every": 0, "eval_samples": 20,
                  "progress": False},
        "sample": {"nfe": [1], "adaptive": False},
    })


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_save_keeps_a_loadable_checkpoint_and_resume_works(tmp_path):
    cfg = _config(tmp_path)
    recipe = tmp_path / "crash.yaml"
    recipe.write_text(cfg.to_yaml())
    run_dir = cfg.run_dir
    killed_mid_write = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(recipe)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # wait until a temporary file is being written
                if list(run_dir.glob(".checkpoint.safetensors.*.tmp")):
                    break
                time.sleep(0.001)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed_mid_write += bool(list(run_dir.glob(".checkpoint.safetensors.*.tmp")))
        tensors, config, state = load_checkpoint(run_dir / "checkpoint.safetensors")
        assert state["step"] >= 2 and config["name"] == "crash"
    assert killed_mid_write >= 1, "the kill never landed inside a write; the test proved nothing"

    cfg.train.steps = state["step"] + 3
    trainer = Trainer(cfg)
    result = trainer.fit(resume=True)
    assert result.step == state["step"] + 3
    assert not list(run_dir.glob(".checkpoint.safetensors.*.tmp")), "stale temporary files are cleaned"
    assert torch.isfinite(torch.tensor(result.loss))
