"""The README's command-line walk-through runs as written, in order, from a fresh directory, and
its self-contained Python examples run (with their step counts cut).

Each ``monge ...`` line of the fenced block under "## Command line" runs in a temporary copy of
``configs/`` with ``MONGE_QUICK=1`` (the README's documented way to cut the steps); every command
must succeed, every ``runs/...`` path the block names must exist afterwards, and nothing may be
written outside ``runs/``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_commands(text: str, section: str = "## Command line") -> list[str]:
    """The commands (comments stripped) of the first ```bash block after ``section``."""
    start = text.index(section + "\n")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None, f"no ```bash block under {section!r} in README.md"
    lines = [line.split(" #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def named_outputs(text: str, section: str = "## Command line") -> set[str]:
    """Every ``runs/...`` path the block names (arguments and ``-> path`` comments)."""
    start = text.index(section + "\n")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.DOTALL).group(1)
    return {m.rstrip(".,)") for m in re.findall(r"runs/[\w./-]+", block)}


def test_block_is_found_and_names_the_compare_runs():
    commands = readme_commands(README.read_text())
    assert all(c.startswith("monge ") for c in commands), commands
    trained = {Path(shlex.split(c)[2]).stem for c in commands if c.startswith("monge train")}
    compare = next(c for c in commands if c.startswith("monge eval") and "--plot" in c)
    for run in (a for a in shlex.split(compare)[2:] if a.startswith("runs/") and not a.endswith(".png")):
        assert Path(run).name in trained, f"{compare!r} compares {run}, which no earlier command trains"


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
    text = README.read_text()
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env = {**os.environ, "MONGE_QUICK": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    for command in readme_commands(text):
        args = [sys.executable, "-m", "monge", *shlex.split(command)[1:]]
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, (
            f"{command!r} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
        if " --plot " in command:
            assert "wrote the W2-vs-NFE plot to runs/w2.png" in proc.stdout
    for path in named_outputs(text):
        assert (tmp_path / path).exists(), f"the README names {path}, which the commands did not write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "runs"], "a command wrote outside runs/"


def python_blocks(text: str) -> dict[str, str]:
    """The README's ```python blocks, keyed ``"<heading> #k"`` (the k-th block under a heading)."""
    out: dict[str, str] = {}
    heading, fence, lines, count = "", None, [], 0
    for line in text.splitlines():
        if fence is None and line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif fence is not None and line.startswith("```"):
            if fence == "python":
                count += 1
                out[f"{heading} #{count}"] = "\n".join(lines) + "\n"
            fence = None
        elif fence is not None:
            lines.append(line)
        elif line.startswith("#"):
            heading, count = line.lstrip("# ").strip(), 0
    return out


#: The self-contained examples, each with the edits that make it a quick run (every edit must
#: apply, so an example that changes is not silently skipped). The other blocks are fragments
#: around a user's own model (a diffusers U-Net, a data set of images).
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "Quick start (Python) #1": [("trange(2000,", "trange(20,")],
    "Quick start (Python) #2": [('load_config("configs/8gaussians-moons-otcfm.yaml")',
                                  'load_config("configs/8gaussians-moons-otcfm.yaml", ["train.steps=20"])')],
    "One-step generators #1": [('"steps": 3000', '"steps": 20')],
    "Inverse problems #1": [("nfe=100", "nfe=4"), ("load_digits(16).data[:8]", "load_digits(16).data[:2]")],
}


@pytest.mark.slow
@pytest.mark.parametrize("heading", sorted(EXAMPLES))
def test_readme_python_examples_run(tmp_path, heading):
    blocks = python_blocks(README.read_text())
    assert heading in blocks, f"README.md has no python block under {heading!r}: {sorted(blocks)}"
    code = blocks[heading]
    for old, new in EXAMPLES[heading]:
        assert old in code, f"the example under {heading!r} no longer contains {old!r}; update EXAMPLES"
        code = code.replace(old, new)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MONGE_QUICK": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    if "runs/digits-independent" in code:  # the example restores digits with a trained run
        setup = [sys.executable, "-m", "monge", "train", "configs/digits-independent.yaml"]
        proc = subprocess.run(setup, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, f"the example under {heading!r} failed:\n{proc.stderr[-3000:]}"
