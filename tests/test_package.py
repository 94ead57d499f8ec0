"""``import monge``: the everyday names, each the object of its home module, imported on first use."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import monge

SRC = Path(__file__).resolve().parents[1] / "src"
NAMES = [name for name in monge.__all__ if name != "__version__"]


def test_the_everyday_names_are_public():
    for name in ("COUPLINGS", "PATHS", "SAMPLERS", "OBJECTIVES", "MODELS", "sample", "Trainer", "load_model",
                 "Config", "load_config", "build_model", "build_source"):
        assert name in monge.__all__, name


@pytest.mark.parametrize("name", NAMES)
def test_each_name_is_its_home_modules_object_and_listed_by_dir(name):
    home = importlib.import_module(monge._HOME[name])
    assert getattr(monge, name) is getattr(home, name)
    assert name in dir(monge)


def test_no_name_is_shadowed_by_a_submodule():
    """A name equal to a submodule's would turn into the module once that submodule is imported."""
    for name in NAMES:
        assert not (SRC / "monge" / f"{name}.py").exists() and not (SRC / "monge" / name).is_dir(), name


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        monge.not_a_name  # noqa: B018


def test_import_monge_imports_nothing_heavy():
    code = "import sys, monge; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('monge.')))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
