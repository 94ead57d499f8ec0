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
     "monge.run.rundir", "monge.run.signals", "monge.ot._checks", "monge.models.embeddings",
     "monge.models.conditioning", "monge.limits",
     "monge.outputs", "monge.quick", "monge.locate", "monge.progress"),
    ("monge.ot", "monge.paths", "monge.pairing", "monge.imageio"),
    # an objective's targets may be conversions of the path's velocity (monge.predictions)
    ("monge.predictions", "monge.data", "monge.metrics", "monge.objectives"),
    ("monge.couplings", "monge.models"),
    # latent spaces: an autoencoder (monge.models) and encoded data (monge.data) a flow works in
    ("monge.latent",),
    # monge.flow_likelihood integrates the change of variables with the samplers, so it sits beside them
    # (above monge.metrics, which holds its sampler-free parts)
    ("monge.samplers", "monge.flow_likelihood"),
    # inverse problems: operators, exact GMM posteriors and posterior samplers on a trained flow
    ("monge.inverse",),
    ("monge.config", "monge.rundata"),
    ("monge.evaluate", "monge.plots", "monge.table_eval"),
    # the pieces a training run is made of (batches, resume, evaluation cadence, load_model, ...)
    ("monge.run",),
    ("monge.train", "monge.generate"),
    ("monge.restore",),
    ("monge.rectify", "monge.demo", "monge.demo_images", "monge.demo_latent", "monge.demo_report"),
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
    assert "monge.run.load" in imports("monge.generate", lazy=True)
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    with pytest.raises(AssertionError):
        layer_of("monge_other")


# ------------------------------------------------------------------ the OT layer writes no files
#: Calls that open, write, move or delete files: a solver under ``monge/ot/`` takes tensors and
#: returns results (or bytes); the files of a run are kept by the layers above it.
#: As a bare name (``open(...)``) or as an attribute (``p.write_bytes(...)``, ``torch.save(...)``):
NAME_CALLS = frozenset({"open", "atomic_write_bytes", "save_file", "load_file", "rmtree", "fdopen", "mkstemp",
                        "NamedTemporaryFile"})
#: only as an attribute (``os.replace``, ``path.unlink``; a bare ``replace`` is ``dataclasses.replace``):
FILE_CALLS = NAME_CALLS | frozenset({"write_bytes", "write_text", "read_bytes", "read_text", "save", "replace",
                                     "rename", "unlink", "remove", "mkdir", "makedirs", "touch"})
#: Modules and names whose import alone says the code works with files (``safetensors.torch.save``
#: and ``load`` make and read bytes: allowed).
FILE_MODULES = frozenset({"shutil", "tempfile", "monge.outputs", "monge.run.checkpoint"})
FILE_NAMES = frozenset({"save_file", "load_file", "atomic_write_bytes", "rmtree", "mkstemp", "NamedTemporaryFile"})


def file_access(source: str) -> list[str]:
    """``"line: what"`` of every file call (by name or attribute: ``open(...)``, ``p.write_bytes(...)``,
    ``torch.save(...)``, ``safetensors.torch.save_file(...)``, ``os.replace(...)``) and file-module import
    in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            by_name = isinstance(f, ast.Name) and f.id in NAME_CALLS
            if by_name or (isinstance(f, ast.Attribute) and f.attr in FILE_CALLS):
                name = f.id if by_name else f.attr
                found.append(f"{node.lineno}: {name}()")
        elif isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name in FILE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            names = {mod} | {f"{mod}.{a.name}" for a in node.names} | {a.name for a in node.names}
            if node.level:  # relative: monge.<mod>
                names |= {f"monge.{mod}", *(f"monge.{a.name}" for a in node.names)}
            hit = sorted(n for n in names if n in FILE_MODULES or n in FILE_NAMES)
            found += [f"{node.lineno}: from {'.' * node.level}{mod} import {h}" for h in hit]
    return found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m == "monge.ot" or m.startswith("monge.ot.")))
def test_the_ot_layer_touches_no_files(module):
    assert file_access(MODULES[module].read_text()) == [], (
        f"{module} works with files; return bytes or tensors and let monge.couplings.maps (or the run layer) "
        "keep them")


def test_the_file_check_finds_planted_violations():
    planted = {
        "open('x', 'wb')": "open()",
        "from pathlib import Path\nPath('x').write_bytes(b'')": "write_bytes()",
        "p.write_text('')": "write_text()",
        "import torch\ntorch.save({}, 'x.pt')": "save()",
        "from safetensors.torch import save_file\nsave_file({}, 'x')": "save_file",
        "import os\nos.replace('a', 'b')": "replace()",
        "from ..outputs import atomic_write_bytes": "atomic_write_bytes",
        "import shutil": "import shutil",
    }
    for source, what in planted.items():
        found = file_access(source)
        assert found and any(what in f for f in found), (source, found)
    assert file_access("import torch\nx = torch.zeros(3).sum()\nb = st_save({'x': x})\nc = replace(cfg, a=1)") == []


@pytest.mark.parametrize("module", ["monge.generate", "monge.restore", "monge.evaluate", "monge.run.load"])
def test_sampling_evaluation_and_restoration_never_import_the_trainer(module):
    """load_model lives in monge.run.load: reading a run needs none of the training loop."""
    seen, todo = set(), [module]
    while todo:
        for t in imports(todo.pop(), lazy=True) - seen:
            seen.add(t)
            todo.append(t)
    assert "monge.train" not in seen
