"""Few-step samplers on an exact velocity: the Gaussian-mixture oracle.

``GaussianMixture`` gives the exact marginal velocity of the linear path from N(0, I) to a mixture,
so the samplers can be compared without training anything: the only error left is the sampler's.
Each sampler spends the same budget of network evaluations (NFE); W2 is measured against exact
mixture samples, next to the two-sample noise floor (W2 between two exact draws).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from monge.data import GaussianMixture
from monge.metrics import wasserstein2
from monge.quick import quick_cap
from monge.samplers import sample

n = quick_cap(2000, 500)
g = torch.Generator().manual_seed(0)
gmm = GaussianMixture.eight_gaussians()
field = gmm.field()  # (x, t) -> exact velocity of the linear path
x0 = torch.randn(n, 2, generator=g)
ref, ref2 = gmm.sample(n, generator=g), gmm.sample(n, generator=g)
floor = wasserstein2(ref, ref2)
nfes = [2, 4, 6, 8, 12]
print(f"noise floor (two exact draws of {n}): W2 {floor:.3f}")
print("sampler        " + "".join(f"NFE {k:<5d}" for k in nfes))
fig, ax = plt.subplots(figsize=(5, 3.5))
for sampler in ("euler", "heun", "midpoint", "dpm_solver_pp", "unipc"):
    w2 = [wasserstein2(sample(field, x0, sampler=sampler, nfe=k).x, ref) for k in nfes]
    print(f"{sampler:14s} " + "".join(f"{v:<9.3f}" for v in w2))
    ax.plot(nfes, w2, marker="o", label=sampler)
ax.axhline(floor, color="0.5", ls=":", label="noise floor")
ax.set_xlabel("NFE")
ax.set_ylabel("W2 to the mixture")
ax.set_yscale("log")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig("samplers.png", dpi=110)
