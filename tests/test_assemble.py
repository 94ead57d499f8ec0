"""bench/assemble.py: the opening table of BENCHMARKS.md is built from the results files' headlines."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assemble():
    spec = importlib.util.spec_from_file_location("bench_assemble", ROOT / "bench" / "assemble.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _headline(goal="W2 @2 <= 0.3", result="0.25 | 0.28", met="yes", date="2026-11-23") -> str:
    return f"<!-- headline\ngoal: {goal}\nresult: {result}\nmet: {met}\ndate: {date}\n-->\n\n"


def _table(text: str) -> list[list[str]]:
    """The rows of the first table in ``text``, split on unescaped pipes."""
    lines = text.splitlines()
    start = lines.index("| bench | goal | latest result | met | date | command |")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.replace("\\|", "\0").strip("|").split("|")])
    return [[c.replace("\0", "\\|") for c in row] for row in rows]


def test_table_from_headlines_in_section_order(assemble, tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "ot_solvers.md").write_text(_headline(goal="no slower than POT", result="0.95x", met="partly",
                                                 date="2026-11-30") + "# OT\n\ntable\n")
    (res / "peers.md").write_text(_headline() + "# Peers\n\nbody\n")
    (res / "zeta.md").write_text("# Zeta\n\nno headline here\n")
    text = assemble.assemble(res, tmp_path / "B.md")

    rows = _table(text)
    assert [r[0] for r in rows[:3]] == [f"[{assemble.SECTIONS['peers'][0]}](results/peers.md)",
                                        f"[{assemble.SECTIONS['ot_solvers'][0]}](results/ot_solvers.md)",
                                        "[zeta](results/zeta.md)"]
    assert rows[0][1:] == ["W2 @2 <= 0.3", "0.25 \\| 0.28", "yes", "2026-11-23", "`python bench/peers.py`"]
    assert rows[1][1:5] == ["no slower than POT", "0.95x", "partly", "2026-11-30"]
    # a file without a headline is listed as such, not skipped
    assert rows[2][1:] == ["**no headline**", "–", "–", "–", "–"]
    # sections not produced yet are rows too, with their command
    samplers = next(r for r in rows if r[0] == assemble.SECTIONS["samplers"][0])
    assert samplers[2] == "not produced yet" and samplers[5] == "`python bench/samplers.py`"
    # the table comes first; the sections follow without their headline block
    assert text.index("| bench |") < text.index("## Peers") < text.index("## OT") < text.index("## Zeta")
    assert "<!-- headline" not in text and "goal:" not in text
    assert text.split("## Peers", 1)[1].startswith("\n\nbody\n")


def test_read_headline_splits_block_from_text(assemble, tmp_path):
    p = tmp_path / "x.md"
    p.write_text("\n" + _headline(goal="a: b") + "# X\n")
    h, rest = assemble.read_headline(p)
    assert h == assemble.Headline(goal="a: b", result="0.25 | 0.28", met="yes", date="2026-11-23")
    assert rest == "# X\n"
    p.write_text("# X\n\nplain\n")
    assert assemble.read_headline(p) == (None, "# X\n\nplain\n")


@pytest.mark.parametrize(("text", "message"), [
    (_headline(met="mostly"), "met is 'mostly'"),
    (_headline(date="1 Dec 2026"), "not YYYY-MM-DD"),
    (_headline(date="2026-02-30"), "not YYYY-MM-DD"),
    (_headline(result=""), "'result' is empty"),
    (_headline(goal="x" * 151), "151 characters"),
    ("<!-- headline\ngoal: g\nresult: r\nmet: yes\n-->\n", "lacks date"),
    ("<!-- headline\ngoal: g\ngoal: h\nresult: r\nmet: yes\ndate: 2026-11-23\n-->\n", "'goal' twice"),
    ("<!-- headline\ngoal: g\nresult: r\nmet: yes\ndate: 2026-11-23\nnote: n\n-->\n", "'note: n'"),
    ("<!-- headline\ngoal: g\nresult: r\nmet: yes\ndate: 2026-11-23\n", "not closed"),
    ("<!-- headline goal: g -->\n", "stand alone"),
    ("# Title\n\n" + _headline(), "first thing in the file"),
])
def test_malformed_headline_is_an_error_naming_the_file(assemble, tmp_path, text, message):
    res = tmp_path / "results"
    res.mkdir()
    (res / "peers.md").write_text(_headline() + "# Peers\n")
    (res / "bad_one.md").write_text(text + "# Bad\n")
    out = tmp_path / "B.md"
    with pytest.raises(ValueError, match=message) as info:
        assemble.assemble(res, out)
    assert "bad_one.md" in str(info.value)
    assert not out.exists()  # nothing half-written
    with pytest.raises(SystemExit, match="bad_one.md"):
        assemble.main(["--results", str(res), "--out", str(out)])


def test_committed_results_carry_headlines(assemble):
    """Every results file in the repository has a well-formed headline (a bench rerun drops it:
    write it again from the new figures)."""
    files = sorted((ROOT / "bench" / "results").glob("*.md"))
    assert files
    missing = [p.name for p in files if assemble.read_headline(p)[0] is None]
    assert not missing, f"results files without a headline: {missing}"
