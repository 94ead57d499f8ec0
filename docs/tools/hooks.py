"""MkDocs hooks of the monge site: the gallery, the benchmark headline and the changelog pages.

At each build the scripts in ``examples/`` run (``MONGE_QUICK=1`` unless the environment sets it,
each in a temporary folder with a time limit); their text output and the figures they write become
``gallery/<script>.md``. ``benchmarks.md`` is the headline table of ``bench/results`` (the one
``bench/assemble.py`` opens BENCHMARKS.md with) and ``changelog.md`` is CHANGELOG.md. The pages are
generated in memory: nothing is written into ``docs/``. A failing example fails the build.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rst_roles import rst_to_markdown  # noqa: E402 (the folder of this hook is not a package)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: Seconds one example may run.
TIMEOUT = int(os.environ.get("MONGE_GALLERY_TIMEOUT", "600"))


def _docstring(path: Path) -> tuple[str, str]:
    """Title (first line) and body of a script's module docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or path.stem
    title, _, body = rst_to_markdown(doc).partition("\n")
    return title.strip().rstrip("."), body.strip()


def _run(script: Path, folder: Path) -> tuple[str, float]:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.setdefault("MONGE_QUICK", "1")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PluginError(f"gallery: {script.name} ran past {TIMEOUT} s (MONGE_GALLERY_TIMEOUT)") from None
    if done.returncode != 0:
        raise PluginError(f"gallery: {script.name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - start


def _example_page(script: Path, out: str, seconds: float, figures: list[str]) -> str:
    title, body = _docstring(script)
    quick = os.environ.get("MONGE_QUICK", "1") == "1"
    lines = [f"# {title}", "", body, "",
             f"Run it: `python examples/{script.name}`" + (" (`MONGE_QUICK=1` for a smoke run in seconds)." if quick
                                                           else "."), ""]
    for fig in figures:
        lines += [f"![{script.stem}: {fig}]({script.stem}/{fig})", ""]
    mode = "quick mode (`MONGE_QUICK=1`): the figures are a smoke run, not results" if quick else "full mode"
    lines += [f"Output (this build, {mode}, {seconds:.0f} s):", "", "```text", out.rstrip() or "(no output)", "```",
              "", "??? example \"The script\"", "", "    ```python"]
    lines += [f"    {line}" if line else "" for line in script.read_text().splitlines()]
    lines += ["    ```", ""]
    return "\n".join(lines)


def _gallery(config, files: Files) -> None:
    scripts = sorted(EXAMPLES.glob("*.py"))
    index = ["# Gallery", "",
             "Small scripts in `examples/`, each run when the site is built (quick mode: seconds each); "
             "every page shows the figures and the output of this build, and the script.", ""]
    for script in scripts:
        with tempfile.TemporaryDirectory() as tmp:
            out, seconds = _run(script, Path(tmp))
            figures = sorted(p.name for p in Path(tmp).glob("*.png"))
            for fig in figures:
                files.append(File.generated(config, f"gallery/{script.stem}/{fig}",
                                            content=(Path(tmp) / fig).read_bytes()))
        files.append(File.generated(config, f"gallery/{script.stem}.md",
                                    content=_example_page(script, out, seconds, figures)))
        title, body = _docstring(script)
        index += [f"## [{title}]({script.stem}.md)", "", body.split("\n\n")[0], ""]
        if figures:
            index += [f"[![{title}]({script.stem}/{figures[0]}){{ width=\"360\" }}]({script.stem}.md)", ""]
    files.append(File.generated(config, "gallery/index.md", content="\n".join(index)))


def _benchmarks(config, files: Files) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from assemble import SECTIONS, headline_table, read_headline
    finally:
        sys.path.pop(0)
    results = sorted((ROOT / "bench" / "results").glob("*.md"))
    rows = []
    for path in results:
        title, command = SECTIONS.get(path.stem, (path.stem, ""))
        rows.append((title, "#", read_headline(path)[0], command))
    table = [re.sub(r"\[([^\]]*)\]\(#\)", r"\1", line) for line in headline_table(rows)]
    text = ["# Benchmarks", "",
            "Each bench's goal, latest result and verdict (`met`), from the headline at the top of its "
            "file in `bench/results/`; the full sections, with the tables, figures and the command of each, "
            "are in `BENCHMARKS.md` of the repository (`python bench/assemble.py` builds it).", "", *table, ""]
    files.append(File.generated(config, "benchmarks.md", content="\n".join(text)))


def on_config(config):
    """The gallery's pages in the navigation, under the ``Gallery`` entry, titled by their docstrings."""
    skip = os.environ.get("MONGE_DOCS_SKIP_GALLERY") == "1"
    for i, entry in enumerate(config.nav or []):
        if isinstance(entry, dict) and "Gallery" in entry:
            pages = [] if skip else [{_docstring(s)[0]: f"gallery/{s.stem}.md"} for s in sorted(EXAMPLES.glob("*.py"))]
            config.nav[i] = {"Gallery": ["gallery/index.md", *pages]}
    return config


def on_files(files: Files, config) -> Files:
    if os.environ.get("MONGE_DOCS_SKIP_GALLERY") == "1":  # for a quick look at the other pages
        files.append(File.generated(config, "gallery/index.md", content="# Gallery\n\n(skipped in this build)\n"))
    else:
        _gallery(config, files)
    _benchmarks(config, files)
    files.append(File.generated(config, "changelog.md", content=(ROOT / "CHANGELOG.md").read_text()))
    return files
