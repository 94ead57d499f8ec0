"""File-system failures in the commands: one-line errors, existing files intact, no empty files."""

import errno
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from monge import outputs as outputs_module
from monge.cli import app
from monge.config import Config
from monge.outputs import atomic_write_bytes, check_output_file, describe_os_error, write_array

runner = CliRunner()


def _recipe(tmp_path, name="io", output_dir=None):
    cfg = Config.from_dict({
        "name": name, "output_dir": str(output_dir or tmp_path / "runs"),
        "data": {"source": "gaussian", "target": "moons"}, "model": {"name": "mlp", "hidden": 8, "depth": 1},
        "train": {"steps": 3, "batch_size": 8, "eval_samples": 20, "progress": False, "checkpoint_every": 0},
        "sample": {"nfe": [1], "adaptive": False}})
    path = tmp_path / f"{name}.yaml"
    path.write_text(cfg.to_yaml())
    return path, cfg


@pytest.fixture()
def run(tmp_path):
    recipe, cfg = _recipe(tmp_path)
    res = runner.invoke(app, ["train", str(recipe), "--no-progress"])
    assert res.exit_code == 0, res.output
    return recipe, cfg


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_empty_files(folder):
    empty = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size == 0]
    assert not empty, empty


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_sampling_keeps_the_old_file(run, tmp_path, monkeypatch):
    _, cfg = run
    out = tmp_path / "samples.npy"
    np.save(out, np.arange(3))
    monkeypatch.setattr(outputs_module.os, "fsync", _enospc)  # the write fails half-way
    res = runner.invoke(app, ["sample", str(cfg.run_dir), "-n", "10", "-o", str(out)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1].startswith("error: cannot access")
    assert "No space left on device; free some disk space" in res.output and "Traceback" not in res.output
    assert np.load(out).tolist() == [0, 1, 2]  # the previous file is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    _no_empty_files(tmp_path)


def test_disk_full_during_training_keeps_the_run(run, tmp_path, monkeypatch):
    recipe, cfg = run
    before = _snapshot(cfg.run_dir)
    monkeypatch.setattr(outputs_module.os, "fsync", _enospc)
    res = runner.invoke(app, ["train", str(recipe), "--resume", "train.steps=6", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "No space left on device" in res.output and "Traceback" not in res.output
    after = _snapshot(cfg.run_dir)
    for name in ("checkpoint.safetensors", "config.yaml"):
        assert after[type(next(iter(after)))(name)] == before[type(next(iter(before)))(name)]
    _no_empty_files(cfg.run_dir)
    assert not list(cfg.run_dir.glob(".*.tmp")) and not (cfg.run_dir / "monge.lock").exists()


def test_disk_full_at_the_start_leaves_no_empty_log(tmp_path, monkeypatch):
    recipe, cfg = _recipe(tmp_path, "fresh")
    import monge.run.logs as train_module

    real_open = train_module.Path.open

    def full_open(self, mode="r", *a, **k):
        fh = real_open(self, mode, *a, **k)
        if self.name == "log.csv" and "w" in mode:
            fh.flush = _enospc
        return fh

    monkeypatch.setattr(train_module.Path, "open", full_open)
    res = runner.invoke(app, ["train", str(recipe), "--no-progress"])
    assert res.exit_code == 2 and "No space left on device" in res.output
    assert not (cfg.run_dir / "log.csv").exists()  # else the folder would count as an existing run
    monkeypatch.undo()
    res = runner.invoke(app, ["train", str(recipe), "--no-progress"])  # room again: the same command works
    assert res.exit_code == 0, res.output


def test_unwritable_run_directory(tmp_path, monkeypatch):
    recipe, _ = _recipe(tmp_path, "ro")
    real_mkdir = os.mkdir

    def denied(path, *a, **k):
        if "ro" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", denied)
    res = runner.invoke(app, ["train", str(recipe), "--no-progress"])
    assert res.exit_code == 2
    assert "Permission denied; check the folder's permissions" in res.output and "Traceback" not in res.output


def test_read_only_file_system_message():
    err = OSError(errno.EROFS, "Read-only file system", "/mnt/runs/x")
    assert describe_os_error(err) == ("cannot access /mnt/runs/x: Read-only file system; the file system is "
                                      "read-only; choose another output folder")


def test_run_directory_below_a_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    recipe, _ = _recipe(tmp_path, "below", output_dir=blocker)
    res = runner.invoke(app, ["train", str(recipe), "--no-progress"])
    assert res.exit_code == 2 and "Not a directory" in res.output and "Traceback" not in res.output
    assert blocker.read_text() == "keep me"


def test_outputs_that_are_folders_or_below_files(run, tmp_path):
    _, cfg = run
    (tmp_path / "adir").mkdir()
    res = runner.invoke(app, ["sample", str(cfg.run_dir), "-n", "5", "-o", str(tmp_path / "adir")])
    assert res.exit_code == 2 and "is a folder; give a file path inside it" in res.output
    (tmp_path / "f.txt").write_text("x")
    res = runner.invoke(app, ["sample", str(cfg.run_dir), "-n", "5", "-o", str(tmp_path / "f.txt" / "s.npy")])
    assert res.exit_code == 2 and "is a file, not a folder" in res.output
    res = runner.invoke(app, ["eval", str(cfg.run_dir), "-n", "20", "--nfe", "1", "--no-adaptive", "-o",
                              str(tmp_path / "adir")])
    assert res.exit_code == 2 and "is a folder" in res.output
    assert (tmp_path / "f.txt").read_text() == "x"


def test_output_is_written_exactly_where_it_says(run, tmp_path):
    _, cfg = run
    target = tmp_path / "out" / "deeper" / "adir"  # no suffix: written as given, folders created
    res = runner.invoke(app, ["sample", str(cfg.run_dir), "-n", "7", "-o", str(target)])
    assert res.exit_code == 0, res.output
    assert target.is_file() and not target.with_suffix(".npy").exists()
    with target.open("rb") as fh:
        assert np.load(fh).shape == (7, 2)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # an ordinary file, not private


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_300_character_name(run, tmp_path):
    recipe, cfg = run
    res = runner.invoke(app, ["train", str(recipe), "name=" + "n" * 300, "--no-progress"])
    assert res.exit_code == 2 and "name is 300 characters" in res.output
    res = runner.invoke(app, ["sample", str(cfg.run_dir), "-n", "5", "-o", str(tmp_path / ("s" * 300 + ".npy"))])
    assert res.exit_code == 2 and "file names are at most 255 bytes" in res.output
    with pytest.raises(ValueError, match="at most 255 bytes"):
        check_output_file(tmp_path / ("d" * 256) / "x.npy")


def test_write_array_csv_needs_a_table(tmp_path):
    with pytest.raises(ValueError, match=r"a CSV holds \(N, D\) rows"):
        write_array(tmp_path / "x.csv", np.zeros((2, 1, 4, 4)))
    write_array(tmp_path / "x.csv", np.eye(2))
    assert np.loadtxt(tmp_path / "x.csv", delimiter=",").tolist() == [[1, 0], [0, 1]]


def test_disk_full_in_an_evaluation_log_leaves_no_empty_file(tmp_path, monkeypatch):
    import monge.run.logs as train_module

    class Full:
        def writerow(self, row):
            _enospc()

        writerows = writerow

    old = tmp_path / "eval.csv"
    old.write_text("step,w2\n1,0.5\n")
    monkeypatch.setattr(train_module.csv, "writer", lambda fh: Full())
    with pytest.raises(OSError, match="No space"):
        train_module.append_csv(tmp_path / "new.csv", ["step"], [[1]])
    assert not (tmp_path / "new.csv").exists()
    with pytest.raises(OSError, match="No space"):
        train_module.append_csv(old, ["step", "w2"], [[2, 0.4]])
    assert old.read_text() == "step,w2\n1,0.5\n"  # an existing log keeps its rows


@pytest.mark.parametrize("kind", ["figure", "image grid"])
def test_an_interrupted_picture_save_keeps_the_previous_picture(tmp_path, monkeypatch, kind):
    """Figures and PNG grids go through the atomic writer: a save that fails at the rename (a
    killed process or a full disk) leaves the previous file whole and no temporary file."""
    import torch

    from monge.imageio import save_image_grid
    from monge.plots import plot_trajectories

    path = tmp_path / "picture.png"
    path.write_bytes(b"previous")

    def save():
        if kind == "figure":
            plot_trajectories({"m": torch.randn(3, 5, 2)}, path)
        else:
            save_image_grid(torch.rand(4, 1, 8, 8), path)

    def refuse(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(outputs_module.os, "replace", refuse)
    with pytest.raises(OSError):
        save()
    assert path.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == ["picture.png"]
    monkeypatch.undo()
    save()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind
