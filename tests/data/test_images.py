"""Image loaders on small files written in each format, normalisation, sampling and PNG grids."""

import gzip
import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from monge.data.digits import load_digits
from monge.data.images import (
    ImageDataset,
    from_unit,
    load_array,
    load_cifar10,
    load_image_folder,
    load_mnist,
    read_idx,
    resize_images,
    to_unit,
)
from monge.data.sources import DataSource
from monge.imageio import make_grid, save_image_grid


def test_unit_maps_are_inverse_and_clamped():
    u = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(to_unit(from_unit(u)), u, rtol=0, atol=1e-7)
    assert float(from_unit(torch.zeros(1)).item()) == -1.0 and float(from_unit(torch.ones(1)).item()) == 1.0
    assert float(to_unit(torch.tensor([3.0])).item()) == 1.0
    with pytest.raises(ValueError, match="u contains 1 NaN"):
        from_unit(torch.tensor([float("nan")]))


def test_digits_match_scikit_learn():
    from sklearn.datasets import load_digits as sk

    bunch = sk()
    d8 = load_digits(8)
    assert isinstance(d8, DataSource) and d8.shape == (1, 8, 8) and len(d8) == 1797
    np.testing.assert_allclose(d8.data[:, 0].numpy(), bunch.images / 8.0 - 1.0, atol=1e-6)
    assert d8.labels.tolist() == bunch.target.tolist()
    d16 = load_digits(16)
    assert d16.data.shape == (1797, 1, 16, 16) and d16.name == "digits16"
    assert float(d16.data.min()) >= -1 and float(d16.data.max()) <= 1
    # bilinear upsampling keeps the mean intensity of each image (up to the border)
    np.testing.assert_allclose(d16.data.mean((1, 2, 3)).numpy(), d8.data.mean((1, 2, 3)).numpy(), atol=0.05)
    with pytest.raises(ValueError, match="size must be one of"):
        load_digits(12)


def test_sampling_uses_the_generator():
    d = load_digits(8)
    a = d.sample(16, generator=torch.Generator().manual_seed(3))
    b = d.sample(16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (16, 1, 8, 8)
    idx = torch.randint(len(d), (16,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, d.data[idx])
    x, y = d.sample_with_labels(5, generator=torch.Generator().manual_seed(4))
    idx = torch.randint(len(d), (5,), generator=torch.Generator().manual_seed(4))
    assert torch.equal(y, d.labels[idx]) and torch.equal(x, d.data[idx])
    train, test = d.split(0.25, seed=1)
    assert len(train) + len(test) == len(d) and len(test) == round(0.25 * len(d))


def _png(path, arr):
    Image.fromarray(arr).save(path)


def test_image_folder_with_classes_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ["cat", "dog"]:
        (tmp_path / cls).mkdir()
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8))
    ds = load_image_folder(tmp_path, size=8)
    assert ds.data.shape == (6, 3, 8, 8) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2


def test_class_folders_with_a_stray_root_image_or_an_empty_class(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            _png(tmp_path / cls / f"{i}.png", np.zeros((4, 4), dtype=np.uint8))
    _png(tmp_path / "stray.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(
        ValueError, match=r"class sub-folders \(cat, dog\) and 1 image\(s\) at its root \(e.g. stray.png\)"
    ):
        load_image_folder(tmp_path)
    (tmp_path / "stray.png").unlink()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) empty of .* hold no image files"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").rmdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    assert load_image_folder(tmp_path).num_classes == 2
    # root images with image-less sub-folders beside them: an unlabelled set, the folders ignored
    flat = tmp_path / "flat"
    (flat / "notes").mkdir(parents=True)
    _png(flat / "a.png", np.zeros((4, 4), dtype=np.uint8))
    ds = load_image_folder(flat)
    assert len(ds) == 1 and ds.labels is None


def test_image_folder_values_and_bad_files(tmp_path, caplog):
    arr = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17
    _png(tmp_path / "a.png", arr)
    _png(tmp_path / "b.png", arr)
    ds = load_image_folder(tmp_path)
    assert ds.data.shape == (2, 1, 4, 4) and ds.labels is None
    np.testing.assert_allclose(ds.data[0, 0].numpy(), arr / 127.5 - 1, atol=1e-6)
    # a corrupt file: an error naming it, unless skip_corrupt
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"c\.png.*skip_corrupt=True"):
        load_image_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = load_image_folder(tmp_path, skip_corrupt=True)
    assert len(ds) == 2 and len(ds.skipped) == 1 and ds.skipped[0].endswith("c.png")
    assert "skipped 1 unreadable" in caplog.text
    (tmp_path / "c.png").unlink()
    # mixed sizes and mixed channels name the offending file
    _png(tmp_path / "d.png", np.zeros((5, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"d\.png has shape"):
        load_image_folder(tmp_path)
    (tmp_path / "d.png").unlink()
    _png(tmp_path / "e.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"e\.png has (shape|3 channels)"):
        load_image_folder(tmp_path, size=4)
    assert load_image_folder(tmp_path, channels=1).data.shape == (3, 1, 4, 4)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        load_image_folder(tmp_path / "nope")


def test_arrays_npy_and_npz(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)  # NHWC
    np.save(tmp_path / "a.npy", a)
    ds = load_array(tmp_path / "a.npy")
    assert ds.data.shape == (5, 3, 6, 6)
    np.testing.assert_allclose(ds.data.permute(0, 2, 3, 1).numpy(), a / 127.5 - 1, atol=1e-6)
    np.savez(tmp_path / "b.npz", images=a.astype(np.float32) / 255, labels=np.arange(5))
    ds = load_array(tmp_path / "b.npz", value_range=(0, 1))
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="outside value_range"):
        load_array(tmp_path / "b.npz", value_range=(0.5, 0.6))
    (tmp_path / "c.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read array file .*c\.npy"):
        load_array(tmp_path / "c.npy")


def _idx(dtype_code: int, arr: np.ndarray) -> bytes:
    head = bytes([0, 0, dtype_code, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
    return head + arr.tobytes()


def test_mnist_idx_plain_and_gz(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    raw = _idx(0x08, imgs)
    assert raw[:4] == bytes.fromhex("00000803")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw)
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx(0x08, labels))
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte"), imgs)
    ds = load_mnist(tmp_path, size=16)
    assert ds.data.shape == (7, 1, 16, 16) and ds.labels.tolist() == labels.tolist()
    full = load_mnist(tmp_path)
    np.testing.assert_allclose(full.data[:, 0].numpy(), imgs / 127.5 - 1, atol=1e-6)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_mnist(tmp_path, split="test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_mnist(tmp_path, split="test")


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f, protocol=2)
    return data, labels


def test_cifar10_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    d1, l1 = _cifar_batch(root / "data_batch_1", 4, 0)
    d2, l2 = _cifar_batch(root / "data_batch_2", 3, 1)
    _cifar_batch(root / "test_batch", 2, 2)
    ds = load_cifar10(tmp_path)
    assert ds.data.shape == (7, 3, 32, 32) and ds.labels.tolist() == l1 + l2
    # channel-major: the first 1024 bytes are the red plane
    np.testing.assert_allclose(ds.data[0, 0].numpy(), d1[0, :1024].reshape(32, 32) / 127.5 - 1, atol=1e-6)
    assert len(load_cifar10(root, split="test", size=16)) == 2


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_refuses_a_malicious_pickle(tmp_path, capsys):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(ValueError, match="refusing to load global builtins.print"):
        load_cifar10(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_image_dataset_checks():
    with pytest.raises(ValueError, match="must lie in"):
        ImageDataset(torch.full((2, 1, 4, 4), 2.0))
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.long))
    x = torch.zeros(2, 1, 4, 4)
    assert resize_images(x, 4) is x and resize_images(x, (8, 6)).shape == (2, 1, 8, 6)


def test_png_grid_round_trip(tmp_path):
    imgs = torch.linspace(-1, 1, 6 * 3 * 4 * 4).reshape(6, 3, 4, 4)
    out = save_image_grid(imgs, tmp_path / "g.png", nrow=3, padding=1)
    arr = np.asarray(Image.open(out))
    assert arr.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    # the second image of the first row, pixel (0, 0), red channel
    expected = (float(imgs[1, 0, 0, 0]) + 1) / 2 * 255
    assert abs(int(arr[1, 1 + 5, 0]) - expected) <= 1
    grid = make_grid(imgs[:1, :1], nrow=1, padding=0)
    torch.testing.assert_close(grid, (imgs[:1, :1][0] + 1) / 2)
    with pytest.raises(ValueError, match="must end in .png"):
        save_image_grid(imgs, tmp_path / "g.jpg")
