r"""The semi-discrete OT map's cells: which noise goes to which data point.

``fit_semidiscrete`` fits dual heights :math:`h` so that the map
:math:`T(x) = y_{\arg\max_i \langle x, y_i\rangle + h_i}` sends equal Gaussian mass to each of
the N data points (DPM-OT's global coupling). The figure colours a grid of noise points by the
cell they fall in, with an arrow from each cell's centre to its data point; the printed error is
the cell masses' deviation from uniform, measured on fresh noise.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from monge.data import sample_toy
from monge.ot.semidiscrete import fit_semidiscrete
from monge.quick import quick_cap

g = torch.Generator().manual_seed(0)
targets = sample_toy("moons", 24, g)
result = fit_semidiscrete(targets, generator=g, max_iter=quick_cap(3000, 200), tol=0.02)
print(f"{result.n_iter} iterations, cell-mass error: max {result.max_error:.3f}, mean {result.mean_error:.3f}")

lim = 3.0
xs = torch.linspace(-lim, lim, 300)
grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
cells, _ = result.map(grid)
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.imshow(cells.reshape(300, 300).numpy() % 20, extent=(-lim, lim, -lim, lim), origin="lower", cmap="tab20",
          alpha=0.6, interpolation="nearest")
for i, y in enumerate(targets):  # each cell's centre of noise mass -> its data point
    inside = grid[cells == i]
    if len(inside):
        c = inside.mean(0)
        ax.annotate("", xy=(float(y[0]), float(y[1])), xytext=(float(c[0]), float(c[1])),
                    arrowprops={"arrowstyle": "->", "color": "0.2", "lw": 0.8})
ax.scatter(targets[:, 0], targets[:, 1], c="k", s=12, label="data points", zorder=3)
ax.set_title("cells of the semi-discrete OT map (noise plane)", fontsize=9)
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()
fig.savefig("cells.png", dpi=110)
