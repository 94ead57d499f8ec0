r"""Image grids: tile a batch ``(N, C, H, W)`` in :math:`[-1, 1]` into one picture and save it as PNG."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._validation import check_batch, check_number, check_positive_int
from .outputs import write_bytes

__all__ = ["make_grid", "save_image_grid"]


def make_grid(
    images: Tensor, nrow: int = 8, padding: int = 2, value_range: tuple[float, float] = (-1.0, 1.0),
    pad_value: float = 1.0,
) -> Tensor:
    """Tile ``images`` row-major, ``nrow`` images per row, into a ``(C, H', W')`` tensor in [0, 1].

    Values are mapped by :math:`u = (x - lo)/(hi - lo)` and clamped; ``pad_value`` (in [0, 1])
    fills the ``padding``-pixel gaps.
    """
    check_batch(images, "images")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3, got {tuple(images.shape)}")
    nrow = check_positive_int(nrow, "nrow")
    check_number(padding, "padding", 0, integer=True)
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with lo < hi, got {value_range!r}")
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    n, c, h, w = x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), float(pad_value))
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid


def save_image_grid(
    images: Tensor, path: str | Path, nrow: int = 8, padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0), scale: int = 1,
) -> Path:
    """Save ``images`` ``(N, C, H, W)`` as one PNG grid (see :func:`make_grid`); returns the path.

    ``scale`` enlarges every pixel to a ``scale x scale`` block (nearest), handy for 8 x 8 digits.
    """
    from PIL import Image

    scale = check_positive_int(scale, "scale", 64)
    grid = make_grid(images, nrow, padding, value_range)
    if scale > 1:
        grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    arr = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(out)!r}")
    buf = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG")
    return write_bytes(out, buf.getvalue())  # atomic: an interrupted save keeps the previous grid
