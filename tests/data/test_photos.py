"""Faces and texture crops: loaders on small pictures the tests write (and on scikit-image's bundled
files where it is installed), held-out regions, seeds, labels, shapes, and each bad input's message."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from monge.data import photos, sources
from monge.data.images import ImageDataset, load_image_folder
from monge.data.photos import MissingExtra, load_faces, load_textures, random_crops
from monge.data.sources import build_source
from monge.evaluate import held_out_target

H, W = 64, 48  # the written pictures


def _pixel_values(x: torch.Tensor) -> np.ndarray:
    """Model-space images back to their 0..255 pixel values."""
    return np.rint((x.numpy() + 1) * 127.5).astype(int)


@pytest.fixture
def pictures(tmp_path, monkeypatch):
    """A fake scikit-image data folder: brick's pixels hold their row, grass's their column, gravel
    is flat 7; the colour photos hold (row, column, k); lfw_subset image i is flat i/255."""
    rows = np.repeat(np.arange(H, dtype=np.uint8)[:, None], W, 1)
    cols = np.repeat(np.arange(W, dtype=np.uint8)[None], H, 0)
    Image.fromarray(rows).save(tmp_path / "brick.png")
    Image.fromarray(cols).save(tmp_path / "grass.png")
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(tmp_path / "gravel.png")
    for k, name in enumerate(["astronaut.png", "chelsea.png", "coffee.png"]):
        Image.fromarray(np.stack([rows, cols, np.full_like(rows, k)], -1)).save(tmp_path / name)
    Image.fromarray(np.stack([rows, cols, np.full_like(rows, 3)], -1)).save(tmp_path / "rocket.png")
    (tmp_path / "rocket.png").rename(tmp_path / "rocket.jpg")  # PIL reads by content; PNG keeps the values
    np.save(tmp_path / "lfw_subset.npy", np.repeat(np.arange(200.0)[:, None, None] / 255.0, 25, 1).repeat(25, 2))
    monkeypatch.setattr(photos, "skimage_data_dir", lambda: tmp_path)
    monkeypatch.setattr(sources, "_CACHE", OrderedDict())  # the real pictures may be cached under the same key
    return tmp_path


def test_texture_crops_shapes_labels_and_range(pictures):
    ds = load_textures(size=8, n=20)
    assert isinstance(ds, ImageDataset) and ds.data.shape == (60, 1, 8, 8) and ds.shape == (1, 8, 8)
    assert ds.labels.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    assert ds.num_classes == 3 and ds.class_names == ["brick", "grass", "gravel"]
    assert float(ds.data.min()) >= -1 and float(ds.data.max()) <= 1
    px = _pixel_values(ds.data[:, 0])
    # each crop is a contiguous window of its own picture
    assert (np.diff(px[:20], axis=1) == 1).all() and (np.diff(px[:20], axis=2) == 0).all()  # brick: rows
    assert (np.diff(px[20:40], axis=2) == 1).all() and (np.diff(px[20:40], axis=1) == 0).all()  # grass: columns
    assert (px[40:] == 7).all()  # gravel
    held = ds.held_out
    assert held.data.shape == (3 * 7, 1, 8, 8) and held.labels.tolist() == [0] * 7 + [1] * 7 + [2] * 7
    assert held.num_classes == 3 and held.class_names == ds.class_names
    assert load_textures(size=8, n=20, n_held_out=5).held_out.data.shape[0] == 15
    assert load_textures(size=8, n=20, holdout=0).held_out is None


@pytest.mark.parametrize("holdout", [0.25, 0.4])
def test_held_out_crops_share_no_pixel_with_training_crops(pictures, holdout):
    ds = load_textures(size=8, n=2000, n_held_out=2000, holdout=holdout, images=["brick", "grass"])
    cut = H - round(H * holdout)
    train_rows = _pixel_values(ds.data[ds.labels == 0, 0])
    held_rows = _pixel_values(ds.held_out.data[ds.held_out.labels == 0, 0])
    assert train_rows.max() == cut - 1 and train_rows.min() == 0  # the training region is covered up to the cut
    assert held_rows.min() == cut and held_rows.max() == H - 1
    # columns: both splits range over the whole width
    cols = _pixel_values(ds.held_out.data[ds.held_out.labels == 1, 0])
    assert cols.min() == 0 and cols.max() == W - 1


def test_random_crops_stay_in_their_rows():
    image = torch.arange(20.0)[:, None].expand(20, 9)[None]
    crops = random_crops(image, 50, 4, (5, 12), np.random.default_rng(0))
    assert crops.shape == (50, 1, 4, 4) and crops.min() == 5 and crops.max() == 11
    with pytest.raises(ValueError, match=r"a 8 x 8 crop does not fit in rows \[5, 12\)"):
        random_crops(image, 1, 8, (5, 12), np.random.default_rng(0))


def test_texture_seeds_reproduce_and_pictures_are_independent(pictures):
    a, b = load_textures(size=8, n=16, seed=3), load_textures(size=8, n=16, seed=3)
    assert torch.equal(a.data, b.data) and torch.equal(a.held_out.data, b.held_out.data)
    c = load_textures(size=8, n=16, seed=4)
    assert not torch.equal(a.data[:16], c.data[:16])
    # a picture's crops do not depend on the others listed after it
    alone = load_textures(size=8, n=16, seed=3, images=["brick"])
    assert torch.equal(alone.data, a.data[:16]) and alone.labels.tolist() == [0] * 16


def test_colour_textures(pictures):
    ds = load_textures(size=8, n=10, channels=3)
    assert ds.data.shape == (40, 3, 8, 8) and ds.class_names == ["astronaut", "chelsea", "coffee", "rocket"]
    blue = _pixel_values(ds.data[:, 2])
    assert [set(np.unique(blue[k * 10:(k + 1) * 10]).tolist()) for k in range(4)] == [{0}, {1}, {2}, {3}]
    assert ds.held_out.data.shape[1:] == (3, 8, 8)
    grey = load_textures(size=8, n=10, images=["astronaut", "brick"])  # colour turned grey beside a grey texture
    assert grey.data.shape == (20, 1, 8, 8)


def test_scale_shrinks_the_picture_first(pictures):
    ds = load_textures(size=8, n=50, scale=0.5, images=["brick"], holdout=0.25)
    rows = _pixel_values(ds.held_out.data[:, 0])
    assert rows.max() >= 56 and rows.min() >= 46  # the bottom 8 of 32 rows, in the original's row values
    assert ds.name.endswith("-x0.5")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"images": ["brikc"]}, r"unknown texture 'brikc'; the bundled pictures are brick, grass, gravel"),
        ({"images": ["brick", "brick"]}, "lists a picture twice"),
        ({"images": []}, "at least one picture"),
        ({"images": ["brick"], "channels": 3}, r"brick is a grey picture; channels: 3 takes the colour photographs"),
        ({"channels": 2}, "channels must be 1 .grey. or 3"),
        ({"size": 50}, r"size=50 is larger than brick, which is 64 x 48 pixels; use a size of at most 48"),
        ({"size": 20}, r"size=20 is larger than the 16-row held-out region of brick \(holdout=0.25 of its 64 rows\)"),
        ({"size": 16, "scale": 0.5}, r"larger than the 8-row held-out region .* or a larger scale"),
        ({"holdout": 0.6}, r"holdout must be in \[0, 0.5\)"),
        ({"holdout": 0, "n_held_out": 5}, "n_held_out=5 needs holdout > 0"),
        ({"n": 0}, "n must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"scale": 2.0}, r"scale must be in \(0, 1\]"),
    ],
)
def test_texture_bad_input(pictures, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_textures(**{"size": 8, "n": 4, **kwargs})


def _face_ids(ds: ImageDataset) -> np.ndarray:
    """The lfw_subset index of each image (the written pictures are flat i/255)."""
    px = _pixel_values(ds.data)
    assert (px == px[:, :1, :1, :1]).all()
    return px[:, 0, 0, 0]


@pytest.mark.parametrize("size", [16, 32])
def test_faces_held_out_whole_images(pictures, size):
    ds = load_faces(size=size)
    assert ds.data.shape == (80, 1, size, size) and ds.labels is None and ds.name == f"faces{size}"
    train, held = set(_face_ids(ds)), set(_face_ids(ds.held_out))
    assert len(held) == 20 and not train & held and train | held == set(range(100))  # faces only: the first 100
    with pytest.raises(ValueError, match="non_faces: true"):
        ds.sample_with_labels(2)


def test_faces_with_non_faces_are_labelled(pictures):
    ds = load_faces(size=16, non_faces=True, holdout=0.1)
    ids, labels = _face_ids(ds), ds.labels.numpy()
    assert len(ds) == 180 and ds.num_classes == 2 and ds.class_names == ["face", "non-face"]
    assert ((ids >= 100) == (labels == 1)).all()
    held_ids = _face_ids(ds.held_out)
    assert len(held_ids) == 20 and ((held_ids >= 100) == (ds.held_out.labels.numpy() == 1)).all()
    assert (held_ids < 100).sum() == 10 and not set(ids) & set(held_ids)  # held out per class
    x, y = ds.sample_with_labels(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 16, 16) and y.dtype == torch.int64


def test_face_crops_and_seeds(pictures):
    a = load_faces(size=16, crops=3, crop=21, seed=1)
    assert a.data.shape == (240, 1, 16, 16) and a.held_out.data.shape == (60, 1, 16, 16)
    assert torch.equal(a.data, load_faces(size=16, crops=3, crop=21, seed=1).data)
    b = load_faces(size=16, seed=2)
    assert set(_face_ids(b.held_out)) != set(_face_ids(load_faces(size=16, seed=1).held_out))
    assert load_faces(size=16, holdout=0).held_out is None


def test_face_crop_windows_move():
    """Random windows of a picture whose pixels hold their row differ in position, the centre one does not."""
    pictures = torch.arange(25.0)[:, None].expand(25, 25)[None, None]
    windows = photos._windows(pictures, 30, 21, np.random.default_rng(0))
    assert windows.shape == (30, 1, 21, 21) and len(set(windows[:, 0, 0, 0].tolist())) > 1
    assert photos._windows(pictures, 1, 21, np.random.default_rng(0))[0, 0, 0, 0] == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 24}, r"size must be one of \(16, 32\)"),
        ({"crop": 30}, r"crop=30 is larger than the 25 x 25 lfw_subset images"),
        ({"crops": 4}, "would be copies of each other; set crop below 25"),
        ({"holdout": 0.001}, "leaves an empty split"),
        ({"non_faces": "yes"}, "non_faces must be true or false"),
    ],
)
def test_face_bad_input(pictures, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_faces(**kwargs)


def test_registered_sources_and_their_held_out_split(pictures):
    target = build_source({"name": "textures", "size": 8, "n": 12})
    assert target.shape == (1, 8, 8) and len(target) == 36
    held, what, fresh = held_out_target(None, target)
    assert held is target.held_out and "held-out" in what and not fresh
    faces = build_source({"name": "faces", "size": 16, "non_faces": True})
    assert faces.shape == (1, 16, 16) and faces.held_out is not None
    with pytest.raises(ValueError, match="accepted: size, non_faces"):
        build_source({"name": "faces", "sise": 16})


def test_missing_scikit_image_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(MissingExtra, match=r"pip install 'monge\[images\]'") as err:
        load_textures(size=8, n=4)
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)  # the CLI reports ValueErrors


def test_missing_bundled_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(photos, "skimage_data_dir", lambda: tmp_path)
    with pytest.raises(MissingExtra, match="bundled lfw_subset.npy is missing"):
        load_faces()


def test_bundled_pictures_load_without_network(monkeypatch):
    """scikit-image's own files, read with every socket refused (skipped where it is not installed)."""
    pytest.importorskip("skimage", reason="scikit-image (pip install 'monge[images]') is not installed")
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a loader opened a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    tex = load_textures(size=16, n=8)
    assert tex.data.shape == (24, 1, 16, 16) and tex.held_out.data.shape == (9, 1, 16, 16)
    colour = load_textures(size=32, n=4, channels=3)
    assert colour.data.shape == (16, 3, 32, 32)
    faces = load_faces(size=32, non_faces=True)
    assert faces.data.shape == (160, 1, 32, 32) and faces.held_out.data.shape == (40, 1, 32, 32)
    # the first 100 lfw_subset pictures are faces: brighter in the middle than the flat background patches are
    raw = photos._lfw_pictures()
    assert raw.shape == (200, 1, 25, 25) and float(raw.min()) >= -1 and float(raw.max()) <= 1
    spread = raw.flatten(1).std(1)
    assert float(spread[:100].mean()) > float(spread[100:].mean())


def test_image_folder_lists_every_file_of_another_shape_before_decoding(tmp_path, monkeypatch):
    from monge.data import images

    def png(name, shape):
        Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / name)

    png("a.png", (4, 4))
    png("b.png", (4, 4))
    png("c.png", (6, 5))
    png("d.png", (6, 5))
    png("e.png", (4, 4, 3))
    monkeypatch.setattr(images, "_read_image", lambda *a: pytest.fail("an image was decoded before the check"))
    with pytest.raises(ValueError) as err:
        load_image_folder(tmp_path)
    msg = str(err.value)
    assert "2 image(s) differ in size from a.png (shape (H, W) = (4, 4)): c.png has shape (H, W) = (6, 5), " \
           "d.png has shape (H, W) = (6, 5)" in msg and "size: [H, W]" in msg
    assert "1 image(s) differ in channels from a.png (1 channel(s)): e.png has 3 channels" in msg
    assert "channels: 1 (grey) or channels: 3 (RGB)" in msg
    with pytest.raises(ValueError, match=r"differ in channels.*e\.png") as err:
        load_image_folder(tmp_path, size=4)
    assert "differ in size" not in str(err.value)
    with pytest.raises(ValueError, match=r"differ in size.*c\.png") as err:
        load_image_folder(tmp_path, channels=1)
    assert "differ in channels" not in str(err.value)
    monkeypatch.undo()
    assert load_image_folder(tmp_path, size=4, channels=3).data.shape == (5, 3, 4, 4)
