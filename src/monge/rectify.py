r"""Rectifying a trained flow: reflow and one-step distillation (Liu, Gong & Liu 2023, "Flow
straight and fast").

A trained flow :math:`v` defines a deterministic coupling :math:`(Z_0, Z_1)`,
:math:`Z_0 \sim \mu`, :math:`Z_1 = \mathrm{ODE}_v(Z_0)` solved tightly. Retraining on these pairs,

.. math:: \min_\theta \mathbb E\,\big\|v_\theta\big(tZ_1 + (1-t)Z_0, t\big) - (Z_1 - Z_0)\big\|^2 ,

("reflow") gives a flow with the same marginals whose paths are straighter (they cannot
cross), so few-step Euler sampling improves. Distillation then regresses one Euler step onto
the pairs, :math:`\min_\theta \mathbb E\|Z_0 + v_\theta(Z_0, 0) - Z_1\|^2`, for a one-step model.

- :func:`generate_pairs`: the pairs, saved as a ``.safetensors`` file
  (:func:`monge.couplings.reflow.save_pairs`) served during training by the ``reflow`` coupling
  (:class:`monge.couplings.ReflowPairs`);
- :func:`distill`: the one-step regression;
- :func:`reflow`: checkpoint in, new run directory out (what ``monge reflow CKPT`` runs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._validation import MAX_SAMPLES_PER_CALL, check_batch, check_positive_int
from .couplings.reflow import PAIRS_NAME, check_pairs, save_pairs
from .run.checkpoint import run_dir_of
from .run.rundir import RunLock, check_not_run_file, claim_run_dir
from .run.signals import NOTHING_WRITTEN, interrupt_note

__all__ = ["generate_pairs", "distill", "reflow"]


def generate_pairs(
    model: Callable[[Tensor, Tensor], Tensor],
    source: Any,
    n: int,
    *,
    sampler: str = "dopri5",
    nfe: int = 128,
    generator: torch.Generator | None = None,
    batch_size: int = 8192,
    device: torch.device | str | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Draw ``n`` noises :math:`Z_0` from ``source`` and integrate the flow to :math:`Z_1`.

    Parameters
    ----------
    model : callable
        Velocity field ``model(x, t)`` (an ``nn.Module`` is put in eval mode for the call).
    source : DataSource or Tensor
        Where :math:`Z_0` comes from: a data source (``source.sample(n, generator, device)``)
        or the ``(n, *shape)`` noise itself.
    sampler, nfe
        ODE solver; the default adaptive ``dopri5`` (``atol``/``rtol`` 1e-5) keeps the
        discretisation error far below the straightening effect. A fixed-step solver
        (``"rk4"``) takes ``nfe`` evaluations per trajectory.
    batch_size : int
        Trajectories integrated at once.
    progress : bool, optional
        A bar on stderr over the pairs (default: when stderr is a terminal, :mod:`monge.progress`).

    Returns
    -------
    (z0, z1) : tuple of Tensor
        ``(n, *shape)`` each, on ``device`` (default: the noise's device).
    """
    from .progress import progress_bar
    from .samplers import SAMPLERS, sample

    n = check_positive_int(n, "n", MAX_SAMPLES_PER_CALL)
    batch_size = check_positive_int(batch_size, "batch_size")
    if torch.is_tensor(source):
        check_batch(source, "source")
        if source.shape[0] != n:
            raise ValueError(f"source noise has {source.shape[0]} rows but n={n}")
        z0 = source if device is None else source.to(device)
    elif hasattr(source, "sample"):
        z0 = source.sample(n, generator=generator, device=device or "cpu")
    else:
        raise ValueError(f"source must be a DataSource or a noise tensor, got {type(source).__name__}")
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with progress_bar(n, f"reflow pairs ({sampler})", progress=progress, unit="pair") as bar:
            parts = []
            for i in range(0, n, batch_size):
                parts.append(sample(model, z0[i : i + batch_size], sampler=sampler,
                                    nfe=None if SAMPLERS.info(sampler).adaptive else nfe, atol=atol, rtol=rtol).x)
                bar.update(parts[-1].shape[0])
        z1 = torch.cat(parts)
    finally:
        if was_training and isinstance(model, nn.Module):
            model.train()
    return z0, z1


def distill(
    model: nn.Module,
    z0: Tensor,
    z1: Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-4,
    generator: torch.Generator | None = None,
    grad_clip: float | None = 1.0,
    progress: bool | None = None,
) -> nn.Module:
    r"""One-step distillation: a copy of ``model`` trained so that one Euler step lands on :math:`Z_1`,

    .. math:: \min_\theta \mathbb E\,\big\|v_\theta(Z_0, 0) - (Z_1 - Z_0)\big\|^2

    (Liu et al. 2023, §2.3, with :math:`t = 0`). Sample the result with ``sampler="euler",
    nfe=1``. ``model`` itself is not modified; AdamW with ``lr`` on minibatches drawn with
    ``generator``; on the device of ``model``'s parameters. ``progress``: a bar on stderr
    (default: when stderr is a terminal).
    """
    from .progress import progress_bar

    check_pairs(z0, z1)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    student = copy.deepcopy(model).train().requires_grad_(True)
    dev = next(student.parameters()).device
    z0d, z1d = z0.to(dev), z1.to(dev)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    gdev = generator.device if generator is not None else torch.device("cpu")
    t0 = torch.zeros(min(batch_size, z0.shape[0]), device=dev, dtype=z0d.dtype)
    bar = progress_bar(steps, "distilling to one step", progress=progress, unit="step")
    for step in range(steps):
        idx = torch.randint(z0.shape[0], (t0.shape[0],), generator=generator, device=gdev).to(dev)
        x, y = z0d[idx], z1d[idx]
        loss = (student(x, t0) - (y - x)).square().reshape(len(x), -1).mean(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(student.parameters(), grad_clip)
        opt.step()
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return student.eval()


_distill_model = distill  # `reflow` has a `distill` flag


@interrupt_note("interrupted; what was finished (pairs, the reflowed run) is kept in the --out folder: the same "
                "command "
                "with --overwrite makes it all again")
def reflow(
    checkpoint: str | Path,
    n_pairs: int = 10_000,
    steps: int | None = None,
    out_dir: str | Path | None = None,
    distill: bool = False,
    *,
    sampler: str = "dopri5",
    nfe: int = 128,
    seed: int = 0,
    init_from_checkpoint: bool = True,
    distill_steps: int | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
) -> Path:
    r"""Reflow a trained model end to end: pairs, retraining, optional one-step distillation.

    1. Load the checkpoint's EMA model and config; draw ``n_pairs`` noises from its source
       (seed ``seed``) and integrate them with ``sampler`` (:func:`generate_pairs`).
    2. Save the pairs as ``out_dir / reflow_pairs.safetensors`` and train a new run there with
       the ``reflow`` coupling on those pairs and the linear path (:math:`\sigma = 0`), for
       ``steps`` steps (default: the original run's), starting from the checkpoint's weights
       (as Liu et al. initialise 2-RF from 1-RF; ``init_from_checkpoint=False``: from scratch).
       Everything else (model, optimiser, batch size, evaluation) follows the original recipe.
    3. With ``distill``, regenerate pairs with the reflowed model and distill it to one step
       (:func:`distill`, ``distill_steps`` default ``steps``); the distilled run is written to
       ``out_dir / "distill"`` (sample it with ``euler``, 1 NFE) and evaluated at 1 NFE
       (``distill/eval.md``).

    ``out_dir`` defaults to ``<run dir>-reflow`` next to the checkpoint's run directory. It may
    not be the source run; an existing run there is refused unless ``overwrite`` (it is then
    moved to ``<out_dir>.bak-<time>``, see :mod:`monge.run.rundir`).
    Returns the new run directory ``out_dir``.
    """
    from .config import Config
    from .run.load import load_model
    from .rundata import build_run_data
    from .train import Trainer

    checkpoint = Path(checkpoint)
    n_pairs = check_positive_int(n_pairs, "n_pairs", MAX_SAMPLES_PER_CALL)
    if steps is not None:
        steps = check_positive_int(steps, "steps")
    model, cfg = load_model(checkpoint, ema=True)
    src_dir = run_dir_of(checkpoint)
    out = Path(out_dir) if out_dir is not None else src_dir.parent / f"{src_dir.name}-reflow"
    if out.resolve() == src_dir.resolve():
        raise ValueError(f"the reflowed run would replace its source run {src_dir}; choose another --out")
    check_not_run_file(out, "--out", src_dir.parent / f"{src_dir.name}-reflow")
    with RunLock(out):
        claim_run_dir(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    source, _ = build_run_data(cfg, "monge reflow", "move it back to the stored path (reflow trains a new run "
                               "on the same data)")
    g = torch.Generator().manual_seed(seed)
    with interrupt_note(NOTHING_WRITTEN):
        z0, z1 = generate_pairs(model, source, n_pairs, sampler=sampler, nfe=nfe, generator=g, progress=progress)
    pairs_path = save_pairs(out / PAIRS_NAME, z0, z1, {"checkpoint": str(checkpoint), "sampler": sampler,
                                                       "nfe": nfe, "seed": seed})

    raw = cfg.to_dict()
    raw.update(name=out.name, output_dir=str(out.parent))
    raw["coupling"] = {"name": "reflow", "pairs": str(pairs_path.resolve())}
    raw["path"] = {"name": "linear", "sigma": 0.0}
    raw["train"] = {
        **raw["train"],
        "progress": progress is not False,
        **({"steps": steps} if steps is not None else {}),
    }
    new_cfg = Config.from_dict(raw)
    init = copy.deepcopy(model).train().requires_grad_(True) if init_from_checkpoint else None
    trainer = Trainer(new_cfg, model=init)
    with interrupt_note(f"interrupted while training the reflowed run; its pairs and last checkpoint are in {out}: "
                        f"`monge train {out / 'config.yaml'} --resume` continues it", replace=True):
        trainer.fit()

    if distill:
        teacher = trainer.ema.model
        z0d, z1d = generate_pairs(teacher, source, n_pairs, sampler=sampler, nfe=nfe,
                                  generator=torch.Generator().manual_seed(seed + 1), progress=progress)
        ddir = out / "distill"
        dpairs = save_pairs(ddir / PAIRS_NAME, z0d, z1d, {"teacher": str(out), "sampler": sampler, "nfe": nfe})
        n_steps = distill_steps if distill_steps is not None else new_cfg.train.steps
        student = _distill_model(teacher, z0d, z1d, steps=n_steps, batch_size=new_cfg.train.batch_size,
                                 lr=new_cfg.train.lr, generator=torch.Generator().manual_seed(seed + 2),
                                 progress=progress)
        raw_d = new_cfg.to_dict()
        raw_d.update(name="distill", output_dir=str(out))
        raw_d["coupling"] = {"name": "reflow", "pairs": str(dpairs.resolve())}
        raw_d["sample"] = {**raw_d["sample"], "sampler": "euler", "nfe": [1], "adaptive": False}
        raw_d["train"] = {**raw_d["train"], "steps": n_steps}
        dtrainer = Trainer(Config.from_dict(raw_d), model=student)
        dtrainer.ema.model.load_state_dict(student.state_dict())
        dtrainer.step = n_steps
        ddir.mkdir(parents=True, exist_ok=True)
        (ddir / "config.yaml").write_text(dtrainer.config.to_yaml())
        dtrainer.save()
        dtrainer.write_eval(dtrainer.evaluate())  # the one-step model's W2 / MMD at 1 NFE: distill/eval.md
    return out
