r"""The digits demo in a latent space: ``monge demo --data digits --latent RUN``.

Every coupling learns :math:`\mathcal N(0, I) \to E_\sharp\,p_{\text{data}}` on the latents
:math:`z = E(x)` of the autoencoder run ``RUN`` and is sampled as :math:`x = D(z_1)`:

* the demo's digits are ``data.target: {name: digits, size, holdout: 0.2, seed}``, the split the
  pixel demo scores on; the autoencoder must have been trained on exactly that target (so it never
  saw the held-out digits) and take images of that size, checked by
  :func:`monge.run.latent.open_codec` before anything is trained;
* the training digits and the held-out digits are encoded once
  (:func:`monge.run.latent.encode_target`, the cache a latent run uses), and every coupling, the
  semi-discrete map on all encoded training digits included, works on those latents;
* samples are decoded before they are scored against the held-out *images*, so the scores compare
  with the pixel demo's; the autoencoder's reconstruction of the held-out digits, scored by the
  same classifier (:func:`monge.evaluate.evaluate_reconstruction`), is the floor of every row.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .config import Config
from .evaluate import Reconstruction, evaluate_reconstruction, format_reconstruction
from .latent import LatentCodec, LatentTarget, decode_latents

__all__ = ["DemoLatent", "HOLDOUT", "demo_digits_target", "open_demo_latent"]

#: Share of the digits held out for scoring (the pixel demo's split, ``ImageDataset.split``).
HOLDOUT = 0.2


def demo_digits_target(size: int, seed: int) -> dict[str, Any]:
    """The demo's digits as a ``data.target``: ``size`` x ``size``, :data:`HOLDOUT` held out by ``seed``
    (``seed`` is left out at its default 0, as ``configs/digits-autoencoder.yaml`` writes it)."""
    return {"name": "digits", "size": int(size), "holdout": HOLDOUT, **({"seed": int(seed)} if seed else {})}


@dataclass
class DemoLatent:
    """The demo's latent space: the autoencoder ``spec`` (its ``codec``) and the digits ``images``
    (the training split, ``images.held_out`` the held-out split); after :meth:`encode`, their
    latents ``target`` (``target.held_out``: the held-out latents), the autoencoder's ``floor`` and
    the ``seconds`` the encoding took."""

    spec: str
    codec: LatentCodec
    images: Any
    target: LatentTarget | None = None
    floor: Reconstruction | None = None
    seconds: float = 0.0

    def encode(self, cache_dir: str | Path, classifier: nn.Module, seed: int = 0) -> LatentTarget:
        """Encode the digits once into ``cache_dir`` (replacing an earlier demo's latents) and measure the
        floor with ``classifier``."""
        from .run.latent import encode_target

        start = time.perf_counter()
        self.target = encode_target(self.codec, self.images, cache_dir, rebuild=True)
        self.seconds = time.perf_counter() - start
        codec = self.codec
        self.floor = evaluate_reconstruction(lambda x: codec.decode(codec.encode(x)), None, self.images,
                                             classifier=classifier, seed=seed)
        return self.target

    def decode(self, z: Tensor) -> Tensor:
        """Images of latents ``z``."""
        return decode_latents(self.codec, z)

    def report_lines(self) -> list[str]:
        """What the report says of the latent space: its shape, the autoencoder, the floor."""
        shape, image = tuple(self.codec.latent_shape), tuple(self.codec.image_shape)
        n = "The" if self.target is None else f"The {len(self.target)}"
        return [
            f"Latent space: every coupling trains on the {shape} latents ({math.prod(shape)} numbers per "
            f"{math.prod(image)}-pixel digit) of the autoencoder `{self.spec}` (fingerprint "
            f"{self.codec.fingerprint()[:12]}). {n} training digits were encoded once ({self.seconds:.1f} s); the "
            "semi-discrete maps are fitted on encoded training digits, the expressway noises an encoded training "
            "digit in latent space, and every sample is decoded before it is scored or drawn. The autoencoder's "
            "reconstruction of the held-out digits, scored by the same classifier, is the floor of every row: "
            "their samples go through the same decoder.",
            "",
        ] + ([] if self.floor is None else [format_reconstruction({self.spec: self.floor}, "Autoencoder floor"), ""])


def open_demo_latent(spec: str | Path, config: Config, model: str, model_spec: dict[str, Any]) -> DemoLatent:
    """The checked latent space of the demo's run ``config`` (its ``data.target`` and ``data.latent``):
    ``spec`` must be an autoencoder trained on those digits, and the demo's network ``model``
    (``model_spec``) must take its latents. One ``ValueError`` naming the fix, before any work."""
    from .data.sources import build_source
    from .models import build_model
    from .run.latent import open_codec

    images = build_source(config.data.target)
    try:
        codec = open_codec(config, images)
    except ValueError as err:
        target = config.data.target
        why = str(err).removeprefix("data.latent: ").removeprefix("latent: ")
        sets = " ".join(f"data.target.{k}={v}" for k, v in (target.params or {}).items())
        raise ValueError(
            f"--latent {spec}: {why}. The digits demo (--size, --seed) trains on data.target {target}: train its "
            f"autoencoder with monge train configs/digits-autoencoder.yaml {sets}, then pass its run to --latent"
        ) from None
    shape = tuple(codec.latent_shape)
    try:
        build_model(model_spec["name"], {k: v for k, v in model_spec.items() if k != "name"}, shape)
    except ValueError as err:
        raise ValueError(
            f"--model {model} cannot take the latents {shape} of --latent {spec} ({err}); use --model mlp, or an "
            "autoencoder whose latents the U-Net takes (height and width even: fewer levels in model.channels)"
        ) from None
    return DemoLatent(str(spec), codec, images)
