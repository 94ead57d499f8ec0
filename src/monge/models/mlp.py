r"""Time-conditioned MLP :math:`v_\theta(x, t)` for low-dimensional data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import step_of
from .embeddings import time_embedding as _time_embedding

__all__ = ["MLP"]


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out

_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "selu": nn.SELU, "tanh": nn.Tanh}


class MLP(nn.Module):
    r"""``depth`` hidden layers of width ``hidden`` on ``concat(x, embed(t))``.

    Accepts ``x`` of shape ``(batch, dim)`` and ``t`` of shape ``(batch,)`` or a scalar. With
    ``shape`` (e.g. ``(1, 8, 8)``, ``prod(shape) == dim``) it takes ``(batch, *shape)`` and
    flattens: a baseline for small images, where a U-Net does better.

    With ``num_classes = K`` the model is class-conditional, ``model(x, t, y)``: a learned
    embedding of the label :math:`y \in \{0, \dots, K\}` is added to the time embedding (as in
    :class:`~monge.models.UNet`); label ``K`` (or ``y=None``) is the unconditional null class of
    classifier-free guidance (Ho & Salimans 2022), trained by the trainer's label dropout.

    With ``cond_dim = k`` the model takes a continuous condition, ``model(x, t, c)`` with ``c`` of
    shape ``(batch, k)`` (or ``(batch,)`` when ``k = 1``): a linear embedding
    :math:`W c + b` is added to the time embedding (as C2OT's conditional network adds its
    condition projection). The condition is required; there is no null condition.
    ``num_classes`` and ``cond_dim`` exclude each other.

    With ``second_time=True`` the network is a flow map :math:`u_\theta(x, t, r)` of two times
    (the ``mean_flow`` and ``shortcut`` objectives of :mod:`monge.objectives`): the step
    :math:`h = r - t` gets its own embedding, concatenated beside that of ``t``, and ``forward``
    takes ``r=``. Without it (the default) the layers and state dict are those of a velocity MLP.
    ``time_scale`` sets the highest frequency of the time embeddings (default: the embedding's own;
    a flow map trained through MeanFlow's JVP is smoother with a low one, e.g. 10).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_embedding: str = "sinusoidal",
        time_dim: int = 32,
        activation: str = "silu",
        shape: tuple[int, ...] | list[int] | None = None,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        second_time: bool = False,
        time_scale: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(second_time, bool):
            raise ValueError(f"MLP second_time must be true or false, got {second_time!r}")
        for name, value, top in (("dim", dim, 2**20), ("hidden", hidden, 2**16), ("depth", depth, 256),
                                 ("time_dim", time_dim, 2**12)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MLP {name} must be a positive integer, got {value!r}")
            if value > top:
                raise ValueError(f"MLP {name}={value} is unreasonably large (at most {top})")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or not 1 <= num_classes <= 2**20):
            raise ValueError(f"MLP num_classes must be a positive integer (or null), got {num_classes!r}")
        if cond_dim is not None and (isinstance(cond_dim, bool) or not isinstance(cond_dim, int)
                                     or not 1 <= cond_dim <= 2**16):
            raise ValueError(f"MLP cond_dim must be a positive integer (or null), got {cond_dim!r}")
        if num_classes is not None and cond_dim is not None:
            raise ValueError("MLP takes class labels (num_classes) or a continuous condition (cond_dim), not both")
        self.num_classes = num_classes
        self.label_embed = None if num_classes is None else nn.Embedding(num_classes + 1, time_dim)
        self.cond_dim = cond_dim
        self.cond_embed = None if cond_dim is None else nn.Linear(cond_dim, time_dim)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(sorted(_ACTIVATIONS))}")
        self.shape = (dim,) if shape is None else tuple(int(s) for s in shape)
        if len(self.shape) == 0 or any(s < 1 for s in self.shape) or _prod(self.shape) != dim:
            raise ValueError(f"MLP shape {shape!r} must be positive sizes whose product is dim={dim}")
        self.dim = dim
        self.embed = _time_embedding(time_embedding, time_dim, time_scale)
        self.second_time = second_time
        #: embedding of the step h = r - t of a flow map (second_time=True), else None
        self.embed_step = _time_embedding(time_embedding, time_dim, time_scale) if second_time else None
        act = _ACTIVATIONS[activation]
        width = dim + time_dim * (2 if second_time else 1)
        layers: list[nn.Module] = [nn.Linear(width, hidden), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), act()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def _labels(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        assert self.num_classes is not None
        if y is None:
            return torch.full((batch,), self.num_classes, dtype=torch.int64, device=device)
        y = torch.as_tensor(y, device=device)
        if y.is_floating_point() or y.is_complex() or y.shape != (batch,):
            raise ValueError(f"MLP labels must be a ({batch},) integer tensor, got {y.dtype} {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"MLP labels must be in [0, {self.num_classes}] ({self.num_classes}: the null class)")
        return y.long()

    def _condition(self, c: Tensor | None, batch: int, x: Tensor) -> Tensor:
        assert self.cond_dim is not None
        if c is None:
            raise ValueError(f"this MLP is conditioned on a continuous condition (cond_dim={self.cond_dim}): pass "
                             f"model(x, t, c) with c of shape ({batch}, {self.cond_dim})")
        c = torch.as_tensor(c, device=x.device)
        if c.dim() == 1 and self.cond_dim == 1:
            c = c[:, None]
        if not c.is_floating_point() or c.shape != (batch, self.cond_dim):
            raise ValueError(f"MLP conditions must be a real ({batch}, {self.cond_dim}) tensor, got {c.dtype} "
                             f"{tuple(c.shape)}")
        return c.to(x.dtype)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None, r: Tensor | float | None = None) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            want = ", ".join(map(str, self.shape))
            raise ValueError(f"MLP expects x of shape (batch, {want}), got {tuple(x.shape)}")
        batch = x.shape[0]
        x = x.reshape(batch, self.dim)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.embed(t).to(x.dtype)
        if self.label_embed is not None:
            emb = emb + self.label_embed(self._labels(y, batch, x.device)).to(x.dtype)
        elif self.cond_embed is not None:
            emb = emb + self.cond_embed(self._condition(y, batch, x)).to(x.dtype)
        elif y is not None:
            raise ValueError("this MLP is not class-conditional: build it with num_classes=K to pass labels "
                             "(or cond_dim=k for continuous conditions)")
        parts = [x, emb]
        if self.embed_step is not None:
            parts.append(self.embed_step(step_of(t, r, batch, x)).to(x.dtype))
        elif r is not None:
            raise ValueError("this MLP is a velocity field v(x, t) of one time; build it with second_time=True "
                             "(a flow map u(x, t, r)) to pass r")
        return self.net(torch.cat(parts, dim=-1)).reshape(batch, *self.shape)
