"""The data-set classifier (training, caching, features) and classifier-based mode statistics."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from monge.data.digits import load_digits
from monge.data.images import ImageDataset
from monge.metrics import classifier as clf
from monge.metrics.classifier import (
    FeatureClassifier,
    classifier_features,
    classifier_mode_stats,
    classifier_probs,
    load_or_train_classifier,
    mode_coverage,
    mode_mixture,
    train_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits16():
    return load_digits(16)


@pytest.fixture(scope="module")
def trained(digits16, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    torch.set_num_threads(1)
    model = load_or_train_classifier(digits16, cache_dir=cache, seed=0, epochs=6)
    return model, cache


def test_classifier_is_accurate_on_held_out_digits(trained, digits16):
    model, _ = trained
    assert model.test_accuracy > 0.95
    # recompute the held-out accuracy independently from the documented seeded split
    perm = torch.randperm(len(digits16), generator=torch.Generator().manual_seed(0))
    test_idx = perm[: int(round(len(digits16) * 0.2))]
    pred = classifier_probs(model, digits16.data[test_idx]).argmax(1)
    acc = float((pred == digits16.labels[test_idx]).float().mean())
    assert acc == pytest.approx(model.test_accuracy, abs=1e-6)


def test_cache_hit_loads_the_same_weights_without_training(trained, digits16, monkeypatch):
    model, cache = trained
    files = list(cache.glob("classifier-digits16-1x16x16-seed0-*.safetensors"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("retrained although the cache matches")

    monkeypatch.setattr(clf, "train_classifier", boom)
    again = load_or_train_classifier(digits16, cache_dir=cache, seed=0, epochs=6)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    assert again.test_accuracy == pytest.approx(model.test_accuracy)
    x = digits16.data[:7]
    torch.testing.assert_close(classifier_features(again, x), classifier_features(model, x), rtol=0, atol=0)


def test_cache_is_keyed_by_options_and_checks_the_data(trained, digits16, monkeypatch):
    _, cache = trained
    calls = []

    def fake_train(dataset, seed=0, device="cpu", **kw):
        calls.append(kw)
        m = FeatureClassifier(tuple(dataset.data.shape[1:]), 10, width=4, feature_dim=8)
        return m.eval()

    monkeypatch.setattr(clf, "train_classifier", fake_train)
    # same name, other images: the fingerprint differs, so it retrains
    other = ImageDataset(digits16.data.flip(-1), digits16.labels, name="digits16")
    load_or_train_classifier(other, cache_dir=cache, seed=0, epochs=6)
    assert len(calls) == 1
    # other training options: another cache file
    load_or_train_classifier(digits16, cache_dir=cache, seed=0, epochs=7)
    assert len(calls) == 2
    assert len(list(cache.glob("classifier-digits16-*.safetensors"))) == 2


def test_features_separate_the_classes(trained, digits16):
    """A nearest-class-mean rule on the penultimate features classifies the digits well."""
    model, _ = trained
    feats = classifier_features(model, digits16.data, batch_size=300).double()
    assert feats.shape == (len(digits16), model.feature_dim)
    labels = digits16.labels
    means = torch.stack([feats[labels == k].mean(0) for k in range(10)])
    acc = float((torch.cdist(feats, means).argmin(1) == labels).double().mean())
    assert acc > 0.9


def test_blended_digits_are_mixed_and_real_digits_are_not(trained, digits16):
    """Averages of two digits of different classes look like two classes at once."""
    model, _ = trained
    g = torch.Generator().manual_seed(0)
    a = torch.randint(len(digits16), (300,), generator=g)
    b = torch.randint(len(digits16), (300,), generator=g)
    keep = digits16.labels[a] != digits16.labels[b]
    blends = 0.5 * (digits16.data[a[keep]] + digits16.data[b[keep]])
    real = mode_mixture(classifier_probs(model, digits16.data[:500]), 0.2)
    mixed = mode_mixture(classifier_probs(model, blends), 0.2)
    assert real < 0.1 and mixed > real + 0.15


def test_training_is_reproducible_and_leaves_the_global_rng_alone():
    data = load_digits(8).subset(torch.arange(200))
    state = torch.get_rng_state()
    m1 = train_classifier(data, epochs=1, seed=3, width=4, feature_dim=8)
    assert torch.equal(torch.get_rng_state(), state)
    m2 = train_classifier(data, epochs=1, seed=3, width=4, feature_dim=8)
    for v1, v2 in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2)


def _brute_mixture(p: np.ndarray, tau: float) -> float:
    return float(np.mean([sum(1 for v in row if v >= tau) >= 2 for row in p]))


def test_mode_mixture_matches_a_direct_count():
    p = torch.tensor([
        [0.90, 0.05, 0.05],  # confident
        [0.45, 0.45, 0.10],  # mixed for tau <= 0.45
        [0.34, 0.33, 0.33],  # mixed for tau <= 0.33 (three classes)
        [0.60, 0.25, 0.15],  # mixed for tau <= 0.25
    ], dtype=torch.float64)
    for tau in (0.1, 0.2, 0.3, 0.4, 0.5):
        assert mode_mixture(p, tau) == pytest.approx(_brute_mixture(p.numpy(), tau), abs=1e-12)
    curve = mode_mixture(p, [0.2, 0.3, 0.5])
    torch.testing.assert_close(curve, torch.tensor([0.75, 0.5, 0.0], dtype=torch.float64))
    # low-confidence rule: top probability below tau
    assert mode_mixture(p, 0.5, rule="low_confidence") == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.full(10, 0.3), size=400)
    assert mode_mixture(torch.from_numpy(q), 0.15) == pytest.approx(_brute_mixture(q, 0.15), abs=1e-12)


def test_mode_coverage_and_kl():
    eye = torch.eye(10, dtype=torch.float64)
    # 100 samples of classes 0..2, plus 2 of class 3: 2 >= 0.1 * 10.2 but 2 < 0.5 * 10.2
    labels = torch.cat([torch.arange(3).repeat_interleave(33), torch.tensor([0, 3, 3])])
    probs = eye[labels]
    assert mode_coverage(probs) == pytest.approx(0.4)
    assert mode_coverage(probs, min_share=0.5) == pytest.approx(0.3)
    stats = classifier_mode_stats(probs, min_share=0.5)
    counts = np.bincount(labels.numpy(), minlength=10)
    assert stats.counts.tolist() == counts.tolist() and stats.num_covered == 3
    assert stats.kl == pytest.approx(entropy(counts / counts.sum(), np.full(10, 0.1)), rel=1e-10)
    uniform = eye[torch.arange(10).repeat(5)]
    s = classifier_mode_stats(uniform)
    assert s.coverage == 1.0 and s.kl == pytest.approx(0.0, abs=1e-12) and s.mixture == 0.0


def test_bad_inputs_name_the_argument(digits16):
    with pytest.raises(ValueError, match="probs must be probabilities"):
        mode_mixture(torch.tensor([[0.5, 0.6]]))
    with pytest.raises(ValueError, match=r"probs must have shape \(n, K\)"):
        mode_mixture(torch.ones(3, 1))
    with pytest.raises(ValueError, match="threshold must be in"):
        mode_mixture(torch.tensor([[0.5, 0.5]]), 0.0)
    with pytest.raises(ValueError, match="rule must be"):
        mode_mixture(torch.tensor([[0.5, 0.5]]), rule="entropy")
    with pytest.raises(ValueError, match="probs contains 1 NaN"):
        mode_coverage(torch.tensor([[math.nan, 0.5]]))
    unlabelled = ImageDataset(digits16.data[:20])
    with pytest.raises(ValueError, match="has no labels"):
        train_classifier(unlabelled)
    model = FeatureClassifier((1, 16, 16), 10, width=4, feature_dim=8)
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 16, 16\)"):
        classifier_features(model, torch.zeros(2, 1, 8, 8))
