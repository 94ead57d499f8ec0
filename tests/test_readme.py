"""The README's command-line walk-through runs as written, in order, from a fresh directory.

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
        assert proc.returncode == 0, f"{command!r} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        if " --plot " in command:
            assert "wrote the W2-vs-NFE plot to runs/w2.png" in proc.stdout
    for path in named_outputs(text):
        assert (tmp_path / path).exists(), f"the README names {path}, which the commands did not write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "runs"], "a command wrote outside runs/"
