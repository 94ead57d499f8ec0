"""Data sources built from names and parameters, as recipes give them."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from monge.config import Config, ConfigError, load_config
from monge.data.sources import DATA_SOURCES, GaussianSource, build_data, build_source


def _data(source, target):
    return SimpleNamespace(source=source, target=target)


def _cfg(source, target, **extra):
    raw = {"data": {"source": source, "target": target}, "model": {"name": "mlp", "hidden": 8, "depth": 1}}
    raw.update(extra)
    return Config.from_dict(raw)


def test_every_image_loader_is_registered():
    for name in ("gaussian", "moons", "digits", "image_folder", "array", "mnist", "cifar10"):
        assert name in DATA_SOURCES


def test_gaussian_takes_the_target_shape_and_is_standard_normal():
    source, target = build_data(_data("gaussian", {"name": "digits", "size": 8}))
    assert target.shape == (1, 8, 8) and source.shape == (1, 8, 8)
    x = source.sample(4000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4000, 1, 8, 8)
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01


def test_bare_gaussian_draws_the_same_numbers_as_before():
    """The 2D gaussian source consumes the generator exactly like torch.randn((n, 2))."""
    x = build_source("gaussian").sample(7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, torch.randn(7, 2, generator=torch.Generator().manual_seed(5)))


def test_gaussian_with_an_explicit_shape_keeps_it():
    assert build_source({"name": "gaussian", "shape": [3, 4]}, like=GaussianSource(5)).shape == (3, 4)
    with pytest.raises(ValueError, match="shape must be a positive integer"):
        GaussianSource([0, 2])


def test_array_source_from_a_recipe(tmp_path):
    arr = (np.arange(5 * 6 * 6) % 256).astype(np.uint8).reshape(5, 6, 6)
    np.save(tmp_path / "imgs.npy", arr)
    cfg = _cfg("gaussian", {"name": "array", "path": str(tmp_path / "imgs.npy")}, model={"name": "mlp", "hidden": 8})
    source, target = build_data(cfg.data)
    assert target.shape == (1, 6, 6) and len(target) == 5
    assert float(target.data.min()) >= -1 and float(target.data.max()) <= 1
    assert source.shape == target.shape
    # compact serialisation: names without parameters stay plain strings
    d = cfg.to_dict()["data"]
    assert d["source"] == "gaussian" and d["target"] == {"name": "array", "path": str(tmp_path / "imgs.npy")}
    assert Config.from_dict(cfg.to_dict()).data.target.params == cfg.data.target.params


def test_overrides_turn_a_name_into_parameters(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {source: gaussian, target: digits}\nmodel: {name: mlp, hidden: 8, depth: 1}\n")
    cfg = load_config(recipe, ["data.target.size=8"])
    assert cfg.data.target.name == "digits" and cfg.data.target.params == {"size": 8}


def test_missing_folder_and_bad_parameters_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="data:.*"):
        _cfg("gaussian", {"name": "image_folder", "path": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="accepted: size"):
        _cfg("gaussian", {"name": "digits", "colour": True})
    with pytest.raises(ConfigError, match="unknown data.target 'digitz'"):
        _cfg("gaussian", "digitz")


def test_shape_mismatch_names_both_sides():
    with pytest.raises(ConfigError, match=r"sample shape \(2,\).*\(1, 8, 8\)"):
        _cfg("moons", {"name": "digits", "size": 8})
