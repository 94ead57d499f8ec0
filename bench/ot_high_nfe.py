"""Why OT couplings lose to ``independent`` at 10 NFE and adaptive on 16x16 digits: an ablation.

    python bench/ot_high_nfe.py                       # every cell, 5000 steps, results/ot_high_nfe.md
    python bench/ot_high_nfe.py --cells sd-eps1 --steps 2000 --out-dir runs/ablation

Setting of ``bench/results/digits.md`` (where every OT coupling lost from 10 NFE on): MLP 512x3,
batch 128, AdamW 1e-3, linear path, seed 0, 16x16 digits (80/20 split). One factor changes per
cell: the coupling (hard cells, entropic cells at several epsilon, minibatch OT), the path's noise
``sigma`` (x_t = t x1 + (1 - t) x0 + sigma z), the network width. Each cell is scored at half and
at the full budget, with the EMA and the raw weights, so training length and EMA are read off the
same run. Scores: classifier Fréchet against the held-out digits at Euler 1, 2, 4, 10 and dopri5,
mode mixture, and the near-copy share (classifier features) against held-out digits' own.

Entropic cells: p_i(x0) = softmax_i((<x0, y_i> + h_i) / eps). On these digits the median number
of effective candidates exp(H(p)) at the Voronoi heights is about 2 at eps 0.5, 6 at eps 1 and 47
at eps 2 (printed by ``--calibrate``), so the cells span hard to nearly independent pairing.

Each finished cell is appended to ``OUT_DIR/cells.jsonl``; a rerun skips the cells found there and
rewrites the Markdown table from all of them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NFES = (1, 2, 4, 10)
MLP = {"name": "mlp", "hidden": 512, "depth": 3, "time_embedding": "sinusoidal"}
WIDE = {"name": "mlp", "hidden": 1024, "depth": 4, "time_embedding": "sinusoidal"}
SD = {"name": "semidiscrete_ot", "max_time": 900}

#: cell name -> (what changes, coupling, path sigma, model)
CELLS: dict[str, tuple[str, dict, float, dict]] = {
    "independent": ("baseline", {"name": "independent"}, 0.0, MLP),
    "sd-hard": ("semi-discrete, hard cells", SD, 0.0, MLP),
    "sd-eps0.5": ("entropic cells, eps 0.5 (~2 candidates)", {**SD, "epsilon": 0.5}, 0.0, MLP),
    "sd-eps1": ("entropic cells, eps 1 (~6 candidates)", {**SD, "epsilon": 1.0}, 0.0, MLP),
    "sd-eps2": ("entropic cells, eps 2 (~47 candidates)", {**SD, "epsilon": 2.0}, 0.0, MLP),
    "exact_ot": ("minibatch exact OT (batch 128)", {"name": "exact_ot"}, 0.0, MLP),
    "sd-hard-sigma0.2": ("hard cells, path noise sigma 0.2", SD, 0.2, MLP),
    "independent-sigma0.2": ("independent, path noise sigma 0.2", {"name": "independent"}, 0.2, MLP),
    "independent-wide": ("independent, MLP 1024x4", {"name": "independent"}, 0.0, WIDE),
    "sd-hard-wide": ("hard cells, MLP 1024x4", SD, 0.0, WIDE),
}


def config_of(cell: str, steps: int, out: Path, seed: int):
    from monge.config import Config

    _, coupling, sigma, model = CELLS[cell]
    return Config.from_dict({
        "name": f"{cell}-s{seed}", "output_dir": str(out),
        "data": {"source": "gaussian", "target": {"name": "digits", "size": 16, "holdout": 0.2, "seed": 0}},
        "coupling": coupling, "path": {"name": "linear", "sigma": sigma}, "model": model,
        "train": {"steps": steps, "batch_size": 128, "lr": 1e-3, "ema_decay": 0.999, "seed": seed,
                  "checkpoint_every": 0, "eval_every": 0, "progress": False},
        "sample": {"sampler": "euler", "nfe": list(NFES), "adaptive": True},
    })


def score(net, noise, reference, classifier, novelty) -> dict[str, dict[str, float]]:
    from monge.demo_images import score_images
    from monge.samplers import sample

    out = {}
    with torch.no_grad():
        for k in NFES:
            x = sample(net, noise, sampler="euler", nfe=k).x
            out[f"euler{k}"] = _row(score_images(x, reference, classifier, novelty=novelty, w2=False), k)
        ad = sample(net, noise, sampler="dopri5")
        out["adaptive"] = _row(score_images(ad.x, reference, classifier, novelty=novelty, w2=False), ad.nfe)
    return out


def _row(r, nfe: int) -> dict[str, float]:
    return {"nfe": nfe, "frechet": r.frechet, "mixture": r.mixture, "near_copies": r.near_copies,
            "heldout_near_copies": r.heldout_near_copies}


def run_cell(cell: str, steps: int, out: Path, seed: int, n: int) -> dict:
    from monge.evaluate import novelty_reference
    from monge.train import Trainer

    config = config_of(cell, steps, out, seed)
    trainer = Trainer(config)
    novelty, _ = novelty_reference(config.data.target, trainer.target, cache_dir=out / "cache")
    classifier = novelty.classifier
    reference = novelty.held_out
    noise = torch.randn((n, *trainer.source.shape), generator=torch.Generator().manual_seed(999))
    start = time.process_time()
    trainer.prepare()
    fit = time.process_time() - start
    record: dict = {"cell": cell, "seed": seed, "steps": steps, "fit_cpu_s": round(fit, 1), "scores": {}}
    train_cpu = 0.0
    for stop in (steps // 2, steps):
        t0 = time.process_time()
        while trainer.step < stop:
            trainer.train_step()
        train_cpu += time.process_time() - t0
        for which, net in (("ema", trainer.ema.model), ("raw", trainer.model)):
            net.eval()
            record["scores"][f"{which}@{stop}"] = score(net, noise, reference, classifier, novelty)
        trainer.model.train()
    record["train_cpu_s"] = round(train_cpu, 1)
    record["ms_per_step"] = round(1000 * train_cpu / steps, 1)
    sd = getattr(trainer.coupling, "map", None)
    if sd is not None:
        record["fit_note"] = getattr(trainer.coupling, "fit_summary", None) or ""
    return record


def table(records: list[dict], steps: int) -> str:
    head = "| cell | what changes | " + " | ".join(f"F@{k}" for k in NFES) + " | F adaptive (NFE) | mixture @10 | " \
           "near-copies @10 (held-out) | F@10, raw | F@10, half budget | ms/step |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        s = r["scores"]
        ema, raw, half = s.get(f"ema@{steps}"), s.get(f"raw@{steps}"), s.get(f"ema@{steps // 2}")
        if ema is None:
            continue
        cells = [f"{ema[f'euler{k}']['frechet']:.1f}" for k in NFES]
        ad = ema["adaptive"]
        e10 = ema["euler10"]
        lines.append(f"| {r['cell']} | {CELLS[r['cell']][0]} | " + " | ".join(cells)
                     + f" | {ad['frechet']:.1f} ({ad['nfe']}) | {e10['mixture']:.3f} | "
                     f"{100 * e10['near_copies']:.1f}% ({100 * e10['heldout_near_copies']:.1f}%) | "
                     f"{raw['euler10']['frechet']:.1f} | {half['euler10']['frechet']:.1f} | {r['ms_per_step']} |")
    return "\n".join(lines)


def calibrate() -> None:
    """Median effective number of candidate cells exp(H(p)) at the Voronoi heights, per epsilon."""
    from monge.data.sources import build_source

    y = build_source({"name": "digits", "size": 16, "holdout": 0.2}).data.flatten(1).float()
    x = torch.randn(2000, y.shape[1], generator=torch.Generator().manual_seed(0))
    s = x @ y.T - 0.5 * (y * y).sum(1)
    for eps in (0.25, 0.5, 1.0, 2.0, 4.0):
        p = torch.softmax(s / eps, 1)
        print(
            f"eps {eps}: median effective candidates {torch.exp(-(p * p.clamp_min(1e-30).log()).sum(1)).median():.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000, help="samples per setting")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "ot_high_nfe")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "ot_high_nfe.md")
    ap.add_argument("--calibrate", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.calibrate:
        return calibrate()
    cells = [c for c in a.cells.split(",") if c]
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise SystemExit(f"unknown cells {unknown}; choose from {', '.join(CELLS)}")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    log = a.out_dir / "cells.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    have = {(r["cell"], r["seed"], r["steps"]) for r in done}
    for cell in cells:
        if (cell, a.seed, a.steps) in have:
            continue
        print(f"{cell}: training {a.steps} steps", flush=True)
        rec = run_cell(cell, a.steps, a.out_dir, a.seed, a.n)
        with log.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        done.append(rec)
        print(json.dumps({k: rec[k] for k in ("cell", "train_cpu_s", "fit_cpu_s")}), flush=True)
        rows = [r for r in done if r["steps"] == a.steps and r["seed"] == a.seed]
        text = (f"# Why OT couplings lose at high NFE on 16x16 digits: ablation\n\n"
                f"Command: `python bench/ot_high_nfe.py --steps {a.steps}`; {platform.machine()}, torch "
                f"{torch.__version__}, 1 thread, seed {a.seed}, {a.n} samples per setting, "
                f"{time.strftime('%Y-%m-%d')}.\n\n"
                "F: classifier Fréchet distance to the 359 held-out digits (lower is better), EMA weights at the "
                "full budget unless the column says otherwise.\n\n" + table(rows, a.steps) + "\n")
        a.results.write_text(text)


if __name__ == "__main__":
    main()
