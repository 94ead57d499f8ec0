"""The docstrings' reST roles as Markdown for the API pages (docs/tools/rst_roles.py)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("griffe")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs" / "tools"))
from rst_roles import rst_to_markdown  # noqa: E402


def test_roles_become_code_and_math():
    text = "See :func:`~monge.samplers.sample` and :class:`monge.couplings.Coupled`, ``x_t`` at :math:`t=0`."
    assert rst_to_markdown(text) == "See `sample` and `monge.couplings.Coupled`, `x_t` at \\(t=0\\)."


def test_math_block_becomes_a_display_block():
    text = "Intro.\n\n    .. math:: x_t = t x_1\n        + (1 - t) x_0.\n\n    After."
    out = rst_to_markdown(text)
    assert "    \\[\n    x_t = t x_1\n    + (1 - t) x_0.\n    \\]" in out
    assert out.rstrip().endswith("After.") and ".. math::" not in out
