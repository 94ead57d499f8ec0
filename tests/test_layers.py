"""The import graph of monge: no cycle, and no import from a lower layer to a higher one.

Run ``python -m pytest tests/test_layers.py -q`` to check it; a failure names the offending edge.
Imports under ``if TYPE_CHECKING:`` are not run and are ignored; imports inside functions (lazy
imports) must respect the layers too, and may close a cycle only inside one family (package).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Layers from the bottom: a module may import from its own layer or below, never above.
LAYERS: list[tuple[str, ...]] = [
    # the run layer's file and process plumbing (no monge imports above this layer) sits at the bottom
    ("monge", "monge.registry", "monge._validation", "monge.run.distributed", "monge.ema", "monge.run.checkpoint",
     "monge.run.rundir", "monge.ot._checks", "monge.models.embeddings", "monge.models.conditioning", "monge.limits",
     "monge.outputs", "monge.quick", "monge.locate", "monge.progress"),
    ("monge.ot", "monge.paths", "monge.pairing", "monge.imageio"),
    # an objective's targets may be conversions of the path's velocity (monge.predictions)
    ("monge.predictions", "monge.data", "monge.metrics", "monge.objectives"),
    ("monge.couplings", "monge.models"),
    # monge.likelihood integrates the change of variables with the samplers, so it sits beside them
    # (above monge.metrics, which holds its sampler-free parts)
    ("monge.samplers", "monge.likelihood"),
    # inverse problems: operators, exact GMM posteriors and posterior samplers on a trained flow
    ("monge.inverse",),
    ("monge.config", "monge.rundata"),
    ("monge.evaluate", "monge.plots"),
    # the pieces a training run is made of (batches, resume, evaluation cadence, load_model, ...)
    ("monge.run",),
    ("monge.train", "monge.generate"),
    ("monge.restore",),
    ("monge.reflow", "monge.demo", "monge.demo_images", "monge.demo_report"),
    ("monge.cli", "monge.__main__"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "monge").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    """The layer of the longest matching prefix in :data:`LAYERS`."""
    best, found = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), i
    if found is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return found


def family(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level == 0:
        names = [node.module or ""]
    else:
        pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [n for n in names if n in MODULES and n != module]


def imports(module: str, lazy: bool) -> set[str]:
    """Modules of monge imported by ``module`` at import time (and in functions with ``lazy``)."""
    path = MODULES[module]
    found: set[str] = set()

    def visit(body: list[ast.stmt], top: bool) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)) and (top or lazy):
                found.update(_targets(module, path, node))
            in_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for field in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    visit(sub, top and not in_function)

    visit(ast.parse(path.read_text()).body, True)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_at_import_time():
    graph = {m: imports(m, lazy=False) for m in MODULES}
    assert _cycles(graph) == []


def test_lazy_imports_close_cycles_only_inside_one_family():
    graph = {m: imports(m, lazy=True) for m in MODULES}
    crossing = [c for c in _cycles(graph) if len({family(m) for m in c}) > 1]
    assert crossing == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    mine = layer_of(module)
    upward = sorted(t for t in imports(module, lazy=True) if layer_of(t) > mine)
    assert upward == [], f"{module} (layer {mine}) imports from higher layers: {upward}"


def test_the_checker_sees_edges():
    """Guard against a checker that finds nothing: known edges are found."""
    assert "monge.couplings.base" in imports("monge.couplings.exact", lazy=False)
    assert "monge.train" in imports("monge.cli", lazy=True)
    assert "monge.run.load" in imports("monge.cli", lazy=True)
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    with pytest.raises(AssertionError):
        layer_of("monge_other")


@pytest.mark.parametrize("module", ["monge.generate", "monge.restore", "monge.evaluate", "monge.run.load"])
def test_sampling_evaluation_and_restoration_never_import_the_trainer(module):
    """load_model lives in monge.run.load: reading a run needs none of the training loop."""
    seen, todo = set(), [module]
    while todo:
        for t in imports(todo.pop(), lazy=True) - seen:
            seen.add(t)
            todo.append(t)
    assert "monge.train" not in seen
