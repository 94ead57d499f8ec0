"""The latent space of a run (``data.latent``): its autoencoder checked against the run's data, the
data encoded once into the run directory, and what a checkpoint records of the autoencoder.

A latent flow's checkpoint state holds ``latent``: the autoencoder's spec (``data.latent``), its
:meth:`~monge.latent.LatentCodec.fingerprint` and its image and latent shapes. Resuming, sampling
and evaluating the run load the autoencoder again and refuse one whose fingerprint differs (refit
or retrained since): the flow's samples could not be decoded by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError
from ..data.sources import DataSource, GaussianSource, build_source
from ..latent import (
    DiffusersCodec,
    LatentCodec,
    LatentTarget,
    check_codec_data,
    check_fingerprint,
    check_image_shape,
    load_codec,
)
from .checkpoint import CheckpointError

__all__ = [
    "open_latent",
    "open_codec",
    "encode_target",
    "encode_run_target",
    "latent_state",
    "stored_latent",
    "check_latent_state",
    "run_codec",
    "latent_source",
    "LATENT_STATE",
]

#: Key of a latent flow's autoencoder record in its checkpoint state.
LATENT_STATE = "latent"


def _image_shape(images: DataSource, config: Config) -> tuple[int, ...]:
    data = getattr(images, "data", None)
    if not torch.is_tensor(data) or data.dim() != 4:
        raise ConfigError(f"data.latent: a latent flow encodes a finite set of images, but data.target "
                          f"{config.data.target} is not one; use digits, faces, textures, an image folder or an "
                          "image array (or drop data.latent)")
    return tuple(data.shape[1:])


def _latent_spec(config: Config) -> str:
    """``config.data.latent``, refused when unset (the run is not a latent flow)."""
    if config.data.latent is None:
        raise ConfigError("data.latent is not set: this run is not a latent flow")
    return config.data.latent


def open_codec(config: Config, images: DataSource, device: torch.device | str = "cpu") -> LatentCodec:
    """The autoencoder of ``config.data.latent``, checked against the flow's ``images`` (its
    ``data.target``): a monge autoencoder run must have been trained on the same ``data.target``,
    and any autoencoder must take images of their shape. Every refusal names both and the fix."""
    shape, spec = _image_shape(images, config), _latent_spec(config)
    try:
        codec = load_codec(spec, device)
        if isinstance(codec, DiffusersCodec) and codec.image_shape != shape:
            codec = DiffusersCodec(codec.module, codec.source, shape)
        check_codec_data(codec, config.data.target)
        check_image_shape(codec, shape, f"the images of the flow's data.target {config.data.target}")
    except (ValueError, OSError) as err:
        raise ConfigError(f"data.latent: {err}") from None
    return codec


def encode_target(
    codec: LatentCodec, images: DataSource, run_dir: str | Path, *, rebuild: bool = False
) -> LatentTarget:
    """The latents of ``images`` and of their held-out split (``images.held_out``, when they have one),
    encoded once and cached in ``run_dir`` (:func:`monge.latent.encode_dataset`; ``rebuild`` encodes
    again). The result keeps the image set as ``.images`` and the encoded split as ``.held_out``."""
    try:
        target = LatentTarget.from_images(codec, images, cache_dir=run_dir, rebuild=rebuild)
        held = getattr(images, "held_out", None)
        held_latents = None if held is None else LatentTarget.from_images(codec, held, cache_dir=run_dir,
                                                                           rebuild=rebuild)
    except ValueError as err:
        if "another encoder" not in str(err):
            raise
        raise ValueError(f"{err} (for a training run: monge train RECIPE --overwrite)") from None
    target.held_out = held_latents
    target.images = images
    return target


def open_latent(config: Config, images: DataSource, device: torch.device | str = "cpu"
                ) -> tuple[LatentCodec, DataSource, DataSource, dict[str, Any]]:
    """A latent flow's ``(codec, images, source, record)``: its checked autoencoder
    (:func:`open_codec`), the image set, the source on the latent shape (:func:`latent_source`) and
    the checkpoint record (:func:`latent_state`)."""
    codec = open_codec(config, images, device)
    return codec, images, latent_source(config, tuple(codec.latent_shape)), latent_state(config, codec)


def encode_run_target(trainer: Any, rebuild: bool = False) -> LatentTarget:
    """The trainer's encoded target (:func:`encode_target` into its run directory): rank 0 encodes
    (``rebuild``: a fresh run encodes again), the other ranks then read its cache."""
    from . import distributed

    if trainer.dist.rank == 0:
        target = encode_target(trainer.codec, trainer.images, trainer.run_dir, rebuild=rebuild)
        distributed.barrier()
        return target
    distributed.barrier()
    return encode_target(trainer.codec, trainer.images, trainer.run_dir)


def latent_source(config: Config, shape: tuple[int, ...]) -> DataSource:
    """The run's source (t=0) on latents of ``shape``: ``data.source``, a bare ``gaussian`` taking that shape."""
    source = build_source(config.data.source)
    if isinstance(source, GaussianSource) and not source.shape_given:
        source = GaussianSource(list(shape))
    if tuple(source.shape) != tuple(shape):
        raise ConfigError(f"data.source {config.data.source} has sample shape {source.shape} but the latents of "
                          f"data.latent have {tuple(shape)}; use source: gaussian")
    return source


def latent_state(config: Config, codec: LatentCodec) -> dict[str, Any]:
    """The checkpoint record of a latent flow's autoencoder: spec, fingerprint, image and latent shapes."""
    return {"spec": str(config.data.latent), "fingerprint": codec.fingerprint(),
            "image_shape": list(codec.image_shape), "latent_shape": list(codec.latent_shape)}


def stored_latent(state: dict[str, Any], config: Config, path: str | Path) -> dict[str, Any] | None:
    """The checkpoint's autoencoder record (``None`` for a run without ``data.latent``), checked."""
    if config.data.latent is None:
        return None
    rec = state.get(LATENT_STATE)
    ok = isinstance(rec, dict) and isinstance(rec.get("fingerprint"), str) and all(
        isinstance(rec.get(k), list) and rec[k] and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                        for d in rec[k]) for k in ("image_shape", "latent_shape"))
    if not ok or not isinstance(rec, dict):
        raise CheckpointError(f"checkpoint {path} is a latent flow (data.latent: {config.data.latent}) but holds no "
                              f"valid record of its autoencoder (state.{LATENT_STATE}); train it again")
    return dict(rec)


def check_latent_state(stored: dict[str, Any] | None, codec: LatentCodec, what: str) -> None:
    """Refuse ``codec`` when it is not the autoencoder the run ``what`` was trained with (``stored``:
    :func:`stored_latent`'s record, ``None`` for a run trained without ``data.latent``)."""
    if stored is None:
        raise CheckpointError(f"{what} was trained without data.latent: it has no autoencoder to decode with")
    try:
        check_fingerprint(codec, stored["fingerprint"], what)
    except ValueError as err:
        raise CheckpointError(f"{err} (monge train RECIPE --overwrite)") from None


def run_codec(config: Config, stored: dict[str, Any], what: str, device: torch.device | str = "cpu") -> LatentCodec:
    """The autoencoder of a trained latent flow (``config.data.latent``), checked against the
    checkpoint's record ``stored`` (:func:`stored_latent`): the same weights, the same shapes."""
    spec = _latent_spec(config)
    try:
        codec = load_codec(spec, device, image_shape=tuple(stored["image_shape"]))
    except (ValueError, OSError) as err:
        raise ValueError(f"{what} decodes its samples with data.latent, which cannot be read: {err}") from None
    check_latent_state(stored, codec, what)
    return codec
