r"""Photographs bundled with scikit-image as image data sets: faces and texture crops.

scikit-image ships a few pictures inside its wheel (``skimage/data``); they are read straight
from those files (never through ``skimage.data``'s fetcher, so nothing can be downloaded).
Install them with ``pip install 'monge[images]'``.

================= ===========================================================================
:func:`load_faces`    ``lfw_subset``: 200 grey 25 x 25 crops of Labeled Faces in the Wild
                      (Huang et al. 2012), the first 100 faces, the other 100 background
                      patches; resized (or randomly cropped, then resized) to ``size``.
:func:`load_textures` random ``size`` x ``size`` crops of the grey 512 x 512 textures
                      ``brick``, ``grass``, ``gravel`` (labels 0, 1, 2), or of the colour
                      photographs ``astronaut``, ``chelsea``, ``coffee``, ``rocket``
                      (``channels=3``; skimage bundles no colour texture).
================= ===========================================================================

Each set has a seeded held-out split (:attr:`ImageDataset.held_out`) that shares no pixel
with the training images: held-out faces are other images; held-out crops come from the
bottom ``holdout`` share of each picture's rows, training crops from the rows above it.
Values are in the library's image range :math:`[-1, 1]` (:func:`~monge.data.images.from_unit`),
layout ``(N, C, H, W)``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._validation import check_number, check_positive_int
from .images import ImageDataset, from_unit, resize_images

__all__ = [
    "COLOUR_PHOTOS",
    "FACE_SIZES",
    "GREY_TEXTURES",
    "MissingExtra",
    "bundled_image",
    "load_faces",
    "load_textures",
    "random_crops",
    "skimage_data_dir",
]

#: Side lengths :func:`load_faces` offers (the faces are 25 x 25).
FACE_SIZES = (16, 32)
#: Grey 512 x 512 textures bundled with scikit-image, in label order.
GREY_TEXTURES = ("brick", "grass", "gravel")
#: Colour photographs bundled with scikit-image, the ``channels=3`` default of :func:`load_textures`.
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")

_FILES = {"brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png", "astronaut": "astronaut.png",
          "chelsea": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg"}
_LFW_FILE = "lfw_subset.npy"
_LFW_FACES = 100  # the first 100 images of lfw_subset are faces, the rest are not
_MAX_CROPS = 100_000  # per picture


class MissingExtra(ImportError, ValueError):
    """An optional dependency is not installed; the message names the ``pip`` extra that brings it.

    Also a ``ValueError``, so the command line reports it as a user error."""


def skimage_data_dir() -> Path:
    """The folder of pictures inside the installed scikit-image (found without importing it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra("the faces and textures data sets read pictures bundled with scikit-image, which is "
                           "not installed; install it with pip install 'monge[images]' (nothing is downloaded)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _bundled_file(filename: str) -> Path:
    path = skimage_data_dir() / filename
    if not path.is_file():
        raise MissingExtra(f"scikit-image is installed but its bundled {filename} is missing from {path.parent}; "
                           "reinstall it with pip install --force-reinstall 'monge[images]'")
    return path


def bundled_image(name: str, channels: int = 1) -> Tensor:
    """The bundled picture ``name`` (:data:`GREY_TEXTURES` or :data:`COLOUR_PHOTOS`) as a
    ``(channels, H, W)`` tensor in :math:`[-1, 1]`; ``channels=1`` turns colour to grey (ITU-R 601 luma)."""
    from PIL import Image

    if name not in _FILES:
        raise ValueError(f"unknown picture {name!r}; the bundled ones are {', '.join(_FILES)} (grey textures: "
                         f"{', '.join(GREY_TEXTURES)}; colour: {', '.join(COLOUR_PHOTOS)})")
    if channels == 3 and name in GREY_TEXTURES:
        raise ValueError(f"{name} is a grey picture; channels: 3 takes the colour photographs "
                         f"{', '.join(COLOUR_PHOTOS)} (or use channels: 1)")
    with Image.open(_bundled_file(_FILES[name])) as im:
        arr = np.array(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    u = torch.from_numpy(arr).to(torch.float32) / 255.0
    u = u[None] if u.dim() == 2 else u.permute(2, 0, 1)
    return from_unit(u).contiguous()


def random_crops(image: Tensor, n: int, size: int, rows: tuple[int, int], rng: np.random.Generator) -> Tensor:
    """``n`` square crops ``(n, C, size, size)`` of ``image`` ``(C, H, W)`` whose rows all lie in
    ``[rows[0], rows[1])``; top-left corners uniform over the positions that fit, drawn from ``rng``."""
    _, height, width = image.shape
    lo, hi = rows
    if not 0 <= lo < hi <= height or size > hi - lo or size > width:
        raise ValueError(f"a {size} x {size} crop does not fit in rows [{lo}, {hi}) of a {height} x {width} image")
    top = torch.from_numpy(rng.integers(lo, hi - size + 1, size=n))
    left = torch.from_numpy(rng.integers(0, width - size + 1, size=n))
    offsets = torch.arange(size)
    r = (top[:, None] + offsets)[:, :, None]  # (n, size, 1)
    c = (left[:, None] + offsets)[:, None, :]  # (n, 1, size)
    return image[:, r, c].permute(1, 0, 2, 3).contiguous()


def _check_holdout(holdout: float, top: float) -> float:
    return check_number(holdout, "holdout", 0.0, top, high_open=True)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


# ---------------------------------------------------------------------------------------------
# textures


def load_textures(
    size: int = 16,
    n: int = 1000,
    images: Sequence[str] | None = None,
    channels: int = 1,
    scale: float = 1.0,
    holdout: float = 0.25,
    n_held_out: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    r"""``n`` random ``size`` x ``size`` crops of each picture in ``images``, labelled by picture.

    Returns an :class:`ImageDataset` of ``(len(images) * n, channels, size, size)`` images with
    ``held_out`` (``None`` when ``holdout=0``).

    Parameters
    ----------
    size : crop side in pixels (16 or 32 for the recipes; any side that fits the picture).
    n : training crops per picture.
    images : picture names, label ``k`` for the ``k``-th; default :data:`GREY_TEXTURES` for
        ``channels=1`` and :data:`COLOUR_PHOTOS` for ``channels=3``.
    channels : 1 (grey; colour photographs are turned grey) or 3 (colour photographs only).
    scale : each picture is first resized by this factor (antialiased), so a crop covers
        ``size / scale`` of its original pixels (``0.5``: a 16-pixel crop shows 32 of them).
    holdout : share of each picture's rows, at its bottom, that only held-out crops come from;
        training crops come from the rows above, so the two splits share no pixel. 0: no split.
    n_held_out : held-out crops per picture; default as dense as the training crops,
        :math:`\mathrm{round}(n \cdot h / (1 - h))` for ``holdout`` :math:`h`.
    seed : the crop positions; picture ``k`` of split ``s`` draws from ``default_rng([seed, s, k])``,
        so adding a picture leaves the others' crops unchanged.
    """
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {channels!r}")
    names = _texture_names(images, channels)
    size = check_positive_int(size, "size", 4096)
    n = check_positive_int(n, "n", _MAX_CROPS)
    scale = check_number(scale, "scale", 0.0, 1.0, low_open=True)
    holdout = _check_holdout(holdout, 0.5)
    seed = _check_seed(seed)
    if holdout == 0 and n_held_out:
        raise ValueError(f"n_held_out={n_held_out} needs holdout > 0 (the share of rows held out)")
    if n_held_out is None:
        n_held_out = max(1, round(n * holdout / (1 - holdout))) if holdout > 0 else 0
    elif holdout > 0:
        n_held_out = check_positive_int(n_held_out, "n_held_out", _MAX_CROPS)
    _check_texture_memory(len(names) * (n + n_held_out), channels, size)
    pictures = [_scaled(bundled_image(name, channels), scale) for name in names]
    for name, picture in zip(names, pictures, strict=True):
        _check_crop_fits(name, picture, size, scale, holdout)
    train, held = [], []
    for k, picture in enumerate(pictures):
        height = picture.shape[1]
        cut = height - _held_rows(height, holdout)
        train.append(random_crops(picture, n, size, (0, cut), np.random.default_rng([seed, 0, k])))
        if holdout > 0:
            held.append(random_crops(picture, n_held_out, size, (cut, height), np.random.default_rng([seed, 1, k])))
    label = f"textures{size}-{'-'.join(names)}" + (f"-x{scale:g}" if scale != 1 else "")
    k = len(names)

    def dataset(crops: list[Tensor], per: int, suffix: str, held_out: ImageDataset | None = None) -> ImageDataset:
        labels = torch.arange(k).repeat_interleave(per)
        return ImageDataset(torch.cat(crops), labels, label + suffix, k, names, held_out=held_out)

    held_set = dataset(held, n_held_out, "-holdout") if holdout > 0 else None
    return dataset(train, n, "", held_set)


def _texture_names(images: Sequence[str] | None, channels: int) -> list[str]:
    if images is None:
        return list(GREY_TEXTURES if channels == 1 else COLOUR_PHOTOS)
    if isinstance(images, str):
        images = [images]
    names = list(images)
    if not names:
        raise ValueError("images must name at least one picture")
    for name in names:
        if name not in _FILES:
            raise ValueError(f"unknown texture {name!r}; the bundled pictures are {', '.join(GREY_TEXTURES)} "
                             f"(grey) and {', '.join(COLOUR_PHOTOS)} (colour)")
    if len(set(names)) != len(names):
        raise ValueError(f"images lists a picture twice: {names}; each picture is one class")
    grey = [name for name in names if name in GREY_TEXTURES]
    if channels == 3 and grey:
        raise ValueError(f"{', '.join(grey)} {'is a grey picture' if len(grey) == 1 else 'are grey pictures'}; "
                         f"channels: 3 takes the colour photographs {', '.join(COLOUR_PHOTOS)} (or use channels: 1)")
    return names


def _scaled(picture: Tensor, scale: float) -> Tensor:
    if scale == 1:
        return picture
    _, h, w = picture.shape
    return resize_images(picture[None], (max(1, round(h * scale)), max(1, round(w * scale))))[0].clamp(-1, 1)


def _held_rows(height: int, holdout: float) -> int:
    return round(height * holdout)


def _check_crop_fits(name: str, picture: Tensor, size: int, scale: float, holdout: float) -> None:
    """The crop side fits the picture, its held-out rows and its training rows, else one error with the fix."""
    _, height, width = picture.shape
    at = f" at scale {scale:g}" if scale != 1 else ""
    if size > min(height, width):
        raise ValueError(f"size={size} is larger than {name}, which is {height} x {width} pixels{at}; use a size "
                         f"of at most {min(height, width)}" + (" or a larger scale" if scale != 1 else ""))
    held = _held_rows(height, holdout)
    if holdout > 0 and size > min(held, height - held):
        part, rows = ("held-out", held) if held < height - held else ("training", height - held)
        raise ValueError(f"size={size} is larger than the {rows}-row {part} region of {name} (holdout={holdout:g} "
                         f"of its {height} rows{at}); use a size of at most {rows}, a larger holdout"
                         + (" or a larger scale" if scale != 1 else ""))


def _check_texture_memory(count: int, channels: int, size: int) -> None:
    from ..limits import check_memory

    check_memory(count * channels * size * size * 4, f"{count} crops of {channels} x {size} x {size}",
                 "use a smaller n (crops per picture) or size")


# ---------------------------------------------------------------------------------------------
# faces


def load_faces(
    size: int = 16,
    non_faces: bool = False,
    holdout: float = 0.2,
    crops: int = 1,
    crop: int = 25,
    seed: int = 0,
) -> ImageDataset:
    """The faces of scikit-image's ``lfw_subset`` (25 x 25 grey) at ``size`` x ``size``.

    Returns an :class:`ImageDataset` ``(N, 1, size, size)`` with ``held_out`` (``None`` when
    ``holdout=0``), named ``faces{size}`` (``faces{size}-labelled`` with ``non_faces``).

    Parameters
    ----------
    size : 16 (shrunk, antialiased) or 32 (bilinear upsampling).
    non_faces : also the 100 background patches, labelled 1 (faces 0); without them the set is
        unlabelled.
    holdout : share of the images (of each class) held out whole, chosen with ``seed``.
    crops : images per picture: 1 takes the whole ``crop`` x ``crop`` centre; more take that
        many random ``crop`` x ``crop`` windows (``crop < 25``), each then resized to ``size``.
    crop : side of the window cut from the 25 x 25 picture before resizing.
    seed : which pictures are held out and where the random windows fall.
    """
    if isinstance(size, bool) or size not in FACE_SIZES:
        raise ValueError(f"size must be one of {FACE_SIZES}, got {size!r}")
    if not isinstance(non_faces, bool):
        raise ValueError(f"non_faces must be true or false, got {non_faces!r}")
    holdout = _check_holdout(holdout, 1.0)
    crops = check_positive_int(crops, "crops", 1000)
    crop = check_positive_int(crop, "crop", 4096)
    seed = _check_seed(seed)
    pictures = _lfw_pictures()
    side = pictures.shape[-1]
    if crop > side:
        raise ValueError(f"crop={crop} is larger than the {side} x {side} lfw_subset images; use crop <= {side}")
    if crops > 1 and crop == side:
        raise ValueError(f"crops={crops} windows of the whole {side} x {side} image would be copies of each other; "
                         f"set crop below {side} (e.g. {side - 4}) or crops: 1")
    classes = [pictures[:_LFW_FACES]] + ([pictures[_LFW_FACES:]] if non_faces else [])
    rng = np.random.default_rng([seed, 0])
    train_parts: list[tuple[Tensor, int]] = []
    held_parts: list[tuple[Tensor, int]] = []
    for k, group in enumerate(classes):
        n_held = round(len(group) * holdout)
        if holdout > 0 and not 1 <= n_held < len(group):
            raise ValueError(f"holdout={holdout:g} of {len(group)} images leaves an empty split; use a share in "
                             f"[{1 / len(group):.2g}, {1 - 1 / len(group):.2g}]")
        order = torch.from_numpy(rng.permutation(len(group)))
        for split, (part, index) in enumerate(((train_parts, order[n_held:]), (held_parts, order[:n_held]))):
            if len(index):
                windows = _windows(group[index], crops, crop, np.random.default_rng([seed, 1 + split, k]))
                part.append((resize_images(windows, size).clamp(-1, 1), k))
    name = f"faces{size}" + ("-labelled" if non_faces else "")
    held_set = _face_set(held_parts, name + "-holdout", non_faces) if held_parts else None
    return _face_set(train_parts, name, non_faces, held_set)


def _lfw_pictures() -> Tensor:
    """The 200 ``lfw_subset`` pictures as ``(200, 1, 25, 25)`` in :math:`[-1, 1]` (read with ``allow_pickle=False``)."""
    path = _bundled_file(_LFW_FILE)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if arr.ndim != 3 or arr.shape[0] <= _LFW_FACES or arr.dtype.kind not in "uif":
        raise ValueError(f"{path} holds {arr.dtype} {arr.shape}, not the lfw_subset pictures (N, 25, 25)")
    u = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    if arr.dtype.kind in "ui":
        u = u / 255.0
    return from_unit(u.clamp(0, 1))[:, None].contiguous()


def _windows(pictures: Tensor, crops: int, crop: int, rng: np.random.Generator) -> Tensor:
    """``crops`` windows of side ``crop`` per picture ``(N, 1, S, S)``: the centre one when
    ``crops == 1``, else random ones; ``(N * crops, 1, crop, crop)``, a picture's windows together."""
    side = pictures.shape[-1]
    if crops == 1:
        top = (side - crop) // 2
        return pictures[:, :, top:top + crop, top:top + crop]
    return torch.cat([random_crops(p, crops, crop, (0, side), rng) for p in pictures])


def _face_set(parts: list[tuple[Tensor, int]], name: str, labelled: bool,
              held_out: ImageDataset | None = None) -> ImageDataset:
    data = torch.cat([x for x, _ in parts])
    if not labelled:
        ds = ImageDataset(data, None, name, held_out=held_out)
        ds.labels_hint = "load faces with non_faces: true for face (0) / non-face (1) labels"
        return ds
    labels = torch.cat([torch.full((len(x),), k, dtype=torch.int64) for x, k in parts])
    return ImageDataset(data, labels, name, 2, ["face", "non-face"], held_out=held_out)

