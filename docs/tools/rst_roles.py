"""A griffe extension: the reST markup of monge's docstrings as Markdown for mkdocstrings.

monge's docstrings are numpy-style with reST inline roles (``:func:`~monge.x.f```, ``:math:`x```,
double backticks, ``.. math::`` blocks). mkdocstrings renders Markdown, so each docstring is
rewritten once when griffe loads it: roles become inline code (``:math:`` becomes arithmatex
``\\(...\\)``), ``.. math::`` blocks become ``\\[...\\]`` blocks.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")
_SUP = re.compile(r":sup:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def _xref(match: re.Match) -> str:
    short, target = match.group(1), match.group(2).strip()
    if target.startswith("~"):
        short, target = "~", target[1:]
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _math_blocks(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _MATH_BLOCK.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = m.group("indent"), [m.group("first")] if m.group("first").strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            if lines[i].strip():
                body.append(lines[i].strip())
            elif body:
                break
            i += 1
        out += ["", f"{indent}\\[", *(f"{indent}{b}" for b in body), f"{indent}\\]", ""]
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """The Markdown of a docstring written with reST roles (see the module docstring)."""
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", text)
    text = _XREF.sub(_xref, text)
    text = _SUP.sub(lambda m: f"<sup>{m.group(1)}</sup>", text)
    return _LITERAL.sub(lambda m: f"`{m.group(1)}`", text)


class RstRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
