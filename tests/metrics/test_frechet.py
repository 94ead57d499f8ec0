"""Fréchet distances: closed forms, scipy's sqrtm, sample estimates, and user-supplied networks."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from monge.metrics.frechet import (
    classifier_frechet_distance,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    inception_fid,
    load_feature_network,
    network_features,
)


def _random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _scipy_fd(mu1, s1, mu2, s2) -> float:
    """Reference: the formula with scipy's general matrix square root of S1 S2."""
    with warnings.catch_warnings():  # singular products are fine: only the trace is used
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_diagonal_gaussians_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("d", [1, 5, 40])
def test_general_gaussians_match_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(d, rng), _random_spd(d, rng)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-8, abs=1e-9)
    # symmetric, zero on the diagonal, tensors accepted
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-9)
    assert frechet_distance(torch.tensor(mu1), torch.tensor(s1), mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_commuting_covariances_reduce_to_the_scalar_formula():
    """For S2 = c^2 S1 the trace term is (1 - c)^2 tr S1."""
    rng = np.random.default_rng(0)
    s1 = _random_spd(6, rng)
    mu = rng.standard_normal(6)
    c = 1.7
    assert frechet_distance(mu, s1, mu, c**2 * s1) == pytest.approx((1 - c) ** 2 * np.trace(s1), rel=1e-10)


def test_sample_estimate_converges_to_the_population_distance():
    rng = np.random.default_rng(1)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = _random_spd(d, rng), _random_spd(d, rng)
    x = rng.multivariate_normal(mu1, s1, size=40_000)
    y = rng.multivariate_normal(mu2, s2, size=40_000)
    exact = _scipy_fd(mu1, s1, mu2, s2)
    est = frechet_distance_from_features(torch.from_numpy(x), y)
    assert est == pytest.approx(exact, rel=0.03, abs=0.01)
    mu, cov = feature_statistics(x)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)


def test_rank_deficient_covariances_stay_finite():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 30)), rng.standard_normal((5, 30)) + 1.0  # n < d: singular
    value = frechet_distance_from_features(x, y)
    assert np.isfinite(value) and value > 0
    regular = frechet_distance_from_features(x, y, eps=1e-6)
    assert regular == pytest.approx(value, rel=1e-3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="features must have shape"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="sigma2 must have shape"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="sigma1 must be a symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 2.0], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="mu1 contains 1 NaN"):
        frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance_from_features(np.zeros((4, 2)), np.zeros((4, 3)))


class _TinyFeatures(nn.Module):
    """A stand-in for an Inception network: conv, ReLU, global average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _images(seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(60, 1, 12, 12, generator=g) * 1.2 - 0.6 + shift).clamp(-1, 1)


def test_inception_fid_with_a_user_torchscript_file(tmp_path):
    torch.manual_seed(0)
    net = _TinyFeatures().eval()
    path = tmp_path / "fake_inception.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(path))
    a, b = _images(0), _images(1, shift=0.3)
    fid = inception_fid(a, b, weights=path, resize=16)
    # independent route: preprocess by hand, run the eager module, Gaussian fits
    def feats(x):
        x = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(16, 16), mode="bilinear",
                                            align_corners=False)
        with torch.no_grad():
            return net((x + 1) / 2).double().numpy()

    fa, fb = feats(a), feats(b)
    expected = _scipy_fd(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert fid == pytest.approx(expected, rel=1e-4, abs=1e-8)
    assert fid > 0
    assert inception_fid(a, a, weights=path, resize=16) == pytest.approx(0.0, abs=1e-8)
    # batching does not change the features
    loaded = load_feature_network(path)
    torch.testing.assert_close(network_features(loaded, a, batch_size=7, resize=16),
                               network_features(loaded, a, batch_size=60, resize=16), rtol=1e-5, atol=1e-6)


def test_inception_fid_from_a_torch_export_program(tmp_path):
    torch.manual_seed(2)
    net = _TinyFeatures().eval()
    x = torch.rand(4, 3, 12, 12)
    program = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    a, b = _images(6), _images(7, shift=0.2)
    assert inception_fid(a, b, weights=tmp_path / "net.pt2", resize=None, batch_size=16) == pytest.approx(
        inception_fid(a, b, weights=net, resize=None, batch_size=16), rel=1e-6)


def test_inception_fid_from_a_state_dict(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = _TinyFeatures()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    a, b = _images(2), _images(3, shift=-0.2)
    ref = inception_fid(a, b, weights=net, resize=None)
    for name in ("w.safetensors", "w.pt"):
        got = inception_fid(a, b, weights=tmp_path / name, module=_TinyFeatures(), resize=None)
        assert got == pytest.approx(ref, rel=1e-9)


def test_inception_fid_needs_local_weights(tmp_path):
    a = _images(0)
    with pytest.raises(ValueError, match="needs a local weights file"):
        inception_fid(a, a)
    with pytest.raises(ValueError, match="is not a file"):
        inception_fid(a, a, weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    with pytest.raises(ValueError, match="cannot load .* as TorchScript"):
        inception_fid(a, a, weights=tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="cannot read weights"):
        inception_fid(a, a, weights=tmp_path / "junk.pt", module=_TinyFeatures())
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not fit the given module"):
        inception_fid(a, a, weights=tmp_path / "bad.pt", module=_TinyFeatures())


def test_classifier_frechet_distance_uses_the_classifier_features():
    from monge.metrics.classifier import FeatureClassifier, classifier_features

    torch.manual_seed(0)
    model = FeatureClassifier((1, 12, 12), 3, width=4, feature_dim=8).eval()
    a, b = _images(4), _images(5, shift=0.4)
    got = classifier_frechet_distance(a, b, model)
    fa = classifier_features(model, a).double().numpy()
    fb = classifier_features(model, b).double().numpy()
    expected = _scipy_fd(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-9)
    with pytest.raises(ValueError, match="same sample shape"):
        classifier_frechet_distance(a, torch.zeros(4, 1, 8, 8), model)
