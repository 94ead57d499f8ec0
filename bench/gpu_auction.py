"""GPU check of the certified auction (issue 23), prepared to run as one script on a CUDA machine.

Usage (on a GPU machine, from the repository root)::

    PYTHONPATH=src python bench/gpu_auction.py [--sizes 1024,4096,16384] [--out bench/results/auction_gpu.md]

For each n: the batch's squared-Euclidean cost between N(0, I) noise and N(0, 4I) data in 2D and
N(0, I) vs N(0, I) in 64-D, then the time (CUDA-synchronised, best of 3 after a warm-up) of

- ``monge.ot.assignment(cost, method="auction", return_certificate=True)`` on the GPU (float64);
- the same for a batch of 64 problems of n = 128;
- TorchCFM's pairing call ``OTPlanSampler("exact").sample_plan(x0, x1)`` when ``torchcfm``
  imports (POT on the CPU, as TorchCFM runs it), and POT ``ot.emd`` on the CPU for the optimum
  (both skipped above n = 4096, where one call takes minutes).

Reports the certified relative gap and the gap to POT's optimum; goal: >= 10x faster than
TorchCFM at n = 4096 with gap <= 1e-6. Writes a Markdown table naming the device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from monge.ot.exact import assignment, squared_euclidean_cost

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ot_solvers import timed  # noqa: E402  (the bench's wall-time helper)


def timed_cuda(fn, repeats: int = 3):
    fn()  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def clouds(n: int, d: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, d, generator=g)
    x1 = torch.randn(n, d, generator=g) * (2.0 if d == 2 else 1.0)
    return x0.to(device), x1.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,4096,16384")
    parser.add_argument("--out", default="bench/results/auction_gpu.md")
    parser.add_argument("--reference-max-n", type=int, default=4096)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this script is the GPU part of the auction benchmark")
    dev = "cuda"
    name = torch.cuda.get_device_name(0)
    try:
        from torchcfm.optimal_transport import OTPlanSampler

        cfm = OTPlanSampler(method="exact")
    except Exception as exc:  # optional peer
        cfm, cfm_msg = None, f"torchcfm not importable ({type(exc).__name__})"
    import ot

    rows = [f"# Certified auction on {name}\n", f"torch {torch.__version__}, POT {ot.__version__}, "
            f"{time.strftime('%Y-%m-%d')}. Command: `python {' '.join(sys.argv)}`\n",
            "| n | d | solver | time | certified gap | gap to POT optimum | TorchCFM / auction |",
            "|---|---|---|---|---|---|---|"]
    for n in [int(v) for v in args.sizes.split(",")]:
        for d in (2, 64):
            x0, x1 = clouds(n, d, n + d, dev)
            cost = squared_euclidean_cost(x1, x0).double()
            t_a, res = timed_cuda(lambda cost=cost: assignment(cost, method="auction", return_certificate=True))
            gap_opt, t_c = "-", float("nan")
            if n <= args.reference_max_n:
                c64 = cost.cpu().numpy()
                u = np.full(n, 1.0 / n)
                plan = ot.emd(u, u, c64, numItermax=50 * n * n)
                opt = float((plan * c64).sum()) * n
                gap_opt = f"{(float(res.cost) - opt) / opt:+.1e}"
                if cfm is not None:
                    t_c, _ = timed(lambda x0=x0, x1=x1: cfm.sample_plan(x0, x1))
            ratio = f"{t_c / t_a:.1f}x" if t_c == t_c else "-"
            rows.append(f"| {n} | {d} | monge auction (GPU, float64) | {t_a:.3f} s | {float(res.rel_gap):.1e} | "
                        f"{gap_opt} | {ratio} |")
            print(rows[-1], flush=True)
            if t_c == t_c:
                rows.append(
                    f"| {n} | {d} | TorchCFM `sample_plan` (exact, POT on CPU) | {t_c:.3f} s | exact | - | 1.0x |"
                )
                print(rows[-1], flush=True)
            elif cfm is None:
                rows.append(f"| {n} | {d} | TorchCFM: {cfm_msg} | - | - | - | - |")
    costs = torch.stack([squared_euclidean_cost(*clouds(128, 2, k, dev)).double() for k in range(64)])
    t_b, res = timed_cuda(lambda: assignment(costs, method="auction", return_certificate=True))
    rows.append(
        f"| 64 x 128 | 2 | monge auction, batched (GPU) | {t_b:.3f} s | {float(res.rel_gap.max()):.1e} | - | - |"
    )
    print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
