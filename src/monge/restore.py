r"""``monge restore``: posterior samples of a trained run given a linear measurement
:math:`y = A x + \sigma_y n` (inpainting, denoising, deblurring, super-resolution, compressed
sensing), with the solvers of :mod:`monge.inverse`.

Everything is checked before the solver runs: the operator is built for the run's data shape, and
the measurement (and mask, ground truth) must match it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._validation import check_finite, check_number, check_positive, check_positive_int
from .config import Config
from .inverse import (
    INVERSE_SOLVERS,
    AvgPool,
    GaussianBlur,
    Identity,
    LinearOperator,
    Mask,
    RandomProjection,
)
from .objectives import prediction_of
from .run.signals import NOTHING_WRITTEN, interrupt_note

__all__ = ["OPERATORS", "build_operator", "load_array", "restore", "save_restore_grid", "restore_checkpoint",
           "RestoredWritten"]

#: Operator names of ``monge restore --operator``.
OPERATORS = ("inpaint", "denoise", "blur", "downsample", "project")


def check_restorable(model: nn.Module, config: Config) -> None:
    """Refuse a run that restoration does not support: an autoencoder (nothing to sample) and a latent
    flow (the measurement acts on images, the flow on latents)."""
    from .objectives import NOTHING_TO_SAMPLE

    if getattr(model, "sampler_kind", "ode") is None:
        raise ValueError(NOTHING_TO_SAMPLE)
    if config.data.latent is not None:
        raise ValueError(f"monge restore does not support latent flows yet (data.latent: {config.data.latent}): a "
                         "measurement acts on images and the flow on the autoencoder's latents; restore with a flow "
                         "trained on the images themselves")


def build_operator(name: str, shape: tuple[int, ...], *, mask: Tensor | None = None, blur_std: float = 1.0,
                   factor: int = 2, m: int | None = None, seed: int = 0) -> LinearOperator:
    """The operator ``name`` (one of :data:`OPERATORS`) for data of sample shape ``shape``.

    ``inpaint`` needs ``mask`` (1 = observed; the data's shape, or one broadcasting to it);
    ``blur``: Gaussian of std ``blur_std`` pixels, at most the image's longest side (a wider kernel
    averages the whole image almost uniformly, and its ``6 s + 1`` weights grow without use);
    ``downsample``: average pooling by ``factor``;
    ``project``: ``m`` random measurements drawn from ``seed``.
    """
    if name not in OPERATORS:
        raise ValueError(f"operator must be one of {', '.join(OPERATORS)}, got {name!r}")
    if name != "inpaint" and mask is not None:
        raise ValueError(f"--mask belongs to --operator inpaint, not {name}")
    if name == "inpaint":
        if mask is None:
            raise ValueError("--operator inpaint needs --mask m.npy (1 = observed, 0 = missing)")
        return Mask(mask, shape)
    if name == "denoise":
        return Identity(shape)
    if name == "blur":
        side = max(shape[-2:]) if len(shape) >= 2 else 0
        check_number(blur_std, "--blur-std", 0.0, max(side, 1), low_open=True)  # wider: a near-flat average
        return GaussianBlur(shape, blur_std)
    if name == "downsample":
        return AvgPool(shape, factor)
    if m is None:
        raise ValueError("--operator project needs the number of measurements --m")
    return RandomProjection(shape, m, seed)


def load_array(path: str | Path, name: str) -> Tensor:
    """A float32 tensor from a ``.npy`` file, with a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} file {path} does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{name} file {path} is not a readable .npy array ({err})") from None
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise ValueError(f"{name} file {path} holds {arr.dtype} values, not numbers")
    return torch.from_numpy(np.asarray(arr, dtype=np.float32))


def as_batch(y: Tensor, shape: tuple[int, ...], name: str, what: str) -> tuple[Tensor, bool]:
    """``(batch, *shape)`` from one item of ``shape`` or a batch of them; the flag says whether
    a batch was given. Raises with both shapes when ``y`` fits neither."""
    check_finite(y, name)
    if tuple(y.shape) == shape:
        return y[None], False
    if y.dim() == len(shape) + 1 and tuple(y.shape[1:]) == shape and y.shape[0] > 0:
        return y, True
    raise ValueError(f"{name} has shape {tuple(y.shape)}, but {what} has shape {shape} (or a batch "
                     f"(N, {', '.join(map(str, shape))})); build the measurement for this run's data")


def restore(model: nn.Module, config: Config, operator: LinearOperator, y: Tensor, *, sigma: float = 0.0,
            solver: str = "pigdm", nfe: int = 100, n: int = 8, seed: int = 0,
            options: dict[str, Any] | None = None) -> Tensor:
    """``n`` posterior samples ``(batch, n, *shape)`` for each measurement of ``y``
    ``(batch, *measurement_shape)``, from the run's velocity ``model`` and path."""
    from .data.sources import GaussianSource, build_data
    from .generate import path_schedule

    source, target = build_data(config.data)
    if tuple(operator.shape) != tuple(target.shape):
        raise ValueError(f"the run was trained on data of shape {target.shape}, the operator is built for "
                         f"{operator.shape}")
    if not isinstance(source, GaussianSource):
        raise ValueError(f"the posterior solvers start from N(0, I) noise; this run's source is {source!r}")
    schedule = path_schedule(config)
    fn = INVERSE_SOLVERS.get(solver)
    y = operator.check_measurement(y, "the measurement")
    check_number(sigma, "sigma", 0.0, float("inf"), high_open=True)
    n = check_positive_int(n, "n", 10_000)
    nfe = check_positive_int(nfe, "nfe", 100_000)
    b = y.shape[0]
    generator = torch.Generator().manual_seed(seed)
    ys = y.repeat_interleave(n, 0)
    x0 = source.sample(b * n, generator=generator)
    x = fn(
        model,
        schedule,
        operator,
        ys,
        sigma_y=sigma,
        prediction=prediction_of(model, config.objective.name),
        nfe=nfe,
        x0=x0,
        generator=generator,
        **(options or {}),
    )
    return x.reshape(b, n, *operator.shape)


def measurement_image(operator: LinearOperator, y: Tensor) -> Tensor:
    """The measurement drawn in data space: itself when it has the data's shape, else :math:`A^+ y`
    (nearest upsampling for a downsampling)."""
    if tuple(operator.measurement_shape) == tuple(operator.shape):
        return y
    return operator.pseudo_inverse(y)


def save_restore_grid(operator: LinearOperator, y: Tensor, samples: Tensor, path: str | Path,
                      truth: Tensor | None = None, max_samples: int = 8) -> Path:
    """One row per measurement: the measurement, up to ``max_samples`` samples and the truth
    (if given), clipped to [-1, 1]."""
    from .imageio import save_image_grid

    if samples.dim() != 5:
        raise ValueError(f"a PNG grid needs image data (C, H, W); samples have shape {tuple(samples.shape[2:])}")
    k = min(max_samples, samples.shape[1])
    rows = [torch.cat([measurement_image(operator, y[i:i + 1]), samples[i, :k]]
                      + ([truth[i:i + 1]] if truth is not None else [])) for i in range(y.shape[0])]
    cols = rows[0].shape[0]
    scale = max(1, 64 // samples.shape[-1])
    return save_image_grid(torch.cat(rows).clamp(-1, 1).float(), path, nrow=cols, scale=scale)


@dataclass(frozen=True)
class RestoredWritten:
    """What :func:`restore_checkpoint` wrote: ``n`` samples for each of ``measurements`` to ``output``,
    and the PNG ``grid`` (``None``: none) with the truth drawn when ``with_truth``."""

    n: int
    measurements: int
    output: Path
    grid: Path | None = None
    with_truth: bool = False


@interrupt_note(NOTHING_WRITTEN)
def restore_checkpoint(
    checkpoint: str | Path,
    *,
    operator: str,
    input: str | Path,
    mask: str | Path | None = None,
    truth: str | Path | None = None,
    output: str | Path | None = None,
    grid: str | Path | None = None,
    ema: bool = True,
    blur_std: float = 1.0,
    factor: int = 2,
    m: int | None = None,
    projection_seed: int = 0,
    **options: Any,
) -> RestoredWritten:
    """``monge restore``: posterior samples of the run at ``checkpoint`` given the measurement in the
    ``.npy`` file ``input`` (one, or a batch), written to ``output`` (default ``RUN/restored.npy``):
    ``(n, *shape)`` for one measurement, ``(N, n, *shape)`` for a batch; with ``grid``, a PNG of the
    measurement, samples and ``truth`` per row. ``operator`` and its settings (``mask``, ``blur_std``,
    ``factor``, ``m``, ``projection_seed``) go to :func:`build_operator`; ``options`` (sigma, solver,
    nfe, n, seed) to :func:`restore`. Every file is checked before the solver runs."""
    from .generate import check_finite_output
    from .outputs import check_output_file, write_array
    from .run.checkpoint import run_dir_of
    from .run.load import load_model

    run_dir = run_dir_of(checkpoint)
    if operator == "blur":  # before any work; the image's side bounds it once the run is read
        check_positive(blur_std, "--blur-std")
    output = Path(output) if output is not None else run_dir / "restored.npy"
    if output.suffix != ".npy":
        raise ValueError(f"-o needs a .npy path, got {output}")
    check_output_file(output, instead=run_dir / "restored.npy")
    grid = None if grid is None else Path(grid)
    if grid is not None:
        if grid.suffix.lower() != ".png":
            raise ValueError(f"--grid needs a .png path, got {grid}")
        check_output_file(grid, "--grid", instead=run_dir / "restored.png")
    inputs = [Path(p).resolve() for p in (input, mask, truth) if p is not None]
    if output.resolve() in inputs:
        raise ValueError(f"-o {output} would overwrite an input file; choose another output path")
    y = load_array(input, "--input")
    mask_t = load_array(mask, "--mask") if mask is not None else None
    model, cfg = load_model(checkpoint, ema=ema)
    check_restorable(model, cfg)
    shape = getattr(model, "shape", None)
    if shape is None:  # a checkpoint that does not record its sample shape: read the data
        from .data.sources import build_data

        shape = build_data(cfg.data)[1].shape
    shape = tuple(shape)
    op = build_operator(operator, shape, mask=mask_t, blur_std=blur_std, factor=factor, m=m, seed=projection_seed)
    y, batched = as_batch(y, op.measurement_shape, "--input", f"a {operator} measurement of this run's data {shape}")
    truth_t = None
    if truth is not None:
        truth_t, _ = as_batch(load_array(truth, "--truth"), shape, "--truth", "this run's data")
        if truth_t.shape[0] != y.shape[0]:
            raise ValueError(f"--truth holds {truth_t.shape[0]} items, --input {y.shape[0]}")
    if grid is not None and len(shape) != 3:
        raise ValueError(f"--grid needs image data (C, H, W); this run's data has shape {shape}")
    x = restore(model, cfg, op, y, **options)
    check_finite_output(x, "the posterior samples", "nothing was written; use more steps (--nfe) or another --solver")
    write_array(output, (x if batched else x[0]).cpu().numpy())
    if grid is not None:
        save_restore_grid(op, y, x, grid, truth_t)
    return RestoredWritten(x.shape[1], y.shape[0], output, grid, truth_t is not None)
