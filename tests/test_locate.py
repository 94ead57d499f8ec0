import pytest

from monge.locate import CHECKPOINT_NAME, check_checkpoint_path, missing_checkpoint, runs_under


def _run(path):
    path.mkdir(parents=True)
    (path / CHECKPOINT_NAME).write_bytes(b"x")
    return path


def test_a_directory_of_runs_names_them(tmp_path):
    demo = tmp_path / "demo"
    a, b = _run(demo / "independent"), _run(demo / "exact_ot")
    assert runs_under(demo) == sorted([a, b])
    msg = missing_checkpoint(demo)
    assert "holds 2 runs" in msg and str(a) in msg and str(b) in msg and f"e.g. {b}" in msg
    assert missing_checkpoint(a) is None and missing_checkpoint(a / CHECKPOINT_NAME) is None


def test_nested_runs_and_empty_directory(tmp_path):
    _run(tmp_path / "demo" / "exact_ot" / "distill")
    assert runs_under(tmp_path / "demo") == [tmp_path / "demo" / "exact_ot" / "distill"]
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoint.safetensors" in missing_checkpoint(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        check_checkpoint_path(tmp_path / "nothing")
