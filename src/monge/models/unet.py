r"""A compact time-conditioned U-Net :math:`v_\theta(x, t, y)` for small images.

The layout follows DDPM (Ho et al. 2020) and its "improved" variant (Nichol & Dhariwal 2021):
residual blocks (GroupNorm, SiLU, 3x3 convolutions) to which a learned embedding of
:math:`t \in [0, 1]` is added, strided-convolution downsampling, nearest-neighbour upsampling,
skip connections by concatenation, and multi-head self-attention at the lowest resolution(s).
With ``num_classes`` a label embedding is added to the time embedding; label ``num_classes`` (or
``y=None``) is the unconditional "null" class, as in classifier-free guidance (Ho & Salimans
2022). The output convolution starts at zero, so an untrained network predicts :math:`v = 0`.

The default (channels 32, 64; one residual block per level) has about 0.9 M parameters and
trains on 16 x 16 digits on a CPU in minutes. Any ``nn.Module`` with ``forward(x, t)`` can be used
in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_number
from .embeddings import step_of
from .embeddings import time_embedding as _time_embedding

__all__ = ["UNet"]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels)


def _zero_init(conv: nn.Conv2d) -> None:
    """Zero weights and bias: the layer starts as the zero map (a residual branch starts as identity)."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class _ResBlock(nn.Module):
    r""":math:`h = x W_s + \mathrm{conv}(\phi(\mathrm{GN}(\mathrm{conv}(\phi(\mathrm{GN}(x))) + e)))`,
    :math:`\phi` = SiLU."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = _norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over the pixels, residual, output projection zero-initialised."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"UNet: attention channels {channels} must be divisible by heads={heads}")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        _zero_init(self.proj)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


def _int_list(value: object, name: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"UNet {name} must be a non-empty list of positive integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"UNet {name} must be a list of positive integers, got {value!r}")
        out.append(v)
    return out


class UNet(nn.Module):
    r"""Time-conditioned U-Net ``model(x, t, y=None)`` for images ``(batch, C, H, W)``.

    Parameters
    ----------
    shape : ``(C, H, W)`` of one image (``build_model`` passes the data's shape). ``H`` and ``W``
        must be divisible by :math:`2^{L-1}` for ``L = len(channels)`` levels.
    channels : feature channels per resolution level, e.g. ``(32, 64)`` for 16 x 16 inputs.
    num_res_blocks : residual blocks per level on the way down (one more on the way up).
    attention_levels : levels (0 = full resolution) with self-attention; default the lowest one.
        The bottleneck always has one attention block.
    heads : attention heads.
    groups : GroupNorm groups; every entry of ``channels`` must be divisible by it.
    time_embedding : ``"sinusoidal"`` or ``"fourier"`` (see :mod:`monge.models.embeddings`).
    num_classes : enables class conditioning ``y`` in ``[0, num_classes]``; ``num_classes``
        itself (and ``y=None``) is the unconditional null label.
    dropout : dropout rate inside the residual blocks.
    second_time : a flow map :math:`u_\theta(x, t, r)` of two times (the ``mean_flow`` and ``shortcut``
        objectives of :mod:`monge.objectives`): an embedding of the step :math:`h = r - t`, built like
        the time embedding, is added to it, and ``forward`` takes ``r=``. Off by default (the
        layers and state dict of a velocity U-Net).
    time_scale : highest frequency of the time embeddings (default: the embedding's own); a flow
        map trained through MeanFlow's JVP is smoother with a low one, e.g. 10.
    """

    def __init__(
        self,
        shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        num_res_blocks: int = 1,
        attention_levels: Sequence[int] | None = None,
        heads: int = 4,
        groups: int = 8,
        time_embedding: str = "sinusoidal",
        num_classes: int | None = None,
        dropout: float = 0.0,
        second_time: bool = False,
        time_scale: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(second_time, bool):
            raise ValueError(f"UNet second_time must be true or false, got {second_time!r}")
        dims = _int_list(list(shape) if isinstance(shape, (list, tuple)) else shape, "shape")
        if len(dims) != 3:
            raise ValueError(f"UNet shape must be (C, H, W) for image data, got {tuple(dims)}; use the MLP for vectors")
        chans = _int_list(channels, "channels")
        if len(chans) > 6 or max(chans) > 4096:
            raise ValueError(f"UNet channels {chans} are unreasonably large (at most 6 levels of 4096)")
        levels = len(chans)
        c_in, height, width = dims
        factor = 2 ** (levels - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"UNet with {levels} levels needs H and W divisible by {factor}, got shape {tuple(dims)}; "
                "use fewer channels entries or resize the images"
            )
        bounds = (("num_res_blocks", num_res_blocks, 16), ("heads", heads, 64), ("groups", groups, 1024))
        for name, value, top in bounds:
            check_number(value, f"UNet {name}", 1, top, integer=True)
        bad = [c for c in chans if c % groups]
        if bad:
            raise ValueError(f"UNet channels {chans} must all be divisible by groups={groups}; change one or the other")
        attn = [levels - 1] if attention_levels is None else list(attention_levels)
        if any(isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < levels for a in attn):
            raise ValueError(f"UNet attention_levels must be level indices in [0, {levels}), got {attention_levels!r}")
        if num_classes is not None:
            check_number(num_classes, "UNet num_classes", 1, 1_000_000, integer=True)
        check_number(dropout, "UNet dropout", 0.0, 1.0, high_open=True)

        self.shape = (c_in, height, width)
        self.channels = tuple(chans)
        self.num_classes = num_classes
        c0 = chans[0]
        emb_dim = 4 * c0
        self.time_embed = nn.Sequential(
            _time_embedding(time_embedding, c0, time_scale),
            nn.Linear(c0, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.second_time = second_time
        #: embedding of the step h = r - t of a flow map (second_time=True), else None
        self.step_embed = nn.Sequential(
            _time_embedding(time_embedding, c0, time_scale), nn.Linear(c0, emb_dim), nn.SiLU(),
            nn.Linear(emb_dim, emb_dim)) if second_time else None
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        self.conv_in = nn.Conv2d(c_in, c0, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [c0]
        cur = c0
        for level, ch in enumerate(chans):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([_ResBlock(cur, ch, emb_dim, groups, dropout)])
                if level in attn:
                    block.append(_Attention(ch, heads, groups))
                self.down.append(block)
                cur = ch
                skips.append(cur)
            if level < levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)

        self.mid = nn.ModuleList([
            _ResBlock(cur, cur, emb_dim, groups, dropout), _Attention(cur, heads, groups),
            _ResBlock(cur, cur, emb_dim, groups, dropout),
        ])

        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            ch = chans[level]
            for _ in range(num_res_blocks + 1):
                block = nn.ModuleList([_ResBlock(cur + skips.pop(), ch, emb_dim, groups, dropout)])
                if level in attn:
                    block.append(_Attention(ch, heads, groups))
                self.up.append(block)
                cur = ch
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(cur, cur, 3, padding=1)]))
        self.norm_out = _norm(cur, groups)
        self.conv_out = nn.Conv2d(cur, c_in, 3, padding=1)
        _zero_init(self.conv_out)

    def _embed(self, x: Tensor, t: Tensor | float, y: Tensor | None, r: Tensor | float | None = None) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"UNet: t must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
        emb = self.time_embed[0](t.to(torch.float32)).to(x.dtype)
        emb = self.time_embed[1:](emb)
        if self.step_embed is not None:
            h = step_of(t.to(torch.float32), r, x.shape[0], t.to(torch.float32))
            emb = emb + self.step_embed[1:](self.step_embed[0](h).to(x.dtype))
        elif r is not None:
            raise ValueError("UNet: r was given but the model is a velocity field v(x, t); build it with "
                             "second_time=True (a flow map u(x, t, r)) to pass r")
        if self.label_embed is None:
            if y is not None:
                raise ValueError("UNet: y was given but the model has no num_classes; build it with num_classes=K")
            return emb
        assert self.num_classes is not None
        if y is None:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        y = torch.as_tensor(y, device=x.device)
        if y.shape != (x.shape[0],) or y.is_floating_point() or y.is_complex():
            raise ValueError(f"UNet: y must be integer labels of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if y.device.type != "meta" and y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"UNet: y must be in [0, {self.num_classes}] ({self.num_classes} = unconditional)")
        return emb + self.label_embed(y.long())

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None, r: Tensor | float | None = None) -> Tensor:
        """Velocity (or whatever the objective regresses) at ``x`` ``(batch, C, H, W)``, time ``t``
        (a flow map, ``second_time=True``: its average velocity from ``t`` to ``r``)."""
        factor = 2 ** (len(self.channels) - 1)
        if x.dim() != 4 or x.shape[1] != self.shape[0] or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"UNet expects x of shape (batch, {self.shape[0]}, H, W) with H, W divisible by {factor} "
                f"(built for {self.shape}), got {tuple(x.shape)}"
            )
        emb = self._embed(x, t, y, r)
        h = self.conv_in(x)
        hs = [h]
        # each entry of down and up is an nn.ModuleList (built in __init__)
        for block in cast("list[nn.ModuleList]", self.down):
            if isinstance(block[0], _ResBlock):
                h = block[0](h, emb)
                for extra in block[1:]:
                    h = extra(h)
            else:
                h = block[0](h)
            hs.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        for block in cast("list[nn.ModuleList]", self.up):
            if isinstance(block[0], _ResBlock):
                h = block[0](torch.cat([h, hs.pop()], dim=1), emb)
                for extra in block[1:]:
                    h = extra(h)
            else:
                for layer in block:
                    h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

