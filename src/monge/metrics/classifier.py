r"""A small CNN classifier trained on the data set itself: features for Fréchet distances and
class probabilities for mode coverage and mode mixture.

For MNIST-like data the Inception network of FID (Heusel et al. 2017) is a poor feature space, so
the usual practice is a classifier trained on the data set (e.g. the "FID on MNIST" of Lucic et
al. 2018). :func:`load_or_train_classifier` trains one on a CPU (its held-out accuracy on the
16 x 16 digits: ``bench/results/digits.md``) and caches its weights in a safetensors file keyed
by data set name, image shape and seed. Features are the penultimate layer.

Mode statistics from class probabilities :math:`p \in \Delta^{K-1}` of :math:`n` samples:

.. math:: \text{mixture}_\tau = \frac1n \#\{i : \#\{k : p_{ik} \ge \tau\} \ge 2\},
          \qquad
          \text{coverage} = \frac1K \#\{k : c_k \ge \rho\, n / K\},

where :math:`c_k` counts samples whose top class is :math:`k`. A sample is *mixed* when at least
two classes are given probability :math:`\ge \tau`, the mode-mixture rate DPM-OT (Li et al. 2023)
reports over a range of :math:`\tau`; ``rule="low_confidence"`` counts instead samples whose top
probability is below :math:`\tau`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_batch, check_number, check_positive_int

__all__ = [
    "FeatureClassifier",
    "train_classifier",
    "load_or_train_classifier",
    "default_cache_dir",
    "classifier_features",
    "classifier_probs",
    "mode_mixture",
    "mode_coverage",
    "ClassifierModeStats",
    "classifier_mode_stats",
]

logger = logging.getLogger(__name__)

_FORMAT = "monge-classifier-v1"


class FeatureClassifier(nn.Module):
    """Three 3x3 convolutions (ReLU, two 2x2 max-pools), a ``feature_dim`` hidden layer, logits.

    Parameters
    ----------
    shape : ``(C, H, W)`` of the images (any size; pooled adaptively to 4 x 4).
    num_classes : number of classes ``K``.
    width : channels of the first convolutions (the last has ``2 * width``).
    feature_dim : size of the penultimate layer returned by :meth:`features`.
    """

    def __init__(self, shape: Sequence[int], num_classes: int, width: int = 16, feature_dim: int = 128) -> None:
        super().__init__()
        if not isinstance(shape, (tuple, list)) or len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {shape!r}")
        c, h, w = (check_positive_int(int(s), f"shape[{i}]", 4096) for i, s in enumerate(shape))
        num_classes = check_positive_int(num_classes, "num_classes", 100_000)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        width = check_positive_int(width, "width", 1024)
        feature_dim = check_positive_int(feature_dim, "feature_dim", 8192)
        self.shape = (c, h, w)
        self.num_classes = num_classes
        self.width = width
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        #: accuracy on the held-out split after training (``nan`` if unknown)
        self.test_accuracy = math.nan

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, self.shape))}) like the classifier's data, "
                f"got {tuple(x.shape)}"
            )

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``(N, feature_dim)``."""
        self._check(x)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, K)``."""
        return self.head(self.features(x))

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "num_classes": self.num_classes, "width": self.width,
                "feature_dim": self.feature_dim}


def _shift(x: Tensor, generator: torch.Generator, max_shift: int) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels (edge padding), a light augmentation."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (n, w)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _dataset_arrays(dataset: Any) -> tuple[Tensor, Tensor, int, str]:
    data = getattr(dataset, "data", None)
    labels = getattr(dataset, "labels", None)
    if not torch.is_tensor(data) or data.dim() != 4:
        raise ValueError("dataset must hold images in .data as an (N, C, H, W) tensor (an ImageDataset)")
    if labels is None:
        raise ValueError(
            f"dataset {getattr(dataset, 'name', '?')!r} has no labels; the classifier needs labelled data "
            "(class sub-folders, an .npz with labels, MNIST, CIFAR-10 or digits)"
        )
    k = getattr(dataset, "num_classes", None) or int(labels.max()) + 1
    return data, labels, int(k), str(getattr(dataset, "name", "images"))


def train_classifier(
    dataset: Any,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    test_fraction: float = 0.2,
    width: int = 16,
    feature_dim: int = 128,
    augment: bool | None = None,
    device: torch.device | str = "cpu",
) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` on a labelled :class:`~monge.data.images.ImageDataset`.

    A seeded split holds out ``test_fraction`` of the images; the accuracy on it is stored in
    ``classifier.test_accuracy``. Adam with cosine-decayed learning rate, cross-entropy, random
    one-pixel shifts when ``augment`` (default: for images at least 16 pixels a side).
    Initialisation and shuffling use ``seed`` only (the global RNG is left untouched).
    Returns the model in eval mode on ``device``.
    """
    data, labels, k, _ = _dataset_arrays(dataset)
    epochs = check_positive_int(epochs, "epochs", 10_000)
    batch_size = check_positive_int(batch_size, "batch_size", 2**16)
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise ValueError(f"lr must be in (0, 1), got {lr!r}")
    check_number(test_fraction, "test_fraction", 0.0, 1.0, high_open=True)
    if len(data) < 10:
        raise ValueError(f"dataset has {len(data)} images; the classifier needs at least 10")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(data), generator=g)
    n_test = max(1, int(round(len(data) * test_fraction))) if test_fraction > 0 else 0
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = FeatureClassifier(tuple(data.shape[1:]), k, width, feature_dim)
    model = model.to(device)
    if augment is None:
        augment = min(data.shape[-2:]) >= 16
    x_train, y_train = data[train_idx].to(device), labels[train_idx].to(device)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_idx), generator=g).to(device)
        for s in range(steps_per_epoch):
            idx = order[s * batch_size:(s + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if augment:
                xb = _shift(xb, g, 1)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    if n_test:
        pred = classifier_probs(model, data[test_idx].to(device)).argmax(1).cpu()
        model.test_accuracy = float((pred == labels[test_idx]).float().mean())
    return model


def default_cache_dir() -> Path:
    """``$MONGE_CACHE_DIR`` if set, else ``~/.cache/monge``."""
    env = os.environ.get("MONGE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "monge"


def _fingerprint(data: Tensor, labels: Tensor) -> str:
    h = hashlib.sha256()
    h.update(str((tuple(data.shape), str(data.dtype))).encode())
    h.update(data.detach().cpu().contiguous().float().numpy().tobytes())
    h.update(labels.detach().cpu().to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:16]


def load_or_train_classifier(
    dataset: Any,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    retrain: bool = False,
    device: torch.device | str = "cpu",
    **train_kwargs: Any,
) -> FeatureClassifier:
    """The cached classifier of ``dataset``, training (and caching) it on a miss.

    The cache file is ``<cache_dir>/classifier-<name>-<C>x<H>x<W>-seed<seed>-<h>.safetensors``, ``h``
    hashing the training options. The file also records a fingerprint of the images and labels;
    when it does not match (same name, other data) the classifier is retrained and the file
    replaced. ``train_kwargs`` go to :func:`train_classifier`.
    """
    from safetensors.torch import load_file, save_file

    data, labels, _, name = _dataset_arrays(dataset)
    seed = int(seed)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    opts = json.dumps(sorted(train_kwargs.items()), default=str)
    h = hashlib.sha256(opts.encode()).hexdigest()[:8]
    safe_name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:64]
    c, hh, ww = data.shape[1:]
    path = cache / f"classifier-{safe_name}-{c}x{hh}x{ww}-seed{seed}-{h}.safetensors"
    fp = _fingerprint(data, labels)
    if path.is_file() and not retrain:
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") == _FORMAT and meta.get("fingerprint") == fp:
                cfg = json.loads(meta["config"])
                model = FeatureClassifier(cfg["shape"], cfg["num_classes"], cfg["width"], cfg["feature_dim"])
                model.load_state_dict(load_file(str(path)))
                model.test_accuracy = float(meta.get("test_accuracy", "nan"))
                return model.to(device).eval()
            logger.warning("classifier cache %s was made from other data; retraining", path)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            logger.warning("cannot read classifier cache %s (%s); retraining", path, err)
    model = train_classifier(dataset, seed=seed, device=device, **train_kwargs)
    cache.mkdir(parents=True, exist_ok=True)
    meta = {"format": _FORMAT, "fingerprint": fp, "config": json.dumps(model.config()),
            "test_accuracy": repr(model.test_accuracy), "dataset": name, "seed": str(seed)}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return model


def _batched(classifier: FeatureClassifier, images: Tensor, batch_size: int, fn: str) -> Tensor:
    check_batch(images, "images")
    batch_size = check_positive_int(batch_size, "batch_size", 2**16)
    param = next(classifier.parameters())
    was_training = classifier.training
    classifier.eval()
    out = []
    with torch.no_grad():
        for s in range(0, images.shape[0], batch_size):
            xb = images[s:s + batch_size].to(device=param.device, dtype=param.dtype)
            out.append(getattr(classifier, fn)(xb))
    classifier.train(was_training)
    return torch.cat(out)


def classifier_features(classifier: FeatureClassifier, images: Tensor, batch_size: int = 500) -> Tensor:
    """Penultimate-layer features ``(N, feature_dim)`` of ``images`` (in [-1, 1]), in batches."""
    return _batched(classifier, images, batch_size, "features")


def classifier_probs(classifier: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Softmax class probabilities ``(N, K)`` of ``images``, in batches."""
    return _batched(classifier, images, batch_size, "forward").softmax(dim=1)  # type: ignore[arg-type]  # any classifier module


def _check_probs(probs: Tensor) -> Tensor:
    check_batch(probs, "probs")
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (n, K) with K >= 2 classes, got {tuple(probs.shape)}")
    p = probs.detach().to(torch.float64)
    if float(p.min()) < -1e-6 or float((p.sum(1) - 1).abs().max()) > 1e-3:
        raise ValueError("probs must be probabilities (non-negative rows summing to 1); apply softmax to logits")
    return p


def _threshold(value: object, name: str) -> float:
    return check_number(value, name, 0.0, 1.0, low_open=True)


def mode_mixture(
    probs: Tensor, threshold: float | Sequence[float] = 0.2, rule: str = "two_classes"
) -> float | Tensor:
    r"""Share of mixed samples.

    ``rule="two_classes"`` (DPM-OT): a sample is mixed when at least two classes have probability
    :math:`\ge \tau`. ``rule="low_confidence"``: when its top probability is :math:`< \tau`.
    ``threshold`` may be a sequence of :math:`\tau` values; the result is then a float64 tensor
    of rates, one per value (the curve DPM-OT plots).
    """
    p = _check_probs(probs)
    taus = [threshold] if isinstance(threshold, (int, float)) else list(threshold)
    if not taus:
        raise ValueError("threshold must be a number or a non-empty sequence of numbers in (0, 1]")
    taus = [_threshold(t, "threshold") for t in taus]
    if rule == "two_classes":
        rates = [float(((p >= t).sum(1) >= 2).double().mean()) for t in taus]
    elif rule == "low_confidence":
        top = p.max(1).values
        rates = [float((top < t).double().mean()) for t in taus]
    else:
        raise ValueError(f"rule must be 'two_classes' or 'low_confidence', got {rule!r}")
    if isinstance(threshold, (int, float)):
        return rates[0]
    return torch.tensor(rates, dtype=torch.float64)


def mode_coverage(probs: Tensor, min_share: float = 0.1) -> float:
    r"""Share of classes that are the top class of at least ``min_share`` :math:`\cdot n/K` samples."""
    return classifier_mode_stats(probs, min_share=min_share).coverage


@dataclass(frozen=True)
class ClassifierModeStats:
    """Result of :func:`classifier_mode_stats`.

    coverage : share of classes holding at least ``min_share * n / K`` top-class assignments.
    mixture : mode-mixture rate (:func:`mode_mixture` with ``threshold`` and ``rule``).
    counts : ``(K,)`` int64 number of samples per top class.
    kl : KL divergence of the class histogram from uniform.
    num_covered : number of covered classes.
    """

    coverage: float
    mixture: float
    counts: Tensor
    kl: float
    num_covered: int


def classifier_mode_stats(
    probs: Tensor, threshold: float = 0.2, min_share: float = 0.1, rule: str = "two_classes"
) -> ClassifierModeStats:
    """Coverage, mixture, per-class counts and KL-to-uniform from class probabilities ``(n, K)``."""
    p = _check_probs(probs)
    check_number(min_share, "min_share", 0.0, 1e6, low_open=True)
    n, k = p.shape
    counts = torch.bincount(p.argmax(1).cpu(), minlength=k)
    num_covered = int((counts >= min_share * n / k).sum())
    q = counts.double() / n
    nz = q > 0
    kl = float((q[nz] * torch.log(k * q[nz])).sum())
    mixture = mode_mixture(p, _threshold(threshold, "threshold"), rule)
    assert isinstance(mixture, float)
    return ClassifierModeStats(num_covered / k, mixture, counts, kl, num_covered)
