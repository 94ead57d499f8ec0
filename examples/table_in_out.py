r"""A table in, a table out: 178 wines through a flow, back in their own units.

The wine table bundled with scikit-learn (13 measurements per wine) goes in as a CSV; the run
standardises each column, :math:`z = (x - \mu)/\sigma`, trains OT-CFM on :math:`z`, and
``generate`` maps the samples back, :math:`x = \sigma z + \mu`, into a CSV with the same columns.
``MONGE_QUICK=1`` trains 60 steps instead of 3000.
"""

import csv
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from monge.config import Config
from monge.data.tabular import save_sklearn_table
from monge.generate import generate
from monge.quick import quick_steps
from monge.train import Trainer

table = save_sklearn_table("wine", "wine.csv")
with open(table) as fh:
    columns = next(csv.reader(fh))[:-1]  # the features (the last column is the cultivar)
data = np.loadtxt(table, delimiter=",", skiprows=1)[:, :-1]

cfg = Config.from_dict({
    "name": "wine", "output_dir": tempfile.mkdtemp(),
    "data": {"source": "gaussian", "target": {"name": "csv", "path": str(table), "label_column": "target",
                                              "standardize": True, "holdout": 0.1}},
    "coupling": "exact_ot", "model": {"name": "mlp", "hidden": 256, "depth": 3},
    "train": {"steps": quick_steps(3000), "batch_size": 128, "progress": False, "eval_samples": 500},
    "sample": {"sampler": "euler", "nfe": [4], "adaptive": False}})
trainer = Trainer(cfg)
trainer.fit()
samples = generate(trainer.ema.model, cfg, 1000, sampler="euler", nfe=8).x.numpy()
np.savetxt("wines.csv", samples, delimiter=",", header=",".join(columns), comments="", fmt="%.4g")
print(f"wrote wines.csv: {samples.shape[0]} rows x {samples.shape[1]} columns")
print(f"{'column':30s} {'table mean +- std':>20s} {'samples mean +- std':>22s}")
for j in (0, 9, 12):
    print(f"{columns[j]:30s} {data[:, j].mean():10.2f} +- {data[:, j].std():6.2f} "
          f"{samples[:, j].mean():12.2f} +- {samples[:, j].std():6.2f}")

fig, ax = plt.subplots(figsize=(4.5, 4))
ax.scatter(samples[:, 0], samples[:, 12], s=3, alpha=0.4, label="samples (wines.csv)")
ax.scatter(data[:, 0], data[:, 12], s=8, color="k", label="table")
ax.set_xlabel(columns[0])
ax.set_ylabel(columns[12])
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig("wine.png", dpi=110)
