"""The run layer stays readable: every function of ``monge/train.py`` and ``monge/run/`` fits on one
screen, ``train.py`` stays under 300 lines and the command line (``cli.py``) under 400."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "monge"
RUN_LAYER = [PACKAGE / "train.py", *sorted((PACKAGE / "run").glob("*.py"))]
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = {"train.py": 300, "cli.py": 400}


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``"name (n lines, line k)"`` for each function or method of ``path`` longer than ``limit`` lines
    (decorators excluded, docstring included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append(f"{node.name} ({n} lines, line {node.lineno})")
    return out


def test_the_run_layer_is_found():
    assert len(RUN_LAYER) > 5 and all(p.exists() for p in RUN_LAYER)


@pytest.mark.parametrize("path", RUN_LAYER, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_function_of_the_run_layer_exceeds_60_lines(path):
    assert long_functions(path) == [], f"split these functions of {path.name}"


def test_the_length_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"class A:\n    def f(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n")
    assert long_functions(tmp_path / "long.py") == [f"f ({MAX_FUNCTION_LINES + 1} lines, line 2)"]


@pytest.mark.parametrize("name", sorted(MAX_FILE_LINES))
def test_file_stays_under_its_line_budget(name):
    lines = len((PACKAGE / name).read_text().splitlines())
    assert lines < MAX_FILE_LINES[name], f"{name} has {lines} lines (goal: under {MAX_FILE_LINES[name]})"


def test_test_modules_have_unique_names():
    """Without ``__init__.py`` files pytest imports ``tests/a/test_x.py`` and ``tests/b/test_x.py`` under one
    name and stops at collection: every test module's file name is unique."""
    names = [p.name for p in (PACKAGE.parents[1] / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
