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
    trainer.fit(overwrite="replace")  # writes a first complete checkpoint (each round starts again)
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


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    """Ctrl-C in the middle of `monge train`: exit code 130, a checkpoint at the step reached,
    and `--resume` carries on from it."""
    cfg = _config(tmp_path)
    cfg.model.params = {"hidden": 32, "depth": 2}
    cfg.train.steps = 10**6
    cfg.train.log_every = 1
    recipe = tmp_path / "sigint.yaml"
    recipe.write_text(cfg.to_yaml())
    log = cfg.run_dir / "log.csv"
    proc = subprocess.Popen([sys.executable, "-m", "monge", "train", str(recipe), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (log.is_file() and len(log.read_text().splitlines()) > 20):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    _, _, state = load_checkpoint(cfg.run_dir / "checkpoint.safetensors")
    logged = len(log.read_text().splitlines()) - 1
    assert state["step"] >= 20 and state["step"] >= logged  # nothing logged is lost

    cfg.train.steps = state["step"] + 2
    result = Trainer(cfg).fit(resume=True)
    assert result.step == state["step"] + 2
