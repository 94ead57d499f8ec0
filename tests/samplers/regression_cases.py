"""Sampler outputs on fixed seeds through the public API (:func:`monge.samplers.sample`).
``data/regression_ad654f9.json`` holds the values the pre-registry code (commit ad654f9) gave (its
``solve(model, x, schedule, ts, sampler)`` is ``sample(model, x, sampler=..., timesteps=ts,
schedule=...)`` here); ``test_regression.py`` checks that the current code gives them bit for bit.

Regenerate (only when a change of numbers is intended) with the tree to record on ``PYTHONPATH``::

    git archive ad654f9 src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python tests/samplers/regression_cases.py tests/samplers/data/regression_ad654f9.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings

import torch

F64 = torch.float64
W = torch.tensor([[0.7, -0.4], [0.3, 0.9]], dtype=F64)


def model(x, t):
    """A smooth nonlinear field, any prediction type."""
    return torch.tanh(x @ W.to(x.dtype) + t[:, None]) - 0.5 * x


def _put(out: dict, key: str, o, trajectory: bool = False) -> None:
    out[key] = {"x": o.x.flatten().tolist(), "nfe": o.nfe}
    if trajectory:
        out[key]["trajectory"] = o.trajectory.flatten().tolist()
        out[key]["times"] = o.times.flatten().tolist()


def sampler_cases() -> dict:
    from monge.paths import SCHEDULES
    from monge.samplers import make_timesteps, sample

    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    out: dict = {}
    for name, nfe in (("euler", 4), ("midpoint", 4), ("heun", 6), ("rk4", 8)):
        _put(out, f"sample/{name}/{nfe}", sample(model, x, sampler=name, nfe=nfe))
    _put(out, "sample/heun/t0.2-0.9", sample(model, x, sampler="heun", nfe=4, t0=0.2, t1=0.9,
                                             return_trajectory=True), trajectory=True)
    _put(out, "sample/rk4/backward", sample(model, x, sampler="rk4", nfe=8, t0=1.0, t1=0.0))
    _put(out, "sample/euler/float32", sample(model, x.float(), sampler="euler", nfe=3))
    _put(out, "sample/dopri5", sample(model, x, sampler="dopri5", return_trajectory=True), trajectory=True)
    for sname, grid, t0 in (("linear", "uniform", 0.0), ("vp_linear", "uniform_log_snr", 1e-3),
                            ("cosine", "karras", 1e-3)):
        sched = SCHEDULES.build(sname)
        ts = make_timesteps(grid, 5, sched, t0=t0)
        out[f"grid/{sname}/{grid}"] = {"x": ts.tolist()}
        for smp in ("ddim", "dpm_solver_pp", "dpm_solver_pp_3m", "unipc", "unipc_bh1", "heun_edm", "euler", "heun",
                    "euler_maruyama"):
            for pred in ("velocity", "noise") if sname != "linear" else ("velocity",):
                try:
                    o = sample(model, x, sampler=smp, timesteps=ts, schedule=sched, prediction=pred,
                               generator=torch.Generator().manual_seed(3), return_trajectory=smp == "unipc")
                except ValueError as err:
                    out[f"solve/{sname}/{grid}/{smp}/{pred}"] = {"error": str(err)}
                    continue
                _put(out, f"solve/{sname}/{grid}/{smp}/{pred}", o, trajectory=smp == "unipc")
        _put(out, f"solve/{sname}/{grid}/ddim_eta1",
             sample(model, x, sampler="ddim", timesteps=ts, schedule=sched, eta=1.0,
                    generator=torch.Generator().manual_seed(3)))
    return out


def recipe_cases() -> dict:
    """The evaluation rows of a tiny seeded training run (euler at NFE 1, 2 and dopri5)."""
    from monge.config import Config
    from monge.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.from_dict({
            "name": "reg", "output_dir": tmp, "data": {"source": "gaussian", "target": "8gaussians"},
            "coupling": "exact_ot", "path": {"name": "linear"}, "model": {"name": "mlp", "hidden": 32, "depth": 2},
            "train": {"steps": 20, "batch_size": 64, "lr": 3e-3, "checkpoint_every": 0, "eval_every": 0,
                      "eval_samples": 100, "progress": False, "log_every": 10},
            "sample": {"sampler": "heun", "nfe": [2, 4], "adaptive": True},
        })
        trainer = Trainer(cfg)
        trainer.fit()
        return {f"recipe/{r.sampler}/{r.nfe}": r.as_dict() for r in trainer.evaluate()}


def compute() -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {**sampler_cases(), **recipe_cases()}


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        json.dump(compute(), f, indent=0)
        f.write("\n")
