"""What makes DPM-OT's expressway good on 16x16 digits? (experiment for `monge demo --data digits`)

Same split, classifier, noise batch and scoring as :func:`monge.demo_images.run_image_demo`
(seed 0, 1000 samples, tau 0.2). Trains each model once with the demo's settings (MLP 512x3,
5000 steps, batch 128) and caches it, fits each semi-discrete map once and caches it, then scores
the expressway for every combination of

* the model: trained with ``independent`` or ``semidiscrete_ot`` pairs;
* the map: onto 512 training digits (the former demo map) or onto all training digits (the demo's);
* the start time t_s and the sampler at 10 NFE.

Usage::

    python bench/digits_expressway.py --cache /tmp/q6 [--ts 0.2 0.3 0.4 0.5] [--nfe 10]

Writes ``<cache>/expressway.md`` (a table) and prints each row as it is scored. NN-train: the
median pixel distance of a sample to its nearest training digit (0 for a copy; the held-out
digits' own figure is printed first), to tell diversity from copying.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from monge.couplings import COUPLINGS
from monge.couplings.maps import load_map, save_map
from monge.data.digits import load_digits
from monge.demo_images import _train, image_demo_config, score_images
from monge.metrics.classifier import load_or_train_classifier
from monge.ot.semidiscrete import SemiDiscreteMap
from monge.run.load import load_model
from monge.samplers import sample
from monge.samplers.expressway import expressway_sample

MAPS = {
    "512": {"n_targets": 512, "tol": 0.1, "max_iter": 1000},
    "all": {"max_time": 600},  # every training digit, the coupling's defaults (as the demo)
}


def get_model(name: str, cache: Path, train_set, seed: int = 0):
    ckpt = cache / "runs" / name / "checkpoint.safetensors"
    if not ckpt.is_file():
        config = image_demo_config(name, cache / "runs", 16, 5000, 128, "mlp", seed)
        start = time.perf_counter()
        _train(config, train_set, progress=False)
        print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    model, _ = load_model(ckpt)
    return model


def get_map(key: str, cache: Path, source, train_set, seed: int = 0) -> SemiDiscreteMap:
    file = cache / f"map-{key}.safetensors"
    if not file.is_file():
        coupling = COUPLINGS.build("semidiscrete_ot", **MAPS[key])
        start = time.perf_counter()
        # the demo's fit: training split as target, generator seed + 3 (Trainer.prepare)
        coupling.prepare(source, train_set, torch.Generator().manual_seed(seed + 3))
        print(f"fitted map {key} ({coupling.map.targets.shape[0]} targets) in {time.perf_counter() - start:.0f} s: "
              f"{coupling.fit_info}", flush=True)
        save_map(file, coupling.map)
    return load_map(file)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default="/tmp/q6")
    p.add_argument("--models", nargs="+", default=["independent", "semidiscrete_ot"])
    p.add_argument("--maps", nargs="+", default=["512", "all"])
    p.add_argument("--ts", nargs="+", type=float, default=[0.2, 0.3, 0.4, 0.5])
    p.add_argument("--nfe", nargs="+", type=int, default=[10])
    p.add_argument("--samplers", nargs="+", default=["euler"])
    p.add_argument("--baselines", action="store_true", help="also score Euler at each NFE and dopri5 from noise")
    p.add_argument("--n", type=int, default=1000)
    args = p.parse_args()
    cache = Path(args.cache)
    seed, tau = 0, 0.2
    digits = load_digits(16)
    train_set, test_set = digits.split(0.2, seed=seed)
    classifier = load_or_train_classifier(train_set, cache / "runs" / "cache", seed=seed, epochs=15)
    reference = test_set.data
    noise = torch.randn((args.n, *digits.shape), generator=torch.Generator().manual_seed(seed + 999))
    from monge.data.sources import build_data

    source, _ = build_data(image_demo_config("independent", cache / "runs").data)
    train_flat = train_set.data.reshape(len(train_set), -1)

    def nn_train(x: torch.Tensor) -> float:
        """Median pixel distance of each image to its nearest training digit (copying scores 0)."""
        return float(torch.cdist(x.clamp(-1, 1).reshape(len(x), -1), train_flat).min(1).values.median())

    print(f"held-out digits: median distance to the nearest training digit {nn_train(test_set.data):.2f}", flush=True)
    lines = ["| model | map | sampler | t_s | NFE | Fréchet | mixture | coverage | W2 | NN-train |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    out = cache / "expressway.md"

    def emit(row, model, mp, smp, ts, x):
        line = (f"| {model} | {mp} | {smp} | {ts} | {row.nfe} | {row.frechet:.2f} | {row.mixture:.3f} | "
                f"{row.coverage:.2f} | {row.w2:.2f} | {nn_train(x):.2f} |")
        print(line, flush=True)
        lines.append(line)
        out.write_text("\n".join(lines) + "\n")

    for name in args.models:
        net = get_model(name, cache, train_set, seed)
        with torch.no_grad():
            if args.baselines:
                for k in args.nfe:
                    x = sample(net, noise, sampler="euler", nfe=k).x
                    emit(score_images(x, reference, classifier, tau, "euler", k), name, "–", "euler", 0, x)
                ad = sample(net, noise, sampler="dopri5")
                emit(score_images(ad.x, reference, classifier, tau, "dopri5", ad.nfe), name, "–", "dopri5", 0, ad.x)
            for key in args.maps:
                sd_map = get_map(key, cache, source, train_set, seed)
                for smp in args.samplers:
                    for ts in args.ts:
                        for k in args.nfe:
                            ex = expressway_sample(net, sd_map, noise, t_start=ts, sampler=smp, nfe=k,
                                                   generator=torch.Generator().manual_seed(seed + 5))
                            emit(score_images(ex.x, reference, classifier, tau, f"expressway t_s={ts:g}", k),
                                 name, key, smp, ts, ex.x)


if __name__ == "__main__":
    main()
