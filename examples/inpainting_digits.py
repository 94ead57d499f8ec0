r"""Inpainting digits: a flow trained on digits restores the pixels a mask hides.

A small flow is trained on the 8x8 digits; it is then the prior of an inverse problem. The
measurement of a held-out digit :math:`x` is :math:`y = m \odot x` (``Mask``: 1 = observed), and
``pigdm`` (ΠGDM / OT-ODE) integrates the flow with the guidance
:math:`\nabla_x \log p_t(y \mid x)` so that the sample agrees with :math:`y` where it was
observed and with the prior elsewhere. The printed error is the mean squared error on the hidden
pixels, of one posterior sample and of the mean of eight (an estimate of the posterior mean, which
a single sample's error exceeds by the posterior variance), against filling them with the mean
training digit.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from monge.data.sources import build_source
from monge.inverse import Mask, pigdm
from monge.models import build_model
from monge.objectives import regression_loss
from monge.paths import PATHS
from monge.quick import quick_steps

g = torch.Generator().manual_seed(0)
digits = build_source({"name": "digits", "size": 8, "holdout": 0.1})
train, test = digits.data, digits.held_out.data[:8]  # (N, 1, 8, 8) in [-1, 1]

steps, path = quick_steps(4000), PATHS.build("linear")
model = build_model("mlp", {"hidden": 256, "depth": 3}, (1, 8, 8))
opt = torch.optim.AdamW(model.parameters(), 2e-3)
for _ in range(steps):
    x1 = train[torch.randint(len(train), (256,), generator=g)]
    ps = path.sample(torch.randn(x1.shape, generator=g), x1, torch.rand(256, generator=g))
    loss = regression_loss(model(ps.x_t, ps.t), ps.target)
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()

rows, cols = torch.arange(8)[:, None], torch.arange(8)[None, :]
masks = {"lower half hidden": (rows < 4).float().expand(8, 8),
         "70% of pixels hidden": (torch.rand(8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()}
mean_digit, K = train.mean(0), 8
restored = {}
for name, m in masks.items():
    op = Mask(m, shape=(1, 8, 8))
    y = op(test)
    draws = pigdm(model, path, op, y.repeat(K, 1, 1, 1), nfe=50, generator=torch.Generator().manual_seed(2))
    draws = draws.detach().clamp(-1, 1).reshape(K, *test.shape)  # K posterior samples of each digit
    hidden = (1 - op.mask).bool().expand_as(test)

    one, mean, base = (float((x - test)[hidden].pow(2).mean())
                       for x in (draws[0], draws.mean(0), mean_digit.expand_as(test)))
    print(f"{name}: MSE on the hidden pixels: one sample {one:.3f}, mean of {K} samples {mean:.3f}, "
          f"mean training digit {base:.3f}")
    restored[name] = (y + (1 - op.mask) * -1.0, draws[0])  # hidden pixels shown black

print(f"flow trained {steps} steps on {len(train)} digits; {len(test)} held-out digits restored with pigdm, 50 NFE")
fig, axes = plt.subplots(1 + 2 * len(masks), len(test), figsize=(len(test) * 0.8, (1 + 2 * len(masks)) * 0.85))
panels = [("held-out digit", test)]
for name, (observed, x) in restored.items():
    panels += [(f"observed ({name})", observed), ("restored", x)]
for r, (label, images) in enumerate(panels):
    for c in range(len(test)):
        axes[r, c].imshow(images[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[r, c].axis("off")
    axes[r, 0].set_title(label, fontsize=7, loc="left")
fig.tight_layout()
fig.savefig("inpainting.png", dpi=110)
