"""Bounded inputs: each too-large request gets a clear error before any work, naming the fix."""

import struct
import time
import zlib

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from monge import limits
from monge.cli import app
from monge.config import Config, ConfigError, load_config
from monge.run.checkpoint import load_checkpoint, save_checkpoint
from monge.run.load import load_model
from monge.train import Trainer

runner = CliRunner()

BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *[f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)],
    ]
) + "\n"


def _raw(tmp_path, **train):
    return {"name": "lim", "output_dir": str(tmp_path / "runs"), "data": {"source": "gaussian", "target": "moons"},
            "model": {"name": "mlp", "hidden": 8, "depth": 1},
            "train": {"steps": 2, "batch_size": 4, "progress": False, "eval_samples": 10, **train},
            "sample": {"nfe": [1], "adaptive": False}}


def test_billion_laughs_recipe_fails_fast(tmp_path):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 400  # a few hundred bytes that expand to 9^9 strings
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values"):
        load_config(recipe)
    assert time.perf_counter() - start < 5


def test_many_aliases_and_recursive_anchors_are_refused(tmp_path):
    recipe = tmp_path / "aliases.yaml"
    recipe.write_text("x: &x 1\nl: [" + ", ".join(["*x"] * 101) + "]\n")
    with pytest.raises(ConfigError, match="more than 100 YAML aliases"):
        load_config(recipe)
    recipe.write_text("x: &x [1, *x]\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config(recipe)
    recipe.write_text("name: &n lim\noutput_dir: *n\n")  # a few aliases stay fine
    assert load_config(recipe).output_dir == "lim"
    with pytest.raises(ConfigError, match="aliases"):  # overrides go through the same loader
        load_config(recipe, ["train.steps=[" + ", ".join(["&a 1"] + ["*a"] * 101) + "]"])


def test_oversized_recipe_is_refused_without_reading_it(tmp_path, monkeypatch):
    recipe = tmp_path / "big.yaml"
    recipe.write_text("# " + "x" * (limits.MAX_RECIPE_BYTES + 10) + "\n")
    monkeypatch.setattr(type(recipe), "read_text", lambda *a, **k: pytest.fail("the recipe was read"))
    with pytest.raises(ConfigError, match="a recipe is at most 1,048,576 bytes"):
        load_config(recipe)


def test_sample_nfe_bound_in_recipe_and_cli(tmp_path):
    raw = _raw(tmp_path)
    raw["sample"]["nfe"] = [1, 10**9]
    with pytest.raises(ConfigError, match=r"sample.nfe=.* is too large \(at most 10,000"):
        Config.from_dict(raw)
    res = runner.invoke(app, ["eval", str(tmp_path / "none"), "--nfe", "1,1000000000"])
    assert res.exit_code == 2 and "at most 10,000" in res.output  # before the checkpoint is even read


def test_device_without_cuda_names_the_available_devices(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = Config.from_dict(_raw(tmp_path, device="cuda"))
    with pytest.raises(ConfigError, match=r"no usable CUDA GPU.*available devices: cpu"):
        Trainer(cfg)
    with pytest.raises(ValueError, match="not a device name"):
        limits.check_device("gpu0")
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_model_memory_is_checked_before_allocation(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 10 * 2**20)  # 10 MiB free
    raw = _raw(tmp_path)
    raw["model"] = {"name": "mlp", "hidden": 2048, "depth": 2}  # ~4.2 M parameters, 5 copies ~ 84 MiB
    cfg = Config.from_dict(raw)
    with pytest.raises(ConfigError, match=r"training model 'mlp' \(4,2\d\d,\d\d\d parameters, 5 copies\) needs "
                                          r"about 0.08 GiB but 0.01 GiB .*model.hidden"):
        Trainer(cfg)


def test_available_memory_reads_the_system():
    free = limits.available_memory()
    assert free is None or 2**20 < free < 2**50


def test_crafted_checkpoint_with_a_huge_model_is_refused(tmp_path):
    cfg = Config.from_dict(_raw(tmp_path))
    trainer = Trainer(cfg)
    trainer.fit()
    tensors, config, state = load_checkpoint(trainer.checkpoint_path)
    config["model"] = {"name": "mlp", "hidden": 60_000, "depth": 60}  # ~2e11 parameters
    crafted = tmp_path / "crafted.safetensors"
    save_checkpoint(crafted, tensors, config, state)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"the model of checkpoint .* parameters.*make the model smaller"):
        load_model(crafted)
    assert time.perf_counter() - start < 10
    res = runner.invoke(app, ["sample", str(crafted), "-o", str(tmp_path / "s.npy")])
    assert res.exit_code == 2 and "make the model smaller" in res.output
    assert not (tmp_path / "s.npy").exists()


def test_sampling_batch_memory_and_n_bound(tmp_path, monkeypatch):
    cfg = Config.from_dict(_raw(tmp_path))
    Trainer(cfg).fit()
    out = tmp_path / "s.npy"
    res = runner.invoke(app, ["sample", str(cfg.run_dir), "-n", str(2**27 + 1), "-o", str(out)])
    assert res.exit_code == 2 and "-n must be in [1, 134,217,728]" in res.output
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 2**30)
    res = runner.invoke(app, ["sample", str(cfg.run_dir), "-n", str(2**27), "-o", str(out)])
    assert res.exit_code == 2 and "sampling (134,217,728 samples of shape (2,))" in res.output
    assert "draw fewer samples" in res.output and not out.exists()
    res = runner.invoke(app, ["sample", str(cfg.run_dir), "--nfe", "100000", "-o", str(out)])
    assert res.exit_code == 2 and "at most 10,000" in res.output


def test_activation_estimate_matches_the_mlp():
    from monge.models import build_model

    with torch.device("meta"):
        meta = build_model("mlp", {"hidden": 96, "depth": 2}, (5,))
    assert limits.activation_elements(meta, (5,)) == 96  # the widest layer, per sample


def _png_header(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    pixels = zlib.compress(b"\0" * min(height * (width + 1), 64))  # rows of (filter byte, pixels), cut short
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_huge_png_is_refused_before_decoding(tmp_path, side):
    from monge.data.images import load_image_folder

    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "huge.png").write_bytes(_png_header(side, side))  # a few bytes claiming side x side pixels
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"huge.png is (10000 x 10000 pixels|too large to decode)"):
        load_image_folder(folder, skip_corrupt=True)  # too large is not "corrupt": never skipped silently
    assert time.perf_counter() - start < 5


def test_small_png_header_helper_is_a_real_png(tmp_path):
    from PIL import Image

    (tmp_path / "ok.png").write_bytes(_png_header(4, 4))
    with Image.open(tmp_path / "ok.png") as im:
        assert im.size == (4, 4)
        assert np.array(im).shape == (4, 4)


def test_image_folder_memory_is_checked_after_the_first_image(tmp_path, monkeypatch):
    from PIL import Image

    from monge.data import images

    for i in range(5):
        Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    read = []
    real = images._read_image
    monkeypatch.setattr(images, "_read_image", lambda path, channels: read.append(path) or real(path, channels))
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 50_000)  # 5 x 64 x 64 x 6 B = 123 kB
    with pytest.raises(ValueError, match=r"the 5 images of .* at 64 x 64 x 1 needs about .*pass a smaller size="):
        images.load_image_folder(tmp_path)
    assert len(read) == 1  # refused after the first image, before the others are read
    assert len(images.load_image_folder(tmp_path, size=16)) == 5  # resized as read: fits


def test_npy_memory_is_checked_from_its_header(tmp_path, monkeypatch):
    from monge.data.sources import build_source

    np.save(tmp_path / "t.npy", np.zeros((1000, 8), np.float32))
    monkeypatch.setattr(np, "load", _header_only(np.load))
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 100_000)  # 8000 values x 16 B = 128 kB
    msg = r"the array .*t.npy \(float32 \(1000, 8\)\) needs about .*a subset of its rows"
    with pytest.raises(ValueError, match=msg):
        build_source({"name": "array", "path": str(tmp_path / "t.npy")})


def _header_only(load):
    def guarded(file, *args, mmap_mode=None, **kwargs):
        assert mmap_mode == "r", "the whole array was read before its size was checked"
        return load(file, *args, mmap_mode=mmap_mode, **kwargs)

    return guarded


def test_a_container_memory_limit_counts(tmp_path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("268435456\n")
    assert limits._cgroup_room(tmp_path) == 768 * 2**20
    (tmp_path / "memory.max").write_text("max\n")
    assert limits._cgroup_room(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    (v1 / "memory" / "memory.usage_in_bytes").write_text("1\n")
    assert limits._cgroup_room(v1) is None
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2147483648\n")
    assert limits._cgroup_room(v1) == 2147483647


@pytest.mark.parametrize("text", [
    "x: " + "[" * 5000 + "]" * 5000,
    "x: " + "{a: " * 3000 + "1" + "}" * 3000,
    "x:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(limits.MAX_RECIPE_DEPTH + 5)),
])
def test_a_deeply_nested_recipe_is_refused_without_recursion(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"nests more than {limits.MAX_RECIPE_DEPTH} levels"):
        load_config(path)
    res = runner.invoke(app, ["train", str(path)])
    assert res.exit_code == 2 and "Traceback" not in res.output and "RecursionError" not in res.output


def test_a_deep_override_key_or_value_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(Config.from_dict(_raw(tmp_path)).to_yaml())
    with pytest.raises(ConfigError, match="nests 4000 levels deep"):
        load_config(path, [".".join(["a"] * 4000) + "=1"])
    with pytest.raises(ConfigError, match="nests more than"):
        load_config(path, ["train.lr=" + "[" * 4000 + "]" * 4000])
    depth_ok = "x:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(limits.MAX_RECIPE_DEPTH - 2))
    assert limits.load_yaml_bounded(depth_ok, "ok")["x"] is not None


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e30, limits.MAX_GUIDANCE * 1.01])
def test_guidance_is_finite_and_bounded(value):
    with pytest.raises(ValueError, match="--guidance must be a finite weight"):
        limits.check_guidance(value)
    assert limits.check_guidance(limits.MAX_GUIDANCE) == limits.MAX_GUIDANCE
    assert limits.check_guidance(0) == 0.0


def test_eval_samples_below_two_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="train.eval_samples must be >= 2"):
        Config.from_dict(_raw(tmp_path, eval_samples=1))


def test_a_negative_mmd_is_explained_under_the_table():
    from monge.evaluate import NEGATIVE_MMD_NOTE, EvalRow, format_table

    rows = [EvalRow("euler", 1, 0.5, -0.002, 1.0), EvalRow("euler", 2, 0.4, 0.01, 1.0)]
    assert NEGATIVE_MMD_NOTE in format_table(rows)
    assert NEGATIVE_MMD_NOTE not in format_table(rows[1:])
