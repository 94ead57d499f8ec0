r"""A small convolutional autoencoder :math:`x \mapsto z = E(x) \mapsto D(z) \approx x` for images.

Each of the ``L = len(channels)`` levels of the encoder holds residual blocks (GroupNorm, SiLU,
3x3 convolutions, as in :mod:`monge.models.unet` but without a time input) and halves the
resolution with a strided convolution, so an image ``(C, H, W)`` becomes a latent
``(latent_channels, H / 2^L, W / 2^L)``; the decoder mirrors it with nearest-neighbour upsampling.

With ``kl > 0`` it is a variational autoencoder (Kingma & Welling 2014; the "KL-f" autoencoders of
Rombach et al. 2022 use a small :math:`\beta`): the encoder outputs the mean :math:`\mu` and
log-variance :math:`\log\sigma^2` of :math:`q(z \mid x) = \mathcal N(\mu, \sigma^2)`, trained with

.. math:: \mathcal L = \tfrac{1}{n}\lVert D(\mu + \sigma\odot\varepsilon) - x\rVert^2
          + \beta\,\tfrac{1}{m}\textstyle\sum \tfrac12(\mu^2 + \sigma^2 - 1 - \log\sigma^2),
          \qquad \varepsilon \sim \mathcal N(0, I)

(both terms are means, over the ``n`` pixels and the ``m`` latent entries); ``kl = 0`` is a plain
autoencoder trained on the MSE alone.

Flows run on *scaled* latents: :meth:`AutoEncoder.encode` returns
:math:`z = (\mu - s) / c` and :meth:`AutoEncoder.decode` undoes it, where the per-channel shift
``latent_shift`` :math:`s` and scale ``latent_scale`` :math:`c` are the mean and standard deviation
of the training latents (buffers, saved with the weights), so that a flow from
:math:`\mathcal N(0, I)` sees unit-variance data, as Stable Diffusion's ``scaling_factor`` does.
They follow the training latents as running averages (updated by :func:`reconstruction_loss` in
training mode, as BatchNorm updates its statistics) and are set
exactly by :meth:`AutoEncoder.calibrate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_number

__all__ = ["AutoEncoder", "reconstruction_loss", "kl_divergence"]

#: Weight of the newest batch in the running latent statistics (after the first 1 / momentum batches,
#: which are averaged with equal weights).
LATENT_MOMENTUM = 0.01
#: Smallest latent scale, so a constant latent channel does not divide by zero.
MIN_LATENT_SCALE = 1e-5


class _ResBlock(nn.Module):
    r""":math:`h = x W_s + \mathrm{conv}(\phi(\mathrm{GN}(\mathrm{conv}(\phi(\mathrm{GN}(x))))))`,
    :math:`\phi` = SiLU."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def _blocks(cin: int, cout: int, n: int, groups: int) -> list[nn.Module]:
    return [_ResBlock(cin if i == 0 else cout, cout, groups) for i in range(n)]


def _channels(value: object) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, (list, tuple)) or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ValueError(f"AutoEncoder channels must be a non-empty list of positive integers, e.g. [32, 64], "
                         f"got {value!r}")
    if len(value) > 6 or max(value) > 4096:
        raise ValueError(f"AutoEncoder channels {list(value)} are unreasonably large (at most 6 levels of 4096)")
    return list(value)


def _image_shape(shape: object) -> tuple[int, int, int]:
    dims = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    if len(dims) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"AutoEncoder shape must be (C, H, W) of image data, got {shape!r}; "
                         "an autoencoder needs images, not vectors")
    return cast("tuple[int, int, int]", (dims[0], dims[1], dims[2]))  # three positive ints, checked above


class AutoEncoder(nn.Module):
    r"""Convolutional (variational) autoencoder for images ``(batch, C, H, W)``.

    Parameters
    ----------
    shape : ``(C, H, W)`` of one image (``build_model`` passes the data's shape); ``H`` and ``W``
        must be divisible by :math:`2^L`, ``L = len(channels)``.
    channels : feature channels per level, e.g. ``(32, 64)``: each level halves the resolution.
    latent_channels : channels of the latent ``(latent_channels, H / 2^L, W / 2^L)``.
    num_res_blocks : residual blocks per level (encoder and decoder alike).
    groups : GroupNorm groups; every entry of ``channels`` must be divisible by it.
    kl : :math:`\beta`, the weight of the KL term; ``> 0`` makes it a VAE whose encoder outputs
        mean and log-variance (``0``: a plain autoencoder).
    """

    latent_shift: Tensor  # buffers (register_buffer), declared for the type checker
    latent_scale: Tensor
    latent_updates: Tensor

    def __init__(
        self,
        shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        latent_channels: int = 4,
        num_res_blocks: int = 1,
        groups: int = 8,
        kl: float = 0.0,
    ) -> None:
        super().__init__()
        c_in, height, width = _image_shape(shape)
        chans = _channels(channels)
        check_number(latent_channels, "AutoEncoder latent_channels", 1, 4096, integer=True)
        check_number(num_res_blocks, "AutoEncoder num_res_blocks", 1, 16, integer=True)
        check_number(groups, "AutoEncoder groups", 1, 1024, integer=True)
        self.kl = check_number(kl, "AutoEncoder kl", 0.0, 1e6)
        bad = [c for c in chans if c % groups]
        if bad:
            raise ValueError(f"AutoEncoder channels {chans} must all be divisible by groups={groups}; "
                             "change one or the other")
        self.factor = 2 ** len(chans)
        if height % self.factor or width % self.factor:
            raise ValueError(
                f"AutoEncoder with {len(chans)} levels needs H and W divisible by {self.factor}, got shape "
                f"{(c_in, height, width)}; use fewer channels entries or resize the images")
        self.shape = (c_in, height, width)
        self.channels = tuple(chans)
        self.latent_channels = int(latent_channels)

        enc: list[nn.Module] = [nn.Conv2d(c_in, chans[0], 3, padding=1)]
        cur = chans[0]
        for ch in chans:
            enc += _blocks(cur, ch, num_res_blocks, groups)
            enc.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            cur = ch
        enc += [_ResBlock(cur, cur, groups), nn.GroupNorm(groups, cur), nn.SiLU(),
                nn.Conv2d(cur, latent_channels * (2 if self.kl > 0 else 1), 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(latent_channels, cur, 3, padding=1), _ResBlock(cur, cur, groups)]
        for ch in reversed(chans):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)]
            dec += _blocks(cur, ch, num_res_blocks, groups)
            cur = ch
        dec += [nn.GroupNorm(groups, cur), nn.SiLU(), nn.Conv2d(cur, c_in, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

        #: per-channel mean s and std c of the training latents: encode returns (mu - s) / c
        self.register_buffer("latent_shift", torch.zeros(latent_channels))
        self.register_buffer("latent_scale", torch.ones(latent_channels))
        #: batches seen by the running statistics (0: not yet calibrated)
        self.register_buffer("latent_updates", torch.zeros((), dtype=torch.int64))

    def latent_shape(self, shape: Sequence[int] | None = None) -> tuple[int, int, int]:
        """The latent shape ``(latent_channels, H / 2^L, W / 2^L)`` of images of ``shape`` (default:
        the shape the model was built for)."""
        c, h, w = self.shape if shape is None else _image_shape(tuple(shape))
        if c != self.shape[0] or h % self.factor or w % self.factor:
            raise ValueError(f"AutoEncoder built for {self.shape} takes images with {self.shape[0]} channels and "
                             f"H, W divisible by {self.factor}, got {tuple(shape or ())}")
        return self.latent_channels, h // self.factor, w // self.factor

    def _check_images(self, x: Tensor) -> None:
        if not torch.is_tensor(x):
            raise ValueError(f"AutoEncoder: x must be a torch.Tensor of images, got {type(x).__name__}")
        if (x.dim() != 4 or x.shape[0] == 0 or x.shape[1] != self.shape[0] or x.shape[2] % self.factor
                or x.shape[3] % self.factor):
            raise ValueError(
                f"AutoEncoder expects images of shape (batch, {self.shape[0]}, H, W) with H, W divisible by "
                f"{self.factor} (built for {self.shape}), got {tuple(x.shape)}; resize the images or train an "
                "autoencoder on data of this shape")

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        r"""Unscaled :math:`(\mu, \log\sigma^2)` of :math:`q(z \mid x)` (``None`` for the log-variance of
        a plain autoencoder)."""
        self._check_images(x)
        out = self.encoder(x)
        if self.kl > 0:
            mean, logvar = out.chunk(2, dim=1)
            logvar = logvar.clamp(-30.0, 20.0)
        else:
            mean, logvar = out, None
        return mean, logvar

    @torch.no_grad()
    def track_latents(self, mean: Tensor) -> None:
        r"""Update the running latent statistics with a batch of unscaled means ``mean``, as BatchNorm
        does: :math:`s \leftarrow s + m(\bar\mu - s)`, :math:`c^2 \leftarrow c^2 + m(\mathrm{Var}\,\mu - c^2)`
        per channel, :math:`m = \max(0.01, 1 / (k + 1))` after ``k`` batches."""
        m = (1.0 / (self.latent_updates + 1).float()).clamp_min(LATENT_MOMENTUM)  # no host sync on a GPU
        dims = (0, 2, 3)
        var = mean.float().var(dim=dims, unbiased=False)
        self.latent_shift.lerp_(mean.float().mean(dim=dims), m)
        self.latent_scale.copy_(self.latent_scale.square().lerp(var, m).sqrt().clamp_min(MIN_LATENT_SCALE))
        self.latent_updates.add_(1)

    @torch.no_grad()
    def calibrate(self, x: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
        r"""Set ``latent_shift`` and ``latent_scale`` to the per-channel mean and standard deviation of
        the encoder means :math:`\mu` of the images ``x`` ``(N, C, H, W)``; returns them."""
        self._check_images(x)
        check_number(batch_size, "batch_size", 1, 2**20, integer=True)
        was = self.training
        self.eval()
        try:
            total = torch.zeros(self.latent_channels, dtype=torch.float64, device=self.latent_shift.device)
            squares = torch.zeros_like(total)
            count = 0
            for chunk in x.split(batch_size):
                mean, _ = self.moments(chunk.to(self.latent_shift.device))
                mean = mean.to(torch.float64)
                total += mean.sum(dim=(0, 2, 3))
                squares += mean.square().sum(dim=(0, 2, 3))
                count += mean.shape[0] * mean.shape[2] * mean.shape[3]
        finally:
            self.train(was)
        shift = total / count
        var = (squares / count - shift.square()).clamp_min(0.0)
        self.latent_shift.copy_(shift)
        self.latent_scale.copy_(var.sqrt().clamp_min(MIN_LATENT_SCALE))
        self.latent_updates.fill_(max(int(self.latent_updates), 1))
        return self.latent_shift.clone(), self.latent_scale.clone()

    def _scale(self) -> tuple[Tensor, Tensor]:
        return self.latent_shift[None, :, None, None], self.latent_scale[None, :, None, None]

    def encode(self, x: Tensor, generator: torch.Generator | None = None, sample: bool = False) -> Tensor:
        r"""Scaled latents :math:`z = (\mu - s) / c` of images ``x`` (with ``sample=True``, a VAE's draw
        :math:`\mu + \sigma\varepsilon` in place of :math:`\mu`, using ``generator``)."""
        mean, logvar = self.moments(x)
        if sample:
            if logvar is None:
                raise ValueError("encode(sample=True) needs a variational autoencoder (kl > 0); a plain "
                                 "autoencoder's latent is deterministic, call encode(x)")
            mean = _reparameterise(mean, logvar, generator)
        shift, scale = self._scale()
        return (mean - shift) / scale

    def _check_latents(self, z: Tensor) -> None:
        if not torch.is_tensor(z) or z.dim() != 4 or z.shape[0] == 0 or z.shape[1] != self.latent_channels:
            raise ValueError(f"AutoEncoder.decode expects latents of shape (batch, {self.latent_channels}, h, w) "
                             f"(for images {self.shape}: {self.latent_shape()}), got "
                             f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")

    def decode_unscaled(self, z: Tensor) -> Tensor:
        """Images from unscaled latents (the encoder's own units, as :meth:`moments` returns them)."""
        self._check_latents(z)
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        r"""Images :math:`D(c z + s)` of scaled latents ``z`` ``(batch, latent_channels, h, w)``."""
        self._check_latents(z)
        shift, scale = self._scale()
        return self.decoder(z * scale + shift)

    def forward(
        self, x: Tensor, *, generator: torch.Generator | None = None, return_loss: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        r"""The reconstruction :math:`D(\mu(x))` of images ``x``; with ``return_loss=True`` the training
        loss and its parts instead (see :func:`reconstruction_loss`), computed here so that a
        wrapper that hooks ``forward`` (``DistributedDataParallel``) sees the whole step."""
        if not return_loss:
            return self.decode_unscaled(self.moments(x)[0])
        mean, logvar = self.moments(x)
        if self.training:
            self.track_latents(mean.detach())
        if logvar is None:
            z, kl = mean, mean.new_zeros(())
        else:
            z, kl = _reparameterise(mean, logvar, generator), kl_divergence(mean, logvar)
        mse = F.mse_loss(self.decode_unscaled(z), x)
        loss = mse + self.kl * kl if logvar is not None else mse
        return loss, {"mse": mse.detach(), "kl": kl.detach()}

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _reparameterise(mean: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    gdev = generator.device if generator is not None else mean.device
    eps = torch.randn(mean.shape, generator=generator, device=gdev, dtype=mean.dtype).to(mean.device)
    return mean + (0.5 * logvar).exp() * eps


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, I))` per latent entry, averaged:
    :math:`\tfrac{1}{m}\sum \tfrac12(\mu^2 + \sigma^2 - 1 - \log\sigma^2) \ge 0`."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def reconstruction_loss(
    model: nn.Module, x: Tensor, *, generator: torch.Generator | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The autoencoder's training loss on images ``x`` and its parts.

    .. math:: \mathcal L = \mathrm{MSE}(D(z), x) + \beta\,\mathrm{KL}(q(z \mid x)\,\|\,\mathcal N(0, I)),

    with :math:`z = \mu` for a plain autoencoder (``kl = 0``, KL reported as 0) and the
    reparameterised draw :math:`z = \mu + \sigma\varepsilon` (noise from ``generator``) for a VAE.
    Returns ``(loss, {"mse": ..., "kl": ...})``, the logs detached. In training mode it also updates
    the model's running latent statistics (:meth:`AutoEncoder.track_latents`), so every checkpoint
    holds a latent scale without a separate :meth:`AutoEncoder.calibrate`. ``model`` is an
    :class:`AutoEncoder` or a wrapper of one (``DistributedDataParallel``); the loss runs through its
    ``forward(x, generator=..., return_loss=True)``.
    """
    if not isinstance(getattr(model, "module", model), AutoEncoder):  # a DistributedDataParallel wraps it
        raise ValueError(f"reconstruction_loss needs an AutoEncoder (model: {{name: autoencoder}}), got "
                         f"{type(model).__name__}")
    return model(x, generator=generator, return_loss=True)
