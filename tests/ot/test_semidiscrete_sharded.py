"""Semi-discrete fit with the targets sharded over 2 gloo processes vs one process."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monge.ot.semidiscrete import fit_semidiscrete, fit_semidiscrete_sharded

N, D, SPLIT = 29, 3, 11  # unequal shards: rank 0 holds 11 targets, rank 1 holds 18
OPTIONS = dict(tol=1e-6, max_iter=40, batch_size=600, eval_every=15, eval_samples=2000)


def _targets() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(N, D, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)


def _weights() -> torch.Tensor:
    w = torch.arange(1, N + 1, dtype=torch.float64)
    return w / w.sum()


def _worker(rank: int, world: int, init_file: str, out_dir: str, gather_map: bool) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        y = _targets()
        shard = y[:SPLIT] if rank == 0 else y[SPLIT:]
        # Only rank 0's generator state matters: it is broadcast to every rank.
        g = torch.Generator().manual_seed(0 if rank == 0 else 1234)
        res = fit_semidiscrete_sharded(shard, _weights(), generator=g, gather_map=gather_map, **OPTIONS)
        x = torch.randn(500, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        idx = res.map(x)[0] if res.map is not None else torch.empty(0, dtype=torch.int64)
        torch.save({"heights": res.heights, "n_iter": res.n_iter, "history": res.history, "idx": idx,
                    "has_map": res.map is not None}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run_sharded(tmp_path, gather_map=True):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), gather_map), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_shards_equal_the_single_process_fit(tmp_path):
    """Same seed, same Monte Carlo batches: the sharded all-reduce search and gathered gradient
    reproduce the one-process heights, history and map (float64, so no near-ties flip)."""
    ranks = _run_sharded(tmp_path)
    ref = fit_semidiscrete(_targets(), _weights(), generator=torch.Generator().manual_seed(0), **OPTIONS)
    x = torch.randn(500, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ref_idx = ref.map(x)[0]
    assert ref.n_iter == OPTIONS["max_iter"]  # the comparison covers the whole loop
    for out in ranks:
        assert out["n_iter"] == ref.n_iter
        torch.testing.assert_close(out["heights"], ref.heights, atol=1e-10, rtol=0)
        assert [h[:2] for h in out["history"]] == [h[:2] for h in ref.history]
        torch.testing.assert_close(torch.tensor([h[2:] for h in out["history"]]),
                                   torch.tensor([h[2:] for h in ref.history]), atol=1e-9, rtol=0)
        assert torch.equal(out["idx"], ref_idx)
    # the heights moved away from zero: the fit did something
    assert ref.heights.abs().max() > 1e-2


def test_without_gathering_the_map_only_heights_are_returned(tmp_path):
    ranks = _run_sharded(tmp_path, gather_map=False)
    assert not ranks[0]["has_map"] and not ranks[1]["has_map"]
    torch.testing.assert_close(ranks[0]["heights"], ranks[1]["heights"], atol=0, rtol=0)


def test_needs_an_initialised_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    with pytest.raises(RuntimeError, match="init_process_group"):
        fit_semidiscrete_sharded(_targets())
