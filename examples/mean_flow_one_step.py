"""MeanFlow: a generator in one network evaluation.

The ``mean_flow`` objective trains a flow map :math:`u(x, t, r)`, the average velocity from
:math:`t` to :math:`r`, so one jump :math:`x_1 = x_0 + u(x_0, 0, 1)` samples. The trainer runs
it like any recipe (here as a Python dict); the figure shows the 1- and 2-jump samples.
``MONGE_QUICK=1`` trains 60 steps instead of 3000.
"""

import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from monge.config import Config
from monge.metrics import wasserstein2
from monge.quick import quick_steps
from monge.samplers import sample
from monge.train import Trainer

cfg = Config.from_dict({
    "name": "moons-mean_flow", "output_dir": tempfile.mkdtemp(),
    "data": {"source": "8gaussians", "target": "moons"},
    "coupling": "exact_ot", "objective": "mean_flow",
    "model": {"name": "mlp", "hidden": 256, "depth": 3, "second_time": True, "time_scale": 10.0},
    "train": {"steps": quick_steps(3000), "progress": False, "eval_samples": 500},
    "sample": {"sampler": "mean_flow", "nfe": [1, 2], "adaptive": False}})
trainer = Trainer(cfg)
result = trainer.fit()
for row in result.eval_rows:
    print(f"{row.sampler} {row.nfe} NFE: W2 {row.w2:.3f}")

x0, ref = trainer.source.sample(2000), trainer.target.sample(2000)
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2), sharex=True, sharey=True)
for ax, nfe in zip(axes[:2], (1, 2), strict=True):
    x1 = sample(trainer.ema.model, x0, sampler="mean_flow", nfe=nfe).x
    ax.scatter(x1[:, 0], x1[:, 1], s=1, alpha=0.5)
    ax.set_title(f"mean_flow, {nfe} NFE (W2 {wasserstein2(x1[:1000], ref[:1000]):.2f})", fontsize=9)
axes[2].scatter(ref[:, 0], ref[:, 1], s=1, alpha=0.5, color="k")
axes[2].set_title("target", fontsize=9)
fig.tight_layout()
fig.savefig("mean_flow.png", dpi=110)
