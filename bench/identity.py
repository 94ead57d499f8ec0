"""Behaviour check for refactors: every recipe's checkpoint after a few steps, hashed.

    python bench/identity.py --write bench/results/identity.json   # before a change
    python bench/identity.py --check bench/results/identity.json   # after it: every hash must match

Each recipe of configs/ trains for ``--steps`` steps (evaluation off, one thread, a map fit capped
by steps rather than wall time) into a temporary folder; the SHA-256 of every checkpoint tensor is
recorded. Recipes that need files made by another run (reflow) are trained on pairs written here;
a latent flow (``data.latent``) is trained on the autoencoder recipe trained here just before it
(``digits-autoencoder`` sorts before ``digits-latent-*``), and skipped when that run is not here.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _overrides(recipe: Path, out: Path, steps: int) -> list[str]:
    from monge.config import load_config

    extra = [f"train.steps={steps}", "train.eval_every=0", f"train.checkpoint_every={steps}",
             f"output_dir={out}", "sample.adaptive=false"]
    cfg = load_config(recipe)
    if cfg.data.latent is not None:  # the autoencoder run of that name, trained here
        extra.append(f"data.latent={out / Path(cfg.data.latent).name}")
    if "semidiscrete" in cfg.coupling.name:
        extra += ["coupling.max_time=null", "coupling.max_iter=200"]
    return extra


def _hash_run(run_dir: Path) -> dict[str, str]:
    from safetensors.torch import load_file

    tensors = load_file(run_dir / "checkpoint.safetensors")
    return {k: hashlib.sha256(v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
            for k, v in sorted(tensors.items())}


def run_all(steps: int, only: list[str]) -> dict[str, dict[str, str] | str]:
    from monge.config import load_config
    from monge.train import Trainer

    torch.set_num_threads(1)
    out: dict[str, dict[str, str] | str] = {}
    recipes = sorted((ROOT / "configs").glob("*.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes:
            if only and recipe.stem not in only:
                continue
            if "reflow" in recipe.stem:
                continue  # its pairs file comes from another run; covered by tests/test_reflow.py
            try:
                cfg = load_config(recipe, _overrides(recipe, Path(tmp), steps))
                if cfg.data.latent is not None and not Path(cfg.data.latent).is_dir():
                    print(recipe.stem, f"skipped: its autoencoder {Path(cfg.data.latent).name} was not trained here")
                    continue
                Trainer(cfg).fit()
                out[recipe.stem] = _hash_run(Path(tmp) / cfg.name)
            except Exception as err:  # recorded: a recipe that fails must fail the same way after
                out[recipe.stem] = f"error: {type(err).__name__}: {err}"
            print(recipe.stem, "ok" if isinstance(out[recipe.stem], dict) else out[recipe.stem], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--only", nargs="*", default=[])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", type=Path)
    g.add_argument("--check", type=Path)
    args = ap.parse_args()
    got = run_all(args.steps, args.only)
    if args.write:
        args.write.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        return
    want = json.loads(args.check.read_text())
    new = sorted(k for k in got if k not in want)
    if new:
        print(f"new recipes, not in {args.check} (nothing to compare): {', '.join(new)}")
    got = {k: v for k, v in got.items() if k in want}
    bad = [k for k in got if want[k] != got[k]]
    for k in bad:
        diff = [t for t in set(want.get(k, {})) | set(got[k]) if not isinstance(got[k], dict)
                or not isinstance(want.get(k), dict) or want[k].get(t) != got[k].get(t)]
        print(f"DIFFERS: {k}: {sorted(diff)[:5]}")
    print(f"{len(got) - len(bad)}/{len(got)} recipes bit-identical")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
