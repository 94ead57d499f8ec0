"""Assemble BENCHMARKS.md from the sections in bench/results/*.md.

Usage: ``python bench/assemble.py [--results bench/results] [--out BENCHMARKS.md]``

The output opens with one table, a row per results file: its goal, latest result, whether the
goal was met, and the date, read from the *headline* at the top of the file::

    <!-- headline
    goal: monge's best W2 at 2 NFE <= TorchCFM OT-CFM's at 8 NFE
    result: 0.329 vs 0.423 on moons, 0.266 vs 0.267 on checkerboard
    met: yes
    date: 2026-11-23
    -->

(one ``key: value`` line each, keys exactly ``goal``, ``result``, ``met`` (one of
:data:`MET`) and ``date`` (``YYYY-MM-DD``), values of at most :data:`MAX_CELL` characters).
A file without a headline is listed as "no headline"; a malformed one is a ``ValueError``
naming the file. Bench scripts rewrite their results file whole, so a rerun drops the
headline until it is written again from the new figures.

The sections follow, known ones in a fixed order (:data:`SECTIONS`), then any other result
file alphabetically. Each section is copied as written by its script (which records the command
that produced it), without its headline; headings are shifted one level down and image links
are rewritten relative to the output file. A missing section is listed with the command that
would produce it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_CELL", "MET", "SECTIONS", "Headline", "assemble", "headline_table", "main",
           "read_headline"]

#: result file stem -> (title, command that writes it)
SECTIONS: dict[str, tuple[str, str]] = {
    "peers": ("Flow matching vs TorchCFM and flow_matching", "python bench/peers.py"),
    "peers_samplers": ("Diffusion samplers vs diffusers' schedulers", "python bench/peers_samplers.py"),
    "ot_solvers": ("OT solvers vs POT and GeomLoss", "python bench/ot_solvers.py"),
    "samplers": ("Few-step samplers and step schedules", "python bench/samplers.py"),
    "couplings": ("Couplings", "python bench/couplings.py"),
    "couplings_quality": ("Couplings: sample quality on held-out data", "python bench/couplings_quality.py"),
    "ot_high_nfe": ("Why OT couplings lose at high NFE on digits: ablation", "python bench/ot_high_nfe.py"),
    "coupling_cost": ("Step cost of the light couplings (wcfm, knn_immiscible)", "python bench/coupling_cost.py"),
    "semidiscrete": ("Semi-discrete OT solver vs OTT-JAX", "python bench/semidiscrete.py"),
    "semidiscrete_convergence": (
        "Semi-discrete fit: convergence on clustered targets",
        "python bench/semidiscrete_convergence.py",
    ),
    "semidiscrete_pairing": ("Global OT pairing: step cost", "python bench/semidiscrete_pairing.py"),
    "global_scope": ("Global-scope exact OT under 2 processes: step cost", "python bench/global_scope.py"),
    "auction": ("Certified auction assignment", "python bench/ot_solvers.py --auction"),
    "likelihood": ("Likelihood vs closed forms and flow_matching", "python bench/likelihood.py"),
    "few_step": (
        "One- and few-step generators from scratch (mean_flow, shortcut)",
        "python bench/few_step.py --reflow",
    ),
    "few_step_digits": (
        "One- and few-step generators from scratch on digits",
        (
            "python bench/few_step.py --source gaussian --target digits --steps 5000 --n-eval 1000 "
            "--eval-seeds 2 --out bench/results/few_step_digits.md"
        ),
    ),
    "couplings_quality_semidiscrete": (
        "Couplings: global OT (semidiscrete_ot) on held-out data",
        (
            "python bench/couplings_quality.py --tasks moons 25gaussians gmm32 digits --couplings "
            "independent exact_ot semidiscrete_ot --n-train 5000 --threads 1 "
            "--out bench/results/couplings_quality_semidiscrete.md"
        ),
    ),
    "digits": ("Digits: couplings and the DPM-OT expressway", "monge demo --data digits"),
    "inverse": ("Inverse problems: posterior sampling with a flow prior", "python bench/inverse.py"),
    "images": ("Images: couplings on digits and textures, pixel U-Net and latent MLP", "python bench/images.py"),
    "images_latent": (
        "Images: latent flows on digits and textures (autoencoder + MLP)",
        "python bench/images.py --spaces latent --latent-steps 8000 --out bench/results/images_latent.md",
    ),
    "images_pixel": (
        "Images: pixel U-Net on digits and textures, independent vs entropic semi-discrete cells",
        (
            "python bench/images.py --spaces pixel --methods independent sd_entropic --pixel-steps 3000 "
            "--segments 6 --out bench/results/images_pixel.md"
        ),
    ),
    "images_field": (
        "Images: why entropic cells lose adaptively on textures (samples and field fit per time)",
        (
            "python bench/images_field.py --datasets textures --methods independent sd_entropic --seeds 0 "
            "--pixel-steps 3000 --segments 6 --points 250 --out bench/results/images_field.md"
        ),
    ),
    "images_quick": ("Images: quick run (smoke settings)", "python bench/images.py --quick"),
    "tables": ("Real tables: monge vs Forest-Flow and SDV", "python bench/tables.py"),
}

#: values of a headline's ``met``: ``n/a`` where the bench states no goal (it only reports)
MET = ("yes", "no", "partly", "n/a")
#: longest value of a headline field, in characters
MAX_CELL = 150

_KEYS = ("goal", "result", "met", "date")
_OPEN, _CLOSE = "<!-- headline", "-->"
_IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)(\))")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Headline:
    """The one-line summary of a results file: its goal, latest result, verdict and date."""

    goal: str
    result: str
    met: str
    date: str


def read_headline(path: str | Path) -> tuple[Headline | None, str]:
    """Split a results file into its headline (``None`` if it has none) and the rest of its text.

    Raises ``ValueError`` naming ``path`` when the headline is malformed or not at the top.
    """
    path = Path(path)
    text = path.read_text()
    body = text.lstrip()
    if not body.startswith(_OPEN):
        if _OPEN in text:
            raise ValueError(f"{path}: the '{_OPEN}' block must be the first thing in the file")
        return None, text
    lines = body.splitlines()
    if lines[0].strip() != _OPEN:
        raise ValueError(f"{path}: '{_OPEN}' must stand alone on its line, "
                         "with one 'key: value' per line below")
    try:
        end = next(i for i, line in enumerate(lines) if line.strip() == _CLOSE)
    except StopIteration:
        raise ValueError(f"{path}: the headline is not closed: end it with a line '{_CLOSE}'") from None
    fields: dict[str, str] = {}
    for line in lines[1:end]:
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or key not in _KEYS:
            raise ValueError(f"{path}: headline line {line.strip()!r}: expected 'key: value' "
                             f"with key one of {', '.join(_KEYS)}")
        if key in fields:
            raise ValueError(f"{path}: headline gives {key!r} twice")
        if not value:
            raise ValueError(f"{path}: headline {key!r} is empty")
        if len(value) > MAX_CELL:
            raise ValueError(f"{path}: headline {key!r} has {len(value)} characters; keep it to "
                             f"{MAX_CELL} (the details belong in the file's own notes)")
        fields[key] = value
    missing = [k for k in _KEYS if k not in fields]
    if missing:
        raise ValueError(f"{path}: headline lacks {', '.join(missing)} (needs {', '.join(_KEYS)})")
    if fields["met"] not in MET:
        raise ValueError(f"{path}: headline met is {fields['met']!r}; use one of {', '.join(MET)}")
    try:
        if not _DATE.fullmatch(fields["date"]):
            raise ValueError
        datetime.date.fromisoformat(fields["date"])
    except ValueError:
        raise ValueError(f"{path}: headline date {fields['date']!r} is not YYYY-MM-DD") from None
    rest = "\n".join(lines[end + 1:]).lstrip("\n")
    return Headline(**fields), rest + ("\n" if text.endswith("\n") else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def headline_table(rows: list[tuple[str, str, Headline | None, str]]) -> list[str]:
    """Markdown lines of the opening table; ``rows`` holds ``(title, link, headline, command)``, where
    ``link`` is empty for a section not produced yet and ``headline`` ``None`` for a file without one."""
    out = ["| bench | goal | latest result | met | date | command |", "|---|---|---|---|---|---|"]
    for title, link, h, command in rows:
        name = f"[{_cell(title)}]({link})" if link else _cell(title)
        cmd = f"`{command}`" if command else "–"
        if not link:
            cells = ["–", "not produced yet", "–", "–"]
        elif h is None:
            cells = ["**no headline**", "–", "–", "–"]
        else:
            cells = [_cell(h.goal), _cell(h.result), h.met, h.date]
        out.append("| " + " | ".join([name, *cells, cmd]) + " |")
    return out


def _shift(text: str, rel: str) -> str:
    out = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("#"):
            line = "#" + line
        out.append(_IMAGE.sub(lambda m: m.group(1) + _relink(m.group(2), rel) + m.group(3), line))
    return "\n".join(out).strip() + "\n"


def _relink(target: str, rel: str) -> str:
    if "://" in target or target.startswith("/"):
        return target
    return f"{rel}/{target}" if rel not in ("", ".") else target


def assemble(results: str | Path = "bench/results", out: str | Path = "BENCHMARKS.md") -> str:
    """Write ``out``: the table of headlines, then the result sections; returns the text written.

    Raises ``ValueError`` (naming the file) on a malformed headline, before anything is written.
    """
    results, out = Path(results), Path(out)
    rel = os.path.relpath(results, out.parent if str(out.parent) else ".").replace(os.sep, "/")
    files = {p.stem: p for p in sorted(results.glob("*.md"))}
    order = [k for k in SECTIONS if k in files] + sorted(k for k in files if k not in SECTIONS)
    read = {key: read_headline(files[key]) for key in order}
    rows = []
    for key in [*order, *(k for k in SECTIONS if k not in files)]:
        title, command = SECTIONS.get(key, (key, ""))
        link = _relink(f"{key}.md", rel) if key in files else ""
        rows.append((title, link, read[key][0] if key in files else None, command))
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python bench/assemble.py` from `bench/results/*.md`. The table gives each bench's "
        "goal, latest result and verdict as written in the headline at the top of its results file "
        "(`met`: yes, no, partly, or n/a where the bench states no goal); the full sections follow, "
        "each naming the command that produced it.",
        "",
        *headline_table(rows),
        "",
        "Optional peers: `pip install -e .[bench]` (TorchCFM with "
        "`--no-deps`, see below). Figures come from a shared 2-core CPU machine: compare "
        "ratios within one section, not absolute times across sections.",
        "",
        "Install of the peers on this machine (torch 2.13 CPU): "
        "`pip install -c constraints.txt flow_matching geomloss` and "
        "`pip install --no-deps torchcfm` (a plain `pip install torchcfm` replaces torch with a "
        "CUDA build; with `--no-deps` its `conditional_flow_matching` module runs on torch, POT, "
        "numpy and scipy).",
        "",
    ]
    for key in order:
        parts.append(_shift(read[key][1], rel))
    text = "\n".join(parts)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="bench/results")
    p.add_argument("--out", default="BENCHMARKS.md")
    a = p.parse_args(argv)
    try:
        assemble(a.results, a.out)
    except ValueError as e:
        raise SystemExit(f"assemble: {e}") from None
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
