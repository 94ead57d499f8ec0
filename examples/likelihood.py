r"""Likelihood of a flow: the change of variables, checked against a closed form.

``log_likelihood`` integrates :math:`\log p_1(x) = \log p_0(z) - \int_0^1 \nabla\cdot v(x_t, t)\,dt`
backwards from the data. On the exact velocity of a Gaussian mixture the flow's density is the
mixture's, so the result must match ``GaussianMixture.log_prob``; then a small flow trained on
the same mixture is scored on the same points.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from monge.data import GaussianMixture
from monge.flow_likelihood import log_likelihood
from monge.models import MLP
from monge.objectives import regression_loss
from monge.paths import PATHS
from monge.quick import quick_steps

g = torch.Generator().manual_seed(0)
gmm = GaussianMixture.eight_gaussians()
x = gmm.sample(200, generator=g)
exact = gmm.log_prob(x)
oracle = log_likelihood(gmm.field(), x)
print(f"oracle field: mean log p {oracle.log_prob.mean():.3f} (closed form {exact.mean():.3f}), "
      f"max |error| {(oracle.log_prob - exact).abs().max():.1e}, {oracle.nfe} NFE")

steps, path = quick_steps(1500), PATHS.build("linear")
model = MLP(2, hidden=128, depth=3)
opt = torch.optim.AdamW(model.parameters(), 2e-3)
for _ in range(steps):
    x1 = gmm.sample(256, generator=g)
    ps = path.sample(torch.randn(256, 2, generator=g), x1, torch.rand(256, generator=g))
    loss = regression_loss(model(ps.x_t, ps.t), ps.target)
    opt.zero_grad()
    loss.backward()
    opt.step()
trained = log_likelihood(model, x)
print(f"trained flow ({steps} steps): mean log p {trained.log_prob.mean():.3f}, {trained.nfe} NFE")

fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(exact, oracle.log_prob, s=6, label="exact velocity")
ax.scatter(exact, trained.log_prob.detach(), s=6, label=f"trained MLP ({steps} steps)")
lo, hi = float(exact.min()), float(exact.max())
ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls=":")
ax.set_xlabel("log p(x), closed form")
ax.set_ylabel("log p(x), change of variables")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig("likelihood.png", dpi=110)
