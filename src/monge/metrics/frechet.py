r"""Fréchet distances between feature distributions: FID and its data-set-classifier variant.

Features of two image sets are summarised by Gaussians :math:`\mathcal N(\mu_1, \Sigma_1)`,
:math:`\mathcal N(\mu_2, \Sigma_2)`, whose 2-Wasserstein (Fréchet) distance squared is
(Dowson & Landau 1982; FID of Heusel et al. 2017)

.. math:: d^2 = \|\mu_1 - \mu_2\|^2
          + \operatorname{tr}\big(\Sigma_1 + \Sigma_2 - 2\,(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}\big).

The trace term is computed from symmetric eigendecompositions in float64 (no complex
``sqrtm``): :math:`\operatorname{tr}(M^{1/2}) = \sum_i \sqrt{\max(\lambda_i(M), 0)}` for the
symmetric positive semi-definite :math:`M = \Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}`.

* :func:`classifier_frechet_distance`: features of monge's own data-set classifier
  (:mod:`monge.metrics.classifier`), the standard practice for MNIST-like data.
* :func:`inception_fid`: FID with Inception weights the user supplies as a local file (a
  TorchScript archive, or a state dict together with the module); nothing is downloaded.
  Numbers match published FIDs only with the reference network and preprocessing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_batch, check_batches, check_number, check_positive_int

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "classifier_frechet_distance",
    "load_feature_network",
    "network_features",
    "inception_fid",
]


def _as_f64(x: Any, name: str) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array or tensor, got {type(x).__name__}") from None
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(a)).sum())} NaN/Inf values; clean the input first")
    return a


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` (float64) of ``features`` ``(n, d)``, ``n >= 2``."""
    f = _as_f64(features, "features")
    if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f"features must have shape (n, d) with n >= 2 samples, got {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 0.0
) -> float:
    r"""Squared Fréchet distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and :math:`\mathcal N(\mu_2, \Sigma_2)`.

    ``eps`` adds :math:`\epsilon I` to both covariances (a regulariser for rank-deficient
    estimates, as pytorch-fid does on failure; the eigen route needs none). Returns a float
    :math:`\ge 0` (clipped at 0 against round-off).
    """
    m1, m2 = _as_f64(mu1, "mu1"), _as_f64(mu2, "mu2")
    s1, s2 = _as_f64(sigma1, "sigma1"), _as_f64(sigma2, "sigma2")
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}) to match mu1, got {s.shape}")
        if not np.allclose(s, s.T, rtol=1e-6, atol=1e-8 * max(1.0, float(np.abs(s).max()))):
            raise ValueError(f"{name} must be a symmetric covariance matrix")
    eps = check_number(eps, "eps", 0.0, math.inf, high_open=True)
    if eps:
        s1 = s1 + eps * np.eye(d)
        s2 = s2 + eps * np.eye(d)
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def frechet_distance_from_features(features1: Any, features2: Any, eps: float = 0.0) -> float:
    """:func:`frechet_distance` between the Gaussian fits of two feature sets ``(n1, d)``, ``(n2, d)``."""
    mu1, s1 = feature_statistics(features1)
    mu2, s2 = feature_statistics(features2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"features1 and features2 must have the same dimension, got {mu1.shape[0]} and {mu2.shape[0]}")
    return frechet_distance(mu1, s1, mu2, s2, eps)


def classifier_frechet_distance(
    samples: Tensor, reference: Tensor, classifier: nn.Module, batch_size: int = 500
) -> float:
    """Fréchet distance in the penultimate features of a data-set classifier.

    ``classifier`` is a :class:`~monge.metrics.classifier.FeatureClassifier`, e.g. from
    :func:`~monge.metrics.classifier.load_or_train_classifier`; images are in [-1, 1].
    """
    from .classifier import classifier_features

    check_batches(samples, reference, "samples", "reference")
    return frechet_distance_from_features(
        classifier_features(classifier, samples, batch_size),  # type: ignore[arg-type]  # any module with .features
        classifier_features(classifier, reference, batch_size),  # type: ignore[arg-type]  # as above
    )


def load_feature_network(
    path: str | Path | None, module: nn.Module | None = None, device: torch.device | str = "cpu"
) -> nn.Module:
    """Load a feature network from a local file; never downloads.

    Without ``module``, ``path`` is a TorchScript archive (``torch.jit.save``), e.g. an exported
    FID Inception network, or a ``.pt2`` program saved by ``torch.export.save``. With ``module``,
    ``path`` holds its state dict as ``.safetensors`` or a
    ``torch.save`` file read with ``weights_only=True`` (no arbitrary code). Only load files you
    trust: a TorchScript archive carries its own code.
    """
    if path is None:
        raise ValueError(
            "path is None: Inception FID needs a local weights file (a TorchScript archive, or a state "
            "dict with module=...); monge never downloads weights. Use classifier_frechet_distance instead."
        )
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"path {str(file)!r} is not a file")
    if module is None and file.suffix == ".pt2":
        try:
            program = torch.export.load(str(file))
        except Exception as err:  # noqa: BLE001 - any reader failure becomes a clear message
            raise ValueError(f"cannot load {file} as a torch.export program: {err}") from None
        return program.module().to(device)
    if module is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(file), map_location=device)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"cannot load {file} as TorchScript ({err}); for a state dict pass module=<the network>"
            ) from None
        return net.eval()
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure becomes a clear message
        raise ValueError(f"cannot read weights from {file}: {err}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{file} does not hold a state dict (got {type(state).__name__})")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights in {file} do not fit the given module: {err}") from None
    return module.to(device).eval()


def network_features(
    network: nn.Module,
    images: Tensor,
    batch_size: int = 50,
    resize: int | Sequence[int] | None = 299,
    input_range: tuple[float, float] = (0.0, 1.0),
    call_kwargs: dict[str, Any] | None = None,
) -> Tensor:
    """Features ``(N, D)`` of ``images`` (``(N, C, H, W)`` in [-1, 1]) under ``network``.

    Grayscale images are repeated to 3 channels; images are resized bilinearly to ``resize`` and
    mapped linearly to ``input_range`` (``(0, 255)`` for the StyleGAN / clean-fid TorchScript
    detector, which also wants ``call_kwargs={"return_features": True}``). A tuple or list output
    keeps its first element; outputs are flattened per image.
    """
    check_batch(images, "images")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    batch_size = check_positive_int(batch_size, "batch_size", 2**14)
    lo, hi = float(input_range[0]), float(input_range[1])
    if not hi > lo:
        raise ValueError(f"input_range must be (lo, hi) with lo < hi, got {input_range!r}")
    size = None
    if resize is not None:
        size = (resize, resize) if isinstance(resize, int) else tuple(resize)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 4096 for s in size):
            raise ValueError(f"resize must be None, an int or (H, W) in [1, 4096], got {resize!r}")
    try:
        param = next(iter(network.parameters()))
        device, dtype = param.device, param.dtype
    except (StopIteration, AttributeError, RuntimeError):
        device, dtype = images.device, torch.float32
    kwargs = call_kwargs or {}
    out = []
    with torch.no_grad():
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size].to(device=device, dtype=torch.float32)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            if size is not None and tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            x = (x.clamp(-1, 1) + 1) / 2 * (hi - lo) + lo
            y = network(x.to(dtype), **kwargs)
            if isinstance(y, (tuple, list)):
                y = y[0]
            out.append(y.reshape(y.shape[0], -1).float())
    return torch.cat(out)


def inception_fid(
    samples: Tensor,
    reference: Tensor,
    weights: str | Path | nn.Module | None = None,
    module: nn.Module | None = None,
    batch_size: int = 50,
    resize: int | Sequence[int] | None = 299,
    input_range: tuple[float, float] = (0.0, 1.0),
    call_kwargs: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> float:
    """FID between ``samples`` and ``reference`` with a user-supplied Inception network.

    ``weights`` is a loaded network or a local file for :func:`load_feature_network` (with
    ``module`` for a state dict). Raises ``ValueError`` when no weights are given: monge does not
    ship or download Inception weights. Preprocessing is :func:`network_features`.
    """
    if isinstance(weights, nn.Module) or isinstance(weights, torch.jit.ScriptModule):
        net = weights.eval()
    else:
        net = load_feature_network(weights, module, device)
    f1 = network_features(net, samples, batch_size, resize, input_range, call_kwargs)
    f2 = network_features(net, reference, batch_size, resize, input_range, call_kwargs)
    return frechet_distance_from_features(f1, f2)
