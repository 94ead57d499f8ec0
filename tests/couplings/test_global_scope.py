"""``scope="global"``: under 2 gloo processes the pairs equal one process's on the global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from monge.config import ConfigError
from monge.couplings import ExactOT, Immiscible

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from monge.run import distributed
    from monge.couplings import ExactOT, Immiscible
    from monge.pairing import PairingPipeline

    out = sys.argv[1]
    info = distributed.setup()
    b, results = 24, {}
    for name, coupling in (("exact_emd", ExactOT(scope="global", solver="emd")),
                           ("exact_auction", ExactOT(scope="global", solver="auction")),
                           ("immiscible", Immiscible(scope="global"))):
        coupling.prepare(None, None)  # creates the gather group on every rank
        g = torch.Generator().manual_seed(0)
        x0, x1 = torch.randn(2 * b, 3, generator=g), torch.randn(2 * b, 3, generator=g) + 1
        mine = slice(info.rank * b, (info.rank + 1) * b)
        results[name] = coupling(x0[mine], x1[mine]).x0
    # one pairing worker thread issues the gathers while this thread runs its own collectives
    g = torch.Generator().manual_seed(1)
    coupling = ExactOT(scope="global")
    coupling.prepare(None, None)
    def draw():
        x0, x1 = torch.randn(2 * b, 2, generator=g), torch.randn(2 * b, 2, generator=g)
        mine = slice(info.rank * b, (info.rank + 1) * b)
        return x0[mine], x1[mine]
    with PairingPipeline(draw, coupling.solve, g, workers=1) as pipe:
        for k in range(3):
            (x0, x1), sol = pipe.next(3 - k)
            distributed.all_reduce_mean(1.0)
            results[f"pipe{k}"] = coupling.pair_solved(x0, x1, sol, None).x0
    torch.save(results, f"{out}/rank{info.rank}.pt")
    distributed.teardown()
    """
)


def _global_reference(b: int = 24) -> dict[str, torch.Tensor]:
    ref = {}
    for name, coupling in (("exact_emd", ExactOT(solver="emd")), ("exact_auction", ExactOT(solver="auction")),
                           ("immiscible", Immiscible())):
        g = torch.Generator().manual_seed(0)
        x0, x1 = torch.randn(2 * b, 3, generator=g), torch.randn(2 * b, 3, generator=g) + 1
        ref[name] = coupling(x0, x1).x0
    g = torch.Generator().manual_seed(1)
    for k in range(3):
        x0, x1 = torch.randn(2 * b, 2, generator=g), torch.randn(2 * b, 2, generator=g)
        ref[f"pipe{k}"] = ExactOT()(x0, x1).x0
    return ref


def test_two_gloo_processes_pair_as_one_process_with_the_global_batch(tmp_path):
    script = tmp_path / "global_scope.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, pairs in _global_reference().items():
        got = torch.cat([ranks[0][name], ranks[1][name]])
        assert torch.equal(got, pairs), name


def test_global_scope_alone_is_local_and_options_are_checked():
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    assert torch.equal(ExactOT(scope="global")(x0, x1).x0, ExactOT()(x0, x1).x0)
    auction = ExactOT(solver="auction").solve(x0, x1)
    assert auction.dtype == torch.int64 and sorted(auction.tolist()) == list(range(16))
    with pytest.raises(ValueError, match="scope"):
        ExactOT(scope="world")
    with pytest.raises(ValueError, match="solver"):
        Immiscible(solver="hungarian")
    with pytest.raises(ValueError, match="tol"):
        ExactOT(tol=-1.0)


def test_global_scope_refuses_several_pairing_workers(tmp_path):
    from monge.config import load_config

    raw = tmp_path / "r.yaml"
    raw.write_text(
        "name: g\ndata: {source: gaussian, target: 8gaussians}\n"
        "coupling: {name: exact_ot, scope: global}\nmodel: {name: mlp}\ntrain: {pairing_workers: 2}\n"
    )
    with pytest.raises(ConfigError, match="pairing_workers: 1"):
        load_config(raw)
