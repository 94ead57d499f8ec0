r"""Two processes under torchrun: data-parallel training on CPU (gloo) matches one process.

``torchrun --standalone --nproc_per_node 2 -m monge train RECIPE`` starts two ranks; each draws
its half of the same global batch, DDP averages the gradients, so two ranks with batch :math:`B`
take the steps of one process with batch :math:`2B` (the same weights up to float rounding).
The script trains a tiny recipe both ways and plots the two loss curves of ``log.csv``; the
printed number is their largest difference.
"""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

from monge.quick import quick_mode


def recipe(name: str, batch: int) -> Path:
    """A tiny recipe: an MLP on 8gaussians with the linear path, ``batch`` points per process."""
    raw = {"name": name, "output_dir": "runs",
           "data": {"source": "gaussian", "target": "8gaussians"}, "coupling": "independent",
           "path": {"name": "linear"}, "model": {"name": "mlp", "hidden": 64, "depth": 2},
           "train": {"steps": 1000, "batch_size": batch, "lr": 3e-3, "checkpoint_every": 1000,
                     "log_every": 1 if quick_mode() else 20, "eval_samples": 200, "progress": False},
           "sample": {"sampler": "euler", "nfe": [4], "adaptive": False}}
    path = Path(f"{name}.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


def train(path: Path, nproc: int | None = None) -> list[tuple[int, float]]:
    """Train ``path`` (under torchrun with ``nproc`` processes) and return its ``(step, loss)`` log."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [*(launcher if nproc else [sys.executable]), "-m", "monge", "train", str(path), "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    rows = Path("runs", path.stem, "log.csv").read_text().splitlines()[1:]
    return [(int(r.split(",")[0]), float(r.split(",")[1])) for r in rows]


two = train(recipe("two_ranks", 64), nproc=2)
one = train(recipe("one_process", 128))
gap = max(abs(a[1] - b[1]) for a, b in zip(two, one, strict=True))
print(f"{len(two)} logged steps; loss of 2 ranks x 64 against 1 process x 128: largest difference {gap:.1e}")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(*zip(*one, strict=True), lw=3, color="0.75", label="1 process, batch 128")
ax.plot(*zip(*two, strict=True), lw=1, color="C0", label="torchrun, 2 processes x batch 64")
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig("loss_curves.png", dpi=110)
