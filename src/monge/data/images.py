r"""Image data sets held in memory as float tensors ``(N, C, H, W)`` in :math:`[-1, 1]`.

Loaders (nothing is downloaded; every file comes from a path the user gives):

=========================== ===========================================================
:func:`load_image_folder`   PNG / JPEG / BMP / ... through Pillow, optionally resized;
                            one sub-folder per class gives labels (torchvision layout).
:func:`load_array`          ``.npy`` / ``.npz`` arrays, ``NCHW``, ``NHWC`` or ``NHW``.
:func:`load_mnist`          the IDX files of MNIST / Fashion-MNIST (LeCun et al. 1998),
                            plain or ``.gz``.
:func:`load_cifar10`        the "python version" batches of CIFAR-10 (Krizhevsky 2009).
=========================== ===========================================================

Pixel values :math:`u \in [0, 1]` map to model space by :math:`x = 2u - 1`
(:func:`from_unit`) and back by :math:`u = (x + 1)/2` (:func:`to_unit`).
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._validation import check_finite, check_number, check_positive_int
from .sources import FiniteRows

__all__ = [
    "ImageDataset",
    "to_unit",
    "from_unit",
    "resize_images",
    "load_image_folder",
    "load_array",
    "images_from_array",
    "read_idx",
    "load_mnist",
    "load_cifar10",
    "IMAGE_EXTENSIONS",
]

logger = logging.getLogger(__name__)

#: File suffixes :func:`load_image_folder` reads (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: Largest image side any loader produces (a 4096 x 4096 RGB float image is 200 MiB).
_MAX_SIDE = 4096


def to_unit(x: Tensor) -> Tensor:
    r"""Model space :math:`[-1, 1]` to pixel space :math:`[0, 1]`: :math:`u = (x + 1)/2`, clamped."""
    check_finite(x, "x")
    return ((x + 1) / 2).clamp(0, 1)


def from_unit(u: Tensor) -> Tensor:
    r"""Pixel space :math:`[0, 1]` to model space :math:`[-1, 1]`: :math:`x = 2u - 1`."""
    check_finite(u, "u")
    return u * 2 - 1


def _size_pair(size: int | Sequence[int] | None, name: str = "size") -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{name} must be an int or a pair (height, width), got {size!r}")
    return (check_positive_int(size[0], f"{name}[0]", _MAX_SIDE), check_positive_int(size[1], f"{name}[1]", _MAX_SIDE))


def resize_images(x: Tensor, size: int | Sequence[int]) -> Tensor:
    """Resize ``(N, C, H, W)`` images bilinearly, antialiased when shrinking; a no-op at the same size."""
    hw = _size_pair(size)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if tuple(x.shape[-2:]) == hw:
        return x
    out = torch.nn.functional.interpolate(x.float(), size=hw, mode="bilinear", align_corners=False, antialias=True)
    return out.to(x.dtype)


class ImageDataset(FiniteRows):
    """Images ``(N, C, H, W)`` in :math:`[-1, 1]` (and optional integer labels) held in memory.

    Parameters
    ----------
    data : ``(N, C, H, W)`` float tensor in :math:`[-1, 1]`.
    labels : optional ``(N,)`` int64 class labels in ``[0, num_classes)``.
    name : short name used for caches and logs (e.g. ``"digits16"``).
    num_classes : number of classes; default ``labels.max() + 1``.
    class_names : optional names of the classes.
    skipped : files left out by a loader (``skip_corrupt=True``).
    held_out : images kept out of training (same shape and classes), which evaluation compares
        samples against (:func:`monge.evaluate.held_out_target`); ``None`` if the set has none.
    """

    def __init__(
        self,
        data: Tensor,
        labels: Tensor | None = None,
        name: str = "images",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        skipped: Sequence[str] = (),
        held_out: ImageDataset | None = None,
    ) -> None:
        check_finite(data, "data")
        if data.dim() != 4 or data.shape[0] == 0 or not data.is_floating_point():
            raise ValueError(
                f"data must be a non-empty float tensor (N, C, H, W), got {data.dtype} {tuple(data.shape)}"
            )
        lo, hi = float(data.min()), float(data.max())
        if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
            raise ValueError(f"data must lie in [-1, 1] (got [{lo:.3g}, {hi:.3g}]); map [0, 1] pixels with from_unit")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (data.shape[0],) or labels.is_floating_point() or labels.is_complex():
                raise ValueError(f"labels must be an integer tensor of shape ({data.shape[0]},), got {labels.dtype} "
                                 f"{tuple(labels.shape)}")
            labels = labels.to(torch.int64)
            if int(labels.min()) < 0:
                raise ValueError("labels must be non-negative class indices")
            if num_classes is None:
                num_classes = int(labels.max()) + 1
            elif int(labels.max()) >= num_classes:
                raise ValueError(f"labels hold class {int(labels.max())} but num_classes={num_classes}")
        self.data = data
        self.labels = labels
        self.name = str(name)
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.skipped = list(skipped)
        self.shape = tuple(data.shape[1:])
        if held_out is not None and (held_out.shape != self.shape or held_out.num_classes != num_classes):
            raise ValueError(f"held_out has shape {held_out.shape} and {held_out.num_classes} classes but the "
                             f"training images have {self.shape} and {num_classes}; split one data set")
        self.held_out = held_out

    def __repr__(self) -> str:
        lab = f", num_classes={self.num_classes}" if self.labels is not None else ""
        held = f", held_out={len(self.held_out)}" if self.held_out is not None else ""
        return f"ImageDataset(name={self.name!r}, n={len(self)}, shape={self.shape}{lab}{held})"

    def subset(self, index: Tensor, name: str | None = None) -> ImageDataset:
        """The images at ``index`` as a new data set."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return ImageDataset(
            self.data[index], None if self.labels is None else self.labels[index], name or self.name,
            self.num_classes, self.class_names,
        )

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """A seeded random ``(train, test)`` split; ``test_fraction`` in (0, 1)."""
        check_number(test_fraction, "test_fraction", 0.0, 1.0, low_open=True, high_open=True)
        n_test = int(round(len(self) * test_fraction))
        if n_test < 1 or n_test >= len(self):
            raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {len(self)} images")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed)))
        return self.subset(perm[n_test:], f"{self.name}-train"), self.subset(perm[:n_test], f"{self.name}-test")


def _uint8_to_model(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32).div_(127.5).sub_(1.0)


# ---------------------------------------------------------------------------------------------
# image folders


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


#: Pillow modes read as one grey channel (every other mode is read as RGB, alpha dropped).
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _header(path: Path) -> tuple[int, int, int] | None:
    """``(H, W, C)`` of an image file from its header alone (no decoding; ``C`` as :func:`_read_image`
    reads it), or ``None`` when the header is unreadable (the read reports it)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.height, im.width, 1 if im.mode in _GRAY_MODES else 3
    except Exception:  # noqa: BLE001 (any unreadable header is reported by the full read)
        return None


def _check_folder_headers(folder: Path, files: Sequence[Path], resize: bool, convert: bool) -> None:
    """All ``files`` share the first one's size (unless ``resize``) and channel count (unless
    ``convert``), read from their headers before any image is decoded. One error lists the files
    that differ and the fix: ``size:`` / ``channels:`` on the data source."""
    heads = [(f, h) for f in files if (h := _header(f)) is not None]
    if not heads:
        return
    (first, (h0, w0, c0)) = heads[0]

    def names(bad: list[tuple[Path, tuple[int, int, int]]], what: Any) -> str:
        shown = ", ".join(f"{_rel(f, folder)} has {what(h)}" for f, h in bad[:5])
        return shown + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")

    problems = []
    if not resize:
        bad = [(f, h) for f, h in heads if h[:2] != (h0, w0)]
        if bad:
            problems.append(
                f"{len(bad)} image(s) differ in size from {_rel(first, folder)} (shape (H, W) = {(h0, w0)}): "
                f"{names(bad, lambda h: f'shape (H, W) = {h[:2]}')}. Fix: set size: [H, W] (or size: N for "
                "N x N) on the data source, which resizes every image as it is read (Python: size=(H, W))")
    if not convert:
        bad = [(f, h) for f, h in heads if h[2] != c0]
        if bad:
            problems.append(
                f"{len(bad)} image(s) differ in channels from {_rel(first, folder)} ({c0} channel(s)): "
                f"{names(bad, lambda h: f'{h[2]} channels')}. Fix: set channels: 1 (grey) or channels: 3 (RGB) "
                "on the data source, which converts every image as it is read (Python: channels=1 or 3)")
    if problems:
        raise ValueError(f"images in {str(folder)!r} do not share one shape: " + "; ".join(problems))


def _rel(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _read_image(path: Path, channels: int | None) -> np.ndarray:
    import warnings

    from PIL import Image, UnidentifiedImageError

    from ..limits import MAX_IMAGE_PIXELS

    try:
        with warnings.catch_warnings():  # the size is checked below, with its own message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:  # reads the header only: the size is checked before decoding
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise _ImageTooLarge(f"image {path} is {im.width} x {im.height} pixels, more than "
                                     f"{MAX_IMAGE_PIXELS:,}; shrink it before training (e.g. with Pillow's "
                                     "Image.thumbnail) or leave it out")
            im.load()
            gray = channels == 1 or (channels is None and im.mode in _GRAY_MODES)
            decoded = im.convert("L" if gray else "RGB")
            arr = np.array(decoded, dtype=np.uint8)  # writable copy
    except _ImageTooLarge:
        raise
    except Image.DecompressionBombError as err:
        raise _ImageTooLarge(f"image {path} is too large to decode ({err}); shrink it before training or leave "
                             "it out") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _CorruptImage(f"cannot read image {path}: {err}") from err
    return arr[:, :, None] if arr.ndim == 2 else arr


class _CorruptImage(ValueError):
    pass


class _ImageTooLarge(ValueError):
    """Refused before decoding, whatever ``skip_corrupt`` says (the file is readable, just too large)."""


def _check_folder_memory(folder: Path, n: int, hwc: tuple[int, ...]) -> None:
    """``n`` images of ``hwc`` (read as uint8, held as float32) must fit in memory, checked after
    the first image, before the others are read."""
    from ..limits import check_memory

    check_memory(n * math.prod(hwc) * 6, f"the {n} images of {str(folder)!r} at {hwc[0]} x {hwc[1]} x {hwc[2]}",
                 "pass a smaller size= (the images are resized as they are read) or use fewer images")


def _check_class_layout(folder: Path, classes: dict[Path, list[Path]], direct: list[Path]) -> None:
    """Class sub-folders and images at the root exclude each other, and no class folder is empty."""
    full = [d.name for d, files in classes.items() if files]
    if full and direct:
        raise ValueError(
            f"{str(folder)!r} has class sub-folders ({', '.join(full[:5])}{', ...' if len(full) > 5 else ''}) and "
            f"{len(direct)} image(s) at its root (e.g. {direct[0].name}); move the root images into a class folder "
            "or out of the data folder")
    empty = [d.name for d, files in classes.items() if not files]
    if full and empty:
        raise ValueError(
            f"class folder(s) {', '.join(empty[:5])} of {str(folder)!r} hold no image files; an empty class would "
            "count as a class the model never sees. Add images or remove the folder(s)")


def load_image_folder(
    path: str | Path,
    size: int | Sequence[int] | None = None,
    channels: int | None = None,
    skip_corrupt: bool = False,
    name: str | None = None,
) -> ImageDataset:
    """Read every image in ``path`` into an :class:`ImageDataset`.

    Images directly in ``path`` are unlabelled; if ``path`` holds sub-folders of images, each
    sub-folder is a class (sorted by name) and its images get that label. Both at once (a stray
    image at the root beside class folders) and an empty class folder are refused with the files
    named; sub-folders without images beside root images (and hidden ``.folders``) are ignored.

    Parameters
    ----------
    path : the folder.
    size : ``H`` or ``(H, W)``: resize every image (bilinear, antialiased). Without it all images
        must share one size.
    channels : 1 (grayscale) or 3 (RGB) converts every image. Without it all images must have the
        channel count of the first (alpha is dropped).
        Both are checked on the files' headers before any image is decoded: one error lists the
        files that differ and names the fix.
    skip_corrupt : leave unreadable files out (listed in ``dataset.skipped`` and logged with their
        count) instead of raising.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"path {str(folder)!r} is not a folder")
    hw = _size_pair(size)
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels must be 1, 3 or None (keep the files' own), got {channels!r}")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    direct = _list_images(folder)
    classes = {d: _list_images(d) for d in subdirs}
    _check_class_layout(folder, classes, direct)
    if any(classes.values()):
        class_names = [d.name for d in subdirs]
        files = [(f, k) for k, d in enumerate(subdirs) for f in classes[d]]
    else:
        class_names = None
        files = [(f, -1) for f in direct]
    if not files:
        raise ValueError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {str(folder)!r} or its class sub-folders"
        )
    _check_folder_headers(folder, [f for f, _ in files], resize=hw is not None, convert=channels is not None)
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[str] = []
    ref: tuple[Path, tuple[int, ...]] | None = None
    for file, label in files:
        try:
            arr = _read_image(file, channels)
        except _CorruptImage as err:
            if not skip_corrupt:
                raise ValueError(f"{err}; pass skip_corrupt=True to leave unreadable files out") from None
            skipped.append(str(file))
            continue
        if hw is None:
            if ref is not None and arr.shape != ref[1]:
                raise ValueError(
                    f"image {file} has shape (H, W, C)={arr.shape} but {ref[0]} has {ref[1]}; pass size=(H, W) "
                    "to resize and channels=1 or 3 to convert"
                )
            if max(arr.shape[:2]) > _MAX_SIDE:
                raise ValueError(f"image {file} is larger than {_MAX_SIDE} pixels a side; pass size= to shrink it")
        else:
            if ref is not None and arr.shape[2] != ref[1][2]:
                raise ValueError(
                    f"image {file} has {arr.shape[2]} channels but {ref[0]} has {ref[1][2]}; pass channels=1 or 3"
                )
            t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float()
            arr = resize_images(t, hw)[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        if ref is None:
            ref = (file, arr.shape)
            _check_folder_memory(folder, len(files), arr.shape)
        arrays.append(arr)
        labels.append(label)
    if skipped:
        logger.warning("load_image_folder: skipped %d unreadable file(s) in %s", len(skipped), folder)
    if not arrays:
        raise ValueError(f"every image file in {str(folder)!r} is unreadable ({len(skipped)} skipped)")
    data = _uint8_to_model(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    lab = torch.tensor(labels, dtype=torch.int64) if class_names is not None else None
    return ImageDataset(
        data, lab, name or folder.name, len(class_names) if class_names else None, class_names, skipped
    )


# ---------------------------------------------------------------------------------------------
# numpy arrays


def _to_nchw(a: np.ndarray, layout: str, what: str) -> np.ndarray:
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise ValueError(f"{what} must have 3 (N, H, W) or 4 dims, got shape {a.shape}")
    if layout == "auto":
        layout = "NHWC" if a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4) else "NCHW"
    if layout == "NHWC":
        a = a.transpose(0, 3, 1, 2)
    elif layout != "NCHW":
        raise ValueError(f"layout must be 'auto', 'NCHW' or 'NHWC', got {layout!r}")
    return a


def load_array(
    path: str | Path,
    key: str | None = None,
    labels_key: str | None = None,
    layout: str = "auto",
    value_range: tuple[float, float] | None = None,
    size: int | Sequence[int] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """Images from a ``.npy`` or ``.npz`` file (loaded with ``allow_pickle=False``).

    Parameters
    ----------
    key : array name inside an ``.npz``; default ``images``, ``x``, ``data`` or the only array.
    labels_key : labels inside an ``.npz``; default ``labels`` or ``y`` when present.
    layout : ``"NCHW"``, ``"NHWC"`` or ``"auto"`` (channels-last when the last axis is 1, 3 or 4).
    value_range : ``(lo, hi)`` of the stored values, mapped linearly to :math:`[-1, 1]`. Default:
        ``(0, 255)`` for integer arrays, ``(-1, 1)`` for floats (checked).
    size : optional resize to ``H`` or ``(H, W)``.
    """
    from .tabular import read_array_file

    file = Path(path)
    a, labels = read_array_file(file, key, labels_key)
    return images_from_array(a, labels, file, layout=layout, value_range=value_range, size=size, name=name)


def images_from_array(
    a: np.ndarray,
    labels: Tensor | None,
    file: Path,
    layout: str = "auto",
    value_range: tuple[float, float] | None = None,
    size: int | Sequence[int] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """The images of an array read from ``file`` (see :func:`load_array` for the options)."""
    if a.dtype.kind not in "uif" or a.size == 0:
        raise ValueError(f"{file}: images must be a non-empty integer or float array, got {a.dtype} {a.shape}")
    a = _to_nchw(a, layout, f"array in {file}")
    if value_range is None:
        value_range = (0.0, 255.0) if a.dtype.kind in "ui" else (-1.0, 1.0)
    lo, hi = float(value_range[0]), float(value_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"value_range must be (lo, hi) with lo < hi, got {value_range!r}")
    x = torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32)
    check_finite(x, f"array in {file}")
    amin, amax = float(x.min()), float(x.max())
    tol = 1e-3 * (hi - lo)
    if amin < lo - tol or amax > hi + tol:
        raise ValueError(
            f"{file}: values span [{amin:.4g}, {amax:.4g}] outside value_range=({lo:g}, {hi:g}); pass the right "
            "value_range"
        )
    x = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)
    if size is not None:
        x = resize_images(x, size).clamp(-1, 1)
    if labels is not None and labels.shape[0] != x.shape[0]:
        raise ValueError(f"{file}: {labels.shape[0]} labels for {x.shape[0]} images")
    return ImageDataset(x, labels, name or file.stem)


# ---------------------------------------------------------------------------------------------
# MNIST IDX

_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``): magic ``0x0000TTDD`` with type ``TT`` and ``DD`` big-endian int32 dims.

    MNIST images are type ``0x08`` (uint8) with 3 dims (magic ``0x00000803``), labels 1 dim (``0x00000801``).
    """
    file = Path(path)
    raw = _read_bytes(file)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"{file} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{file} is truncated: header needs {header} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{file} has {len(raw)} bytes but its header {dims} implies {expected}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root: Path, stems: Sequence[str]) -> Path | None:
    for stem in stems:
        for cand in (root / stem, root / (stem + ".gz")):
            if cand.is_file():
                return cand
    return None


def load_mnist(
    root: str | Path, split: str = "train", size: int | Sequence[int] | None = None, name: str = "mnist"
) -> ImageDataset:
    """MNIST-format data (MNIST, Fashion-MNIST, KMNIST) from the IDX files in ``root``.

    Looks for ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``split="train"``) or the
    ``t10k-`` files (``split="test"``), plain or ``.gz``; nothing is downloaded. Labels are
    optional. Images are 1 x 28 x 28 unless ``size`` resizes them.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise ValueError(f"root {str(folder)!r} is not a folder")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    img_file = _find(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    if img_file is None:
        raise ValueError(f"no {prefix}-images-idx3-ubyte[.gz] in {str(folder)!r}; download MNIST there first")
    images = read_idx(img_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_file} must hold uint8 images (N, H, W), got {images.dtype} {images.shape}")
    labels = None
    lab_file = _find(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    if lab_file is not None:
        lab = read_idx(lab_file)
        if lab.ndim != 1 or lab.shape[0] != images.shape[0]:
            raise ValueError(f"{lab_file} holds {lab.shape} labels for {images.shape[0]} images in {img_file}")
        labels = torch.from_numpy(lab.astype(np.int64))
    x = _uint8_to_model(images)[:, None]
    if size is not None:
        x = resize_images(x, size).clamp(-1, 1)
    return ImageDataset(x, labels, name, 10 if labels is not None else None)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python pickles

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _ArrayOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (holds a {type(d).__name__}, not a dict)")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: b'data' must be a uint8 array (N, 3072)")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1) if labels is not None else None
    if labels is None or labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: b'labels' must list one label per image")
    return data, labels


def load_cifar10(
    root: str | Path, split: str = "train", size: int | Sequence[int] | None = None, name: str = "cifar10"
) -> ImageDataset:
    """CIFAR-10 from the "python version" batches in ``root`` (or ``root/cifar-10-batches-py``).

    ``split="train"`` reads ``data_batch_1`` .. ``data_batch_5`` (those present, at least one),
    ``split="test"`` reads ``test_batch``. Each batch is a pickled dict with ``b"data"``
    (``N x 3072`` uint8, channel-major R, G, B planes of 32 x 32) and ``b"labels"``.

    .. warning:: Pickle files can run arbitrary code when loaded. Read only batches you trust;
       this loader uses a restricted unpickler that accepts nothing but numpy arrays and plain
       containers, and refuses (``ValueError``) any file that asks for another global.
    """
    folder = Path(root)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise ValueError(f"root {str(folder)!r} is not a folder")
    if split == "train":
        files = [folder / f"data_batch_{i}" for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    elif split == "test":
        files = [folder / "test_batch"] if (folder / "test_batch").is_file() else []
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not files:
        raise ValueError(f"no CIFAR-10 {split} batches (data_batch_N / test_batch) in {str(folder)!r}")
    parts = [_load_cifar_batch(f) for f in files]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"CIFAR-10 labels must be in 0..9, got {labels.min()}..{labels.max()}")
    x = _uint8_to_model(data)
    if size is not None:
        x = resize_images(x, size).clamp(-1, 1)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return ImageDataset(x, torch.from_numpy(labels), name, 10, names)
