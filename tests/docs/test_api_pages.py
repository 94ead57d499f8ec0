"""Every public module of monge has an API page (a ``::: module`` directive in docs/api/), except the
command line's own plumbing, each named here with its reason."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: modules that only the command line uses: their behaviour is documented on the CLI's pages
CLI_ONLY = {
    "monge.cli": "the typer app: `monge --help` and the CLI page",
    "monge.demo": "`monge demo`",
    "monge.demo_images": "`monge demo --data digits`",
    "monge.demo_latent": "`monge demo --data digits --latent RUN`",
    "monge.demo_report": "the demo's report",
    "monge.locate": "finds a run's checkpoint from a typed path",
}


def public_modules() -> list[str]:
    src = ROOT / "src"
    out = []
    for p in sorted((src / "monge").rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            out.append(".".join(parts))
    return out


def documented() -> set[str]:
    return {m for f in (ROOT / "docs" / "api").glob("*.md")
            for m in re.findall(r"^::: (\S+)", f.read_text(), re.M)}


def test_every_public_module_is_on_an_api_page():
    pages = documented()

    def covered(module: str) -> bool:
        # a module is covered by its own directive or by its package's (which lists the package's __all__)
        parent = module.rsplit(".", 1)[0]
        return module in pages or (module.count(".") > 1 and parent in pages)

    missing = [m for m in public_modules() if m != "monge" and m not in CLI_ONLY and not covered(m)]
    assert missing == [], f"add a '::: module' line to a page of docs/api/ for {missing}"


def test_every_directive_names_a_module_that_exists():
    modules = set(public_modules())
    assert sorted(documented() - modules) == []
