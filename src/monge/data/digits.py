r"""scikit-learn's handwritten digits as an image data set.

The UCI optical-recognition digits (Alpaydin & Kaynak 1998) ship inside scikit-learn: 1797
grayscale 8 x 8 images of the digits 0-9 with integer intensities 0..16. They are mapped to
:math:`x = 2\,v/16 - 1 \in [-1, 1]` and optionally upsampled bilinearly to 16 x 16 or 32 x 32,
a small real image set that trains on a CPU in minutes. Nothing is downloaded.
"""

from __future__ import annotations

import torch

from .images import ImageDataset, resize_images

__all__ = ["load_digits", "DIGITS_SIZES"]

#: Resolutions :func:`load_digits` offers.
DIGITS_SIZES = (8, 16, 32)


def load_digits(size: int = 16) -> ImageDataset:
    """All 1797 digits as ``(1797, 1, size, size)`` images in :math:`[-1, 1]` with labels 0-9.

    ``size`` is 8 (the native resolution), 16 or 32 (bilinear upsampling, ``align_corners=False``).
    The data set is named ``"digits{size}"``; split it with :meth:`ImageDataset.split`.
    """
    if isinstance(size, bool) or size not in DIGITS_SIZES:
        raise ValueError(f"size must be one of {DIGITS_SIZES}, got {size!r}")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    x = resize_images(x, size).clamp(0.0, 1.0) * 2 - 1
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return ImageDataset(x.contiguous(), labels, f"digits{size}", 10, [str(k) for k in range(10)])
