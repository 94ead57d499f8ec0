r"""The latent space a flow works in: a codec :math:`x \leftrightarrow z` and data encoded once.

A latent flow learns :math:`\mathcal N(0, I) \to E_\sharp\,p_{\text{data}}` on :math:`z = E(x)` and
samples :math:`x = D(z_1)`. The pieces:

- :class:`LatentCodec`, what a flow needs of an autoencoder: ``encode``, ``decode``, the
  ``image_shape`` it takes, the ``latent_shape`` it gives and a ``fingerprint`` of its weights and
  configuration. :func:`load_codec` reads one: a monge autoencoder run (model ``autoencoder``) or a
  diffusers ``AutoencoderKL`` / ``AutoencoderTiny`` folder written by ``save_pretrained``
  (optional: ``pip install monge[diffusers]``; read with ``local_files_only``, nothing is downloaded),
  whose latents are scaled as diffusers does, :math:`z = c\,(E(x) - s)` with ``scaling_factor``
  :math:`c` and ``shift_factor`` :math:`s`.
- :func:`encode_dataset`: the latents of a finite image set, encoded once and cached in
  ``latents-<hash>.safetensors`` with the fingerprints of the data and of the encoder; a cache built
  by another encoder is refused (the flow trained on it could not be decoded by this one).
- :class:`LatentTarget`: those latents as a finite data source (labels kept), so every coupling,
  the semi-discrete map on all encoded training points included, sees ordinary data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from ._validation import check_finite, check_positive_int
from .data.sources import DataSource, FiniteRows
from .models import build_model
from .models.autoencoder import AutoEncoder
from .outputs import atomic_write_bytes
from .run.checkpoint import CheckpointError, load_checkpoint, load_module_state

__all__ = [
    "LatentCodec",
    "AutoEncoderCodec",
    "DiffusersCodec",
    "LatentTarget",
    "load_codec",
    "encode_dataset",
    "tensor_fingerprint",
    "check_image_shape",
    "check_codec_data",
    "check_fingerprint",
    "decode_latents",
    "DIFFUSERS_CLASSES",
]

#: diffusers autoencoder classes :func:`load_codec` reads (``_class_name`` of their ``config.json``).
DIFFUSERS_CLASSES = ("AutoencoderKL", "AutoencoderTiny")
#: ``format`` of a latent cache's metadata.
CACHE_FORMAT = "monge-latents"


@runtime_checkable
class LatentCodec(Protocol):
    """An autoencoder as a flow sees it: images ``(N, *image_shape)`` <-> latents ``(N, *latent_shape)``."""

    image_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]

    def encode(self, x: Tensor) -> Tensor:
        """Latents of images ``x`` (deterministic: the posterior mean of a VAE)."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Images of latents ``z``."""
        ...

    def fingerprint(self) -> str:
        """A hash of the weights and the configuration: equal fingerprints encode alike."""
        ...


def check_image_shape(codec: LatentCodec, shape: tuple[int, ...], what: str = "the images") -> None:
    """Raise ``ValueError`` naming both shapes and the fix when ``shape`` (one image) is not the
    codec's ``image_shape``."""
    if tuple(shape) != tuple(codec.image_shape):
        raise ValueError(
            f"{what} have shape {tuple(shape)} but the autoencoder {getattr(codec, 'source', '')!s} takes "
            f"{tuple(codec.image_shape)}; use data of that size and channels (e.g. the data the autoencoder "
            "was trained on) or train an autoencoder on this data")


def _as_spec(spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, Mapping):
        out = dict(spec)
        if isinstance(out.get("params"), Mapping) and set(out) == {"name", "params"}:
            out = {"name": out["name"], **out["params"]}
        return out
    if hasattr(spec, "name") and hasattr(spec, "params"):
        return {"name": spec.name, **dict(spec.params)}
    return {"name": repr(spec)}


def check_codec_data(codec: LatentCodec, target: Any) -> None:
    """Raise ``ValueError`` naming both when the run that trained ``codec`` read another
    ``data.target`` than ``target`` (a name, a mapping or a config component); codecs without a
    run (diffusers folders, bare models) pass."""
    run_config = getattr(codec, "run_config", None) or {}
    theirs = (run_config.get("data") or {}).get("target") if isinstance(run_config, Mapping) else None
    if theirs is None or _as_spec(theirs) == _as_spec(target):
        return
    raise ValueError(
        f"the autoencoder {getattr(codec, 'source', '')} was trained on data.target {_as_spec(theirs)} but the "
        f"flow's data.target is {_as_spec(target)}; point data.latent at an autoencoder trained on this data, "
        "or train one (monge train configs/digits-autoencoder.yaml with the flow's data.target)")


def check_fingerprint(codec: LatentCodec, expected: str, what: str) -> None:
    """Raise ``ValueError`` when ``codec`` is not the autoencoder ``what`` (a run) was trained with,
    i.e. its :meth:`~LatentCodec.fingerprint` is not ``expected``: that run's samples would be
    decoded by another decoder."""
    now = codec.fingerprint()
    if now != expected:
        raise ValueError(
            f"{what} was trained on the latents of an autoencoder with fingerprint {str(expected)[:12]}, but "
            f"{getattr(codec, 'source', 'the autoencoder')} now has {now[:12]} (refit or retrained since); its "
            "samples cannot be decoded by it. Use the autoencoder the run was trained with, or train the flow again")


def tensor_fingerprint(x: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (hex)."""
    h = hashlib.sha256()
    _hash_tensor(h, "", x)
    return h.hexdigest()


def _hash_tensor(h: Any, name: str, x: Tensor) -> None:
    x = x.detach().to("cpu").contiguous()
    h.update(f"{name}|{x.dtype}|{tuple(x.shape)}|".encode())
    h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b"")


def _module_fingerprint(module: nn.Module, config: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, value in sorted(module.state_dict().items()):
        _hash_tensor(h, name, value)
    return h.hexdigest()


class _ModuleCodec:
    """Shared part of the codecs: a frozen module on one device, shape checks, no gradients."""

    module: nn.Module
    image_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    source: str

    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _check(self, x: Tensor, shape: tuple[int, ...], name: str) -> None:
        if not torch.is_tensor(x) or x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] == 0:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, shape))}) for the autoencoder "
                             f"{self.source}, got {got}")

    def _dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Latents ``(N, *latent_shape)`` of images ``(N, *image_shape)``, on ``x``'s device and of its dtype
        (the network runs on its own device and dtype)."""
        self._check(x, self.image_shape, "images")
        return self._encode(x.to(self._device(), self._dtype())).to(x.device, x.dtype)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Images ``(N, *image_shape)`` of latents ``(N, *latent_shape)``, on ``z``'s device and of its dtype."""
        self._check(z, self.latent_shape, "latents")
        return self._decode(z.to(self._device(), self._dtype())).to(z.device, z.dtype)

    def _encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """SHA-256 of the configuration and every weight and buffer (the latent scale included)."""
        return _module_fingerprint(self.module, self._config())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, image_shape={self.image_shape}, latent_shape={self.latent_shape})"
        )


class AutoEncoderCodec(_ModuleCodec):
    r"""A monge :class:`~monge.models.autoencoder.AutoEncoder` as a codec: ``encode`` gives its scaled
    latents :math:`(\mu - s) / c`, ``decode`` undoes the scale. ``run_config`` is the config of the
    run that trained it (``{}`` for a bare model), e.g. to compare its data with a flow's. The codec
    freezes ``model`` (evaluation mode, no gradients): give it a trained model, not one in training."""

    module: AutoEncoder

    def __init__(
        self, model: AutoEncoder, source: str = "autoencoder", run_config: dict[str, Any] | None = None
    ) -> None:
        if not isinstance(model, AutoEncoder):
            raise ValueError(f"AutoEncoderCodec needs an AutoEncoder, got {type(model).__name__}")
        self.module = model.eval().requires_grad_(False)
        self.image_shape = tuple(model.shape)
        self.latent_shape = model.latent_shape()
        self.source = str(source)
        self.run_config = dict(run_config or {})

    def _encode(self, x: Tensor) -> Tensor:
        return self.module.encode(x)

    def _decode(self, z: Tensor) -> Tensor:
        return self.module.decode(z)

    def _config(self) -> dict[str, Any]:
        m = self.module
        return {"kind": "monge-autoencoder", "image_shape": list(self.image_shape), "channels": list(m.channels),
                "latent_channels": m.latent_channels, "kl": m.kl}


class DiffusersCodec(_ModuleCodec):
    r"""A diffusers ``AutoencoderKL`` or ``AutoencoderTiny`` as a codec, latents scaled as diffusers
    pipelines scale them: :math:`z = c\,(E(x) - s)`, :math:`x = D(z / c + s)` with ``scaling_factor``
    :math:`c` and ``shift_factor`` :math:`s` (0 when unset); ``AutoencoderKL`` encodes to its
    posterior mean. Images are in :math:`[-1, 1]`, as both expect. The networks are fully
    convolutional: ``image_shape`` defaults to ``(in_channels, sample_size, sample_size)`` of the
    config and may be any size the network downsamples evenly."""

    module: Any  # a diffusers autoencoder: diffusers has no type information

    def __init__(self, vae: nn.Module, source: str = "diffusers", image_shape: tuple[int, ...] | None = None) -> None:
        name = type(vae).__name__
        if name not in DIFFUSERS_CLASSES:
            raise ValueError(f"DiffusersCodec takes one of {', '.join(DIFFUSERS_CLASSES)}, got {name}")
        self.module = vae.eval().requires_grad_(False)
        self.kind = name
        cfg: Any = vae.config  # a diffusers config object (untyped)
        self.scaling_factor = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(cfg, "shift_factor", 0.0) or 0.0)
        self.source = str(source)
        if image_shape is None:
            size = cfg.sample_size if isinstance(getattr(cfg, "sample_size", None), int) else 32
            image_shape = (int(cfg.in_channels), size, size)
        self.image_shape = _image_shape_arg(image_shape)
        if self.image_shape[0] != int(cfg.in_channels):
            raise ValueError(f"image_shape {self.image_shape} has {self.image_shape[0]} channels but the {name} at "
                             f"{self.source} takes {cfg.in_channels}; convert the images or use another autoencoder")
        probe = torch.zeros(1, *self.image_shape, device=self._device(), dtype=self._dtype())
        with torch.no_grad():
            self.latent_shape = tuple(self._raw_encode(probe).shape[1:])
            back = self._raw_decode(torch.zeros(1, *self.latent_shape, device=self._device(), dtype=self._dtype()))
        if tuple(back.shape[1:]) != self.image_shape:
            raise ValueError(f"the {name} at {self.source} does not decode its latents of images {self.image_shape} "
                             "back to that size; use an image size its down-sampling divides evenly")

    def _raw_encode(self, x: Tensor) -> Tensor:
        if self.kind == "AutoencoderKL":
            return self.module.encode(x).latent_dist.mean
        return self.module.encode(x).latents

    def _raw_decode(self, z: Tensor) -> Tensor:
        return self.module.decode(z).sample

    def _encode(self, x: Tensor) -> Tensor:
        return (self._raw_encode(x) - self.shift_factor) * self.scaling_factor

    def _decode(self, z: Tensor) -> Tensor:
        return self._raw_decode(z / self.scaling_factor + self.shift_factor)

    def _config(self) -> dict[str, Any]:
        return {"kind": self.kind, "image_shape": list(self.image_shape), "config": dict(self.module.config)}


def _image_shape_arg(shape: Any) -> tuple[int, ...]:
    dims = tuple(shape) if isinstance(shape, (list, tuple)) else ()
    if len(dims) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"image_shape must be (C, H, W), got {shape!r}")
    return dims


def load_codec(spec: str | Path, device: torch.device | str = "cpu", *,
               image_shape: tuple[int, ...] | None = None, ema: bool = True) -> LatentCodec:
    """The codec at ``spec``: a monge run directory or checkpoint of model ``autoencoder`` (its EMA
    weights by default), or a folder written by diffusers' ``save_pretrained`` holding an
    ``AutoencoderKL`` or ``AutoencoderTiny``. ``image_shape`` (one image, ``(C, H, W)``) is checked
    against a monge autoencoder's and sets a diffusers one's."""
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"latent: {spec} not found; give the run directory of a trained autoencoder "
                         "(monge train configs/digits-autoencoder.yaml) or a folder written by diffusers' "
                         "save_pretrained")
    if path.is_dir() and (path / "config.json").is_file() and not (path / "checkpoint.safetensors").exists():
        return _load_diffusers(path, device, image_shape)
    codec = _load_monge(path, device, ema)
    if image_shape is not None:
        check_image_shape(codec, tuple(image_shape), "the flow's images")
    return codec


def _load_monge(path: Path, device: torch.device | str, ema: bool) -> AutoEncoderCodec:
    tensors, config, state = load_checkpoint(path)
    model_cfg = config.get("model")
    name = model_cfg.get("name") if isinstance(model_cfg, dict) else model_cfg
    if name != "autoencoder":
        raise ValueError(f"latent: {path} is a run of model {name!r}, not an autoencoder; give the run of a "
                         "model: {name: autoencoder} (e.g. monge train configs/digits-autoencoder.yaml)")
    params = {k: v for k, v in model_cfg.items() if k != "name"} if isinstance(model_cfg, dict) else {}
    if isinstance(params.get("params"), dict) and len(params) == 1:
        params = dict(params["params"])
    shape = state.get("data_shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise CheckpointError(f"checkpoint {path}: state.data_shape must be the (C, H, W) of the autoencoder's "
                              f"images, got {shape!r}")
    try:
        model = build_model("autoencoder", params, tuple(shape))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild its autoencoder ({err})") from None
    prefix = "ema." if ema else "model."
    load_module_state(model, tensors, prefix, f"checkpoint {path}")
    bad = [k for k, v in tensors.items() if k.startswith(prefix) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite autoencoder weights ({bad[0]}); train it again "
                              "with a lower train.lr")
    assert isinstance(model, AutoEncoder)
    return AutoEncoderCodec(model.to(device), source=str(path), run_config=config)


def _load_diffusers(path: Path, device: torch.device | str, image_shape: tuple[int, ...] | None) -> DiffusersCodec:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"latent: {path / 'config.json'} is not readable JSON ({err})") from None
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if kind not in DIFFUSERS_CLASSES:
        raise ValueError(f"latent: {path} holds a diffusers {kind!r}; monge reads {', '.join(DIFFUSERS_CLASSES)} "
                         "(or a monge autoencoder run)")
    try:
        import diffusers
    except ImportError:
        raise ImportError(f"latent: {path} is a diffusers {kind}; reading it needs diffusers: "
                          "pip install 'monge[diffusers]'") from None
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # config keys a class registers and ignores are not the user's concern
    try:
        vae = getattr(diffusers, kind).from_pretrained(path, local_files_only=True, low_cpu_mem_usage=False)
    finally:
        diffusers_logging.set_verbosity(level)
    return DiffusersCodec(vae.to(device), source=str(path), image_shape=image_shape)


def _cache_path(cache_dir: Path, data_fingerprint: str, image_shape: tuple[int, ...]) -> Path:
    key = hashlib.sha256(json.dumps([data_fingerprint, list(image_shape)]).encode()).hexdigest()[:16]
    return cache_dir / f"latents-{key}.safetensors"


def encode_dataset(
    codec: LatentCodec,
    images: Tensor,
    *,
    cache_dir: str | Path | None,
    batch_size: int = 256,
    data_fingerprint: str | None = None,
    rebuild: bool = False,
) -> Tensor:
    """The latents ``(N, *latent_shape)`` of ``images`` ``(N, *image_shape)``, encoded once.

    With ``cache_dir`` they are kept in ``cache_dir/latents-<hash>.safetensors`` (the hash of the
    data's fingerprint), written atomically with the fingerprints of the data and of the encoder,
    and read back on the next call with the same data and encoder. A cache written by another
    encoder (a refit or retrained autoencoder) is refused, since what was trained on its latents
    cannot be decoded by the new one; ``rebuild=True`` encodes again and replaces it.
    ``data_fingerprint`` names the data (default: :func:`tensor_fingerprint` of ``images``).
    The latents are on the CPU; batches go through the codec on its own device.
    """
    if not torch.is_tensor(images) or images.dim() < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty tensor (N, C, H, W), got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    check_image_shape(codec, tuple(images.shape[1:]))
    check_positive_int(batch_size, "batch_size", 2**20)
    data_fp = tensor_fingerprint(images) if data_fingerprint is None else str(data_fingerprint)
    encoder_fp = codec.fingerprint()
    path = None if cache_dir is None else _cache_path(Path(cache_dir), data_fp, tuple(codec.image_shape))
    if path is not None and path.is_file() and not rebuild:
        return _read_cache(path, data_fp, encoder_fp, images.shape[0], tuple(codec.latent_shape))
    latents = torch.cat([codec.encode(chunk).to("cpu", torch.float32) for chunk in images.split(batch_size)])
    check_finite(latents, "the encoded latents (the autoencoder's output)")
    if path is not None:
        meta = {"format": CACHE_FORMAT, "data": data_fp, "encoder": encoder_fp,
                "source": str(getattr(codec, "source", "")), "image_shape": json.dumps(list(codec.image_shape))}
        atomic_write_bytes(path, st_save({"latents": latents.contiguous()}, metadata=meta))
    return latents


def _read_cache(path: Path, data_fp: str, encoder_fp: str, n: int, latent_shape: tuple[int, ...]) -> Tensor:
    data = path.read_bytes()
    try:
        latents = st_load(data)["latents"]
        header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])
    except (SafetensorError, KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"latent cache {path} is unreadable ({err}); delete it or pass rebuild=True") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path} is not a monge latent cache; delete it or pass rebuild=True")
    if meta.get("data") != data_fp:
        raise ValueError(f"latent cache {path} was built from other data (fingerprint {str(meta.get('data'))[:12]}, "
                         f"the data now {data_fp[:12]}); delete it or pass rebuild=True to encode this data")
    if meta.get("encoder") != encoder_fp:
        raise ValueError(
            f"latent cache {path} was built with another encoder (fingerprint {str(meta.get('encoder'))[:12]}, "
            f"the autoencoder {meta.get('source', '')} now {encoder_fp[:12]}): the autoencoder was refit or "
            "retrained since. A flow trained on the old latents cannot be decoded by the new autoencoder: pass "
            "rebuild=True (and train the flow again), or use the autoencoder the cache was built with")
    if tuple(latents.shape) != (n, *latent_shape):
        raise ValueError(f"latent cache {path} holds latents {tuple(latents.shape)}, expected {(n, *latent_shape)}; "
                         "delete it or pass rebuild=True")
    return latents


def decode_latents(codec: LatentCodec, z: Tensor, batch_size: int = 256) -> Tensor:
    """Images of latents ``z`` ``(N, *latent_shape)``, decoded in batches of ``batch_size``."""
    check_positive_int(batch_size, "batch_size", 2**20)
    if not torch.is_tensor(z) or z.dim() < 1 or z.shape[0] == 0:
        raise ValueError(f"z must be a non-empty batch of latents (N, {', '.join(map(str, codec.latent_shape))}), "
                         f"got {tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")
    return torch.cat([codec.decode(chunk) for chunk in z.split(batch_size)])


class LatentTarget(FiniteRows):
    """Encoded images as a finite data source: ``data`` are the latents ``(N, *latent_shape)``,
    ``labels`` (and ``num_classes``, ``class_names``) those of the images, ``codec`` decodes
    samples back to images (:meth:`decode`). Couplings, the semi-discrete map on all of ``data``
    included, treat it as any finite data set."""

    #: the encoded held-out split, and the image set encoded (set by :func:`monge.run.latent.encode_target`)
    held_out: LatentTarget | None = None
    images: DataSource | None = None

    def __init__(self, codec: LatentCodec, latents: Tensor, labels: Tensor | None = None, name: str = "latents",
                 num_classes: int | None = None, class_names: list[str] | None = None) -> None:
        if not torch.is_tensor(latents) or tuple(latents.shape[1:]) != tuple(codec.latent_shape) or not len(latents):
            got = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
            raise ValueError(f"latents must have shape (N, {', '.join(map(str, codec.latent_shape))}), got {got}")
        if labels is not None and tuple(labels.shape) != (latents.shape[0],):
            raise ValueError(f"labels must have shape ({latents.shape[0]},), got {tuple(labels.shape)}")
        self.codec = codec
        self.data = latents
        self.labels = labels
        self.name = str(name)
        self.num_classes = num_classes
        self.class_names = class_names
        self.shape = tuple(codec.latent_shape)
        self.image_shape = tuple(codec.image_shape)

    @classmethod
    def from_images(cls, codec: LatentCodec, images: DataSource, *, cache_dir: str | Path | None,
               batch_size: int = 256, data_fingerprint: str | None = None, rebuild: bool = False) -> LatentTarget:
        """The latents of a finite image source ``images`` (see :func:`encode_dataset`), its labels kept."""
        data = getattr(images, "data", None)
        if not torch.is_tensor(data):
            raise ValueError(f"a latent flow needs a finite image data set to encode, got {images!r}")
        check_image_shape(codec, tuple(data.shape[1:]), f"the images of {getattr(images, 'name', 'the data')}")
        latents = encode_dataset(codec, data, cache_dir=cache_dir, batch_size=batch_size,
                                 data_fingerprint=data_fingerprint, rebuild=rebuild)
        return cls(codec, latents, getattr(images, "labels", None), f"{getattr(images, 'name', 'images')}-latent",
                   getattr(images, "num_classes", None), getattr(images, "class_names", None))

    def decode(self, z: Tensor, batch_size: int = 256) -> Tensor:
        """Images of latents ``z`` ``(N, *shape)``, decoded in batches of ``batch_size``."""
        return decode_latents(self.codec, z, batch_size)

    def __repr__(self) -> str:
        return f"LatentTarget(name={self.name!r}, n={len(self)}, shape={self.shape}, codec={self.codec!r})"
