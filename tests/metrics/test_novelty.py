"""Novelty: nearest-neighbour distances against cKDTree, copies scored as copies, fresh draws not."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from scipy.stats import mannwhitneyu

from monge.metrics.frechet import frechet_distance_from_features
from monge.metrics.novelty import (
    NoveltyReport,
    _kmeans_labels,
    data_copying_statistic,
    frechet_train_heldout,
    mann_whitney_z,
    nearest_neighbours,
    novelty,
    novelty_reports,
    novelty_table,
)

CENTRES = torch.tensor([[0.0] * 8, [4.0] * 8, [-4.0, 4.0] * 4, [4.0, -4.0] * 4, [0.0, 6.0] * 4])


def mixture(n: int, seed: int, dim: int = 8) -> torch.Tensor:
    """Independent draws of a 5-component Gaussian mixture in ``dim`` dimensions."""
    g = torch.Generator().manual_seed(seed)
    modes = torch.randint(len(CENTRES), (n,), generator=g)
    centres = CENTRES.repeat(1, -(-dim // 8))[:, :dim]
    return centres[modes] + 0.8 * torch.randn(n, dim, generator=g)


def copies_of(train: torch.Tensor, n: int, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(train.shape[0], (n,), generator=g)
    return train[rows] + noise * torch.randn(n, *train.shape[1:], generator=g)


def binomial_tol(q: float, m: int, n: int) -> float:
    """Four standard deviations of a near-copy share: the samples' binomial and the threshold's estimate."""
    return 4 * math.sqrt(q * (1 - q) * (1 / m + 1 / n))


# nearest-neighbour distances


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 4096])
def test_nearest_neighbours_match_ckdtree(chunk_size):
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((300, 1, 3, 2))
    q = rng.standard_normal((45, 1, 3, 2))
    dist, idx = nearest_neighbours(torch.from_numpy(q), torch.from_numpy(ref), chunk_size=chunk_size)
    d_ref, i_ref = cKDTree(ref.reshape(300, -1)).query(q.reshape(45, -1))
    assert dist.dtype == torch.float64 and idx.dtype == torch.long
    np.testing.assert_allclose(dist.numpy(), d_ref, rtol=1e-12)
    assert idx.numpy().tolist() == i_ref.tolist()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 30), m=st.integers(1, 40), d=st.integers(1, 5), chunk=st.integers(1, 9),
       offset=st.sampled_from([0.0, 1e4]), seed=st.integers(0, 2**16))
def test_nearest_neighbours_match_brute_force(n, m, d, chunk, offset, seed):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((m, d)) + offset
    q = rng.standard_normal((n, d)) + offset
    dist, idx = nearest_neighbours(torch.from_numpy(q), torch.from_numpy(ref), chunk_size=chunk)
    brute = np.sqrt(((q[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(dist.numpy(), brute.min(1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(brute[np.arange(n), idx.numpy()], brute.min(1), rtol=1e-9, atol=1e-9)


def test_chunked_equals_unchunked_and_float32_inputs_are_searched_in_float64():
    train = mixture(1000, 1, dim=16).float()
    queries = copies_of(train, 300, 1e-3, 2)
    d_all, i_all = nearest_neighbours(queries, train, chunk_size=None)
    d_chunk, i_chunk = nearest_neighbours(queries, train, chunk_size=64)
    assert torch.equal(i_all, i_chunk) and torch.equal(d_all, d_chunk)
    d_ref, _ = cKDTree(train.double().numpy()).query(queries.double().numpy())
    np.testing.assert_allclose(d_all.numpy(), d_ref, rtol=1e-10)


def test_exact_copies_are_at_distance_zero_far_from_the_origin():
    train = mixture(200, 3) + 1e5
    dist, idx = nearest_neighbours(train[50:80], train, chunk_size=16)
    assert torch.equal(dist, torch.zeros(30, dtype=torch.float64))
    assert idx.tolist() == list(range(50, 80))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nearest_neighbours_on_the_inputs_device_match_cpu():
    train, queries = mixture(3000, 4, dim=32), mixture(500, 5, dim=32)
    d_cpu, i_cpu = nearest_neighbours(queries, train, chunk_size=512)
    d_gpu, i_gpu = nearest_neighbours(queries.cuda(), train, chunk_size=512)  # train moves a block at a time
    assert d_gpu.device.type == "cuda" and torch.equal(i_gpu.cpu(), i_cpu)
    torch.testing.assert_close(d_gpu.cpu(), d_cpu, rtol=1e-12, atol=0)
    on_gpu = novelty(queries.cuda(), train.cuda(), mixture(800, 6, dim=32).cuda()).as_dict()
    on_cpu = novelty(queries, train, mixture(800, 6, dim=32)).as_dict()
    assert on_gpu.pop("space") == on_cpu.pop("space")
    assert on_gpu == pytest.approx(on_cpu, rel=1e-10)


# the novelty report


def test_copies_of_training_points_score_as_copies():
    train, held = mixture(2000, 10), mixture(2000, 11)
    report = novelty(copies_of(train, 2000, 1e-3, 12), train, held)
    assert report.near_copy_share == 1.0
    assert report.heldout_near_copy_share == pytest.approx(0.01, abs=1e-3)
    assert report.ratio < 0.01 and report.duplicate_share == 0.0
    assert report.c_t < -30
    assert report.copies() and report.verdict().startswith("100.0% of samples are near-copies of training points")
    exact = novelty(copies_of(train, 500, 0.0, 13), train, held)
    assert exact.duplicate_share == 1.0 and exact.ratio == 0.0 and "100.0% are exact duplicates" in exact.verdict()


def test_fresh_draws_from_the_data_distribution_do_not():
    m, n = 4000, 4000
    train, held, samples = mixture(2000, 20), mixture(n, 21), mixture(m, 22)
    report = novelty(samples, train, held)
    assert abs(report.near_copy_share - 0.01) <= binomial_tol(0.01, m, n)
    assert report.ratio == pytest.approx(1.0, abs=0.05)
    assert report.sample_mean == pytest.approx(report.heldout_mean, rel=0.05)
    assert abs(report.c_t) < 4  # N(0, 1) under the null
    assert not report.copies() and report.verdict().startswith("no sign of copying")
    assert (report.n_samples, report.n_train, report.n_heldout, report.dim) == (m, 2000, n, 8)


def test_half_copied_set_scores_half():
    m, n = 2000, 3000
    train, held = mixture(2000, 30), mixture(n, 31)
    samples = torch.cat([copies_of(train, m // 2, 1e-3, 32), mixture(m // 2, 33)])
    report = novelty(samples, train, held)
    assert abs(report.near_copy_share - (0.5 + 0.5 * 0.01)) <= 4 * math.sqrt(0.25 / m)
    assert report.copies() and report.c_t < -10


def test_samples_far_from_the_data_are_new_and_underfit():
    train, held = mixture(1500, 40), mixture(1500, 41)
    report = novelty(mixture(1500, 42) + 0.8 * torch.randn(1500, 8, generator=torch.Generator().manual_seed(43)),
                     train, held)
    assert report.ratio > 1.2 and report.near_copy_share < 0.01 and report.c_t > 4 and not report.copies()


def test_statistics_match_a_ckdtree_transcription():
    train, held, samples = (
        mixture(800, 50, dim=3),
        mixture(600, 51, dim=3),
        copies_of(mixture(800, 50, dim=3), 400, 0.05, 52),
    )
    report = novelty(samples, train, held, quantile=0.05, chunk_size=100)
    tree = cKDTree(train.double().numpy())
    d_s, _ = tree.query(samples.double().numpy())
    d_h, _ = tree.query(held.double().numpy())
    tau = np.quantile(d_h, 0.05)
    assert report.threshold == pytest.approx(tau, rel=1e-12)
    assert report.near_copy_share == pytest.approx((d_s <= tau).mean())
    assert report.heldout_near_copy_share == pytest.approx((d_h <= tau).mean())
    assert report.ratio == pytest.approx(np.median(d_s) / np.median(d_h), rel=1e-12)
    assert report.sample_mean == pytest.approx(d_s.mean(), rel=1e-12)
    u = mannwhitneyu(d_s, d_h, use_continuity=False, method="asymptotic").statistic
    m, n = len(d_s), len(d_h)
    assert report.c_t == pytest.approx((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12), rel=1e-10)


def test_feature_space_sees_copies_the_data_space_misses():
    """Samples copy training points in the first two coordinates only; a projection on them shows it."""
    train, held = mixture(1500, 60, dim=8), mixture(1500, 61, dim=8)
    samples = mixture(1500, 62, dim=8)
    samples[:, :2] = copies_of(train, 1500, 1e-4, 63)[:, :2]
    project = lambda x: x[:, :2] * 3.0  # noqa: E731
    reports = novelty_reports(samples, train, held, project)
    assert set(reports) == {"data", "features"}
    assert reports["data"].space == "data" and reports["features"].space == "features"
    assert not reports["data"].copies()
    assert reports["features"].copies() and reports["features"].near_copy_share > 0.9
    assert reports["features"].dim == 2
    same = novelty(project(samples), project(train), project(held), space="features")
    assert same == reports["features"]


def test_one_dimensional_features_are_a_column():
    train, held, samples = mixture(500, 70), mixture(500, 71), mixture(500, 72)
    report = novelty(samples, train, held, features=lambda x: x.sum(1))
    assert report.dim == 1 and report == novelty(samples.sum(1, keepdim=True), train.sum(1, keepdim=True),
                                                  held.sum(1, keepdim=True), space="features")


def test_integer_images_are_measured_like_their_float_values():
    g = torch.Generator().manual_seed(85)
    train, held = torch.randint(0, 256, (300, 1, 4, 4), generator=g), torch.randint(0, 256, (200, 1, 4, 4), generator=g)
    samples = torch.cat([train[:50], torch.randint(0, 256, (150, 1, 4, 4), generator=g)]).to(torch.uint8)
    report = novelty(samples, train.to(torch.uint8), held.to(torch.uint8))
    assert report == novelty(samples.double(), train.double(), held.double())
    assert report.duplicate_share == 0.25


def test_image_shaped_and_flat_inputs_agree():
    train, held, samples = mixture(400, 80, dim=16), mixture(300, 81, dim=16), mixture(300, 82, dim=16)
    flat = novelty(samples, train, held)
    images = novelty(samples.reshape(-1, 1, 4, 4), train.reshape(-1, 1, 4, 4), held.reshape(-1, 16))
    assert flat == images


# Meehan et al.'s C_T


def test_mann_whitney_z_matches_scipy():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal(70), rng.standard_normal(90) + 0.3
    x[:5] = y[:5]  # ties count one half
    u = mannwhitneyu(x, y, use_continuity=False, method="asymptotic").statistic
    assert mann_whitney_z(torch.from_numpy(x), y) == pytest.approx((u - 70 * 90 / 2) / math.sqrt(70 * 90 * 161 / 12))
    assert mann_whitney_z(x, y) < 0 < mann_whitney_z(y, x)


def _meehan_reference(samples, train, held, labels, tau):
    """Transcription of C_T (Meehan et al. 2020, Eq. 4) with cKDTree distances inside each cell."""
    ls, lt, lh = labels
    k, m, n = int(lt.max()) + 1, len(samples), len(held)
    num = den = 0.0
    for c in range(k):
        s, t, h = samples[ls == c], train[lt == c], held[lh == c]
        if len(s) / m <= tau or len(h) == 0 or len(t) == 0:
            continue
        tree = cKDTree(t)
        d_s, d_h = tree.query(s)[0], tree.query(h)[0]
        u = mannwhitneyu(d_s, d_h, use_continuity=False, method="asymptotic").statistic
        z = (u - len(s) * len(h) / 2) / math.sqrt(len(s) * len(h) * (len(s) + len(h) + 1) / 12)
        num, den = num + len(h) / n * z, den + len(h) / n
    return num / den


def test_data_copying_statistic_matches_the_reference_in_cells():
    train, held = mixture(1200, 90, dim=4), mixture(800, 91, dim=4)
    samples = torch.cat([copies_of(train, 300, 0.02, 92), mixture(500, 93, dim=4)])
    cell_of = _kmeans_labels(train.double(), 6, 7, 2048, torch.device("cpu"))
    labels = tuple(cell_of(x).numpy() for x in (samples, train, held))
    assert len(np.unique(labels[1])) == 6
    got = data_copying_statistic(samples, train, held, cells=6, seed=7)
    ref = _meehan_reference(samples.double().numpy(), train.double().numpy(), held.double().numpy(), labels, 20 / 800)
    assert got == pytest.approx(ref, rel=1e-10)
    assert novelty(samples, train, held, cells=6, seed=7).c_t == got


def test_data_copying_statistic_separates_copying_from_fresh_draws():
    train, held = mixture(2000, 100), mixture(2000, 101)
    fresh = data_copying_statistic(mixture(2000, 102), train, held, cells=5)
    copied = data_copying_statistic(copies_of(train, 2000, 0.05, 103), train, held, cells=5)
    assert abs(fresh) < 4 and copied < -10
    one_cell = data_copying_statistic(mixture(2000, 102), train, held)
    assert one_cell == novelty(mixture(2000, 102), train, held).c_t


# Fréchet against both splits


def test_frechet_train_heldout_flags_memorised_features():
    train, held = mixture(3000, 110, dim=4), mixture(3000, 111, dim=4)
    memorised = frechet_train_heldout(train.flip(0), train, held, repeats=2)
    assert memorised.train == pytest.approx(0.0, abs=1e-9) and memorised.subset == 3000
    assert memorised.held_out == pytest.approx(frechet_distance_from_features(train, held))
    assert memorised.reference == pytest.approx(memorised.held_out, rel=1e-9) and memorised.gap > 0
    assert set(memorised.as_dict()) == {"train", "held_out", "reference", "subset", "repeats", "gap"}


def test_frechet_train_heldout_compares_at_equal_sizes():
    """Fresh samples score alike on both splits on average, although the train split is 16 times larger."""
    train = mixture(5000, 113, dim=6)
    draws = [(mixture(300, 200 + 2 * i, dim=6), mixture(300, 201 + 2 * i, dim=6)) for i in range(30)]
    both = [frechet_train_heldout(s, train, h) for s, h in draws]
    assert {(r.subset, r.repeats) for r in both} == {(300, 5)}
    diff = np.array([r.train - r.held_out for r in both])
    naive = np.array(
        [frechet_distance_from_features(s, train) - r.train for (s, _), r in zip(draws, both, strict=True)]
    )
    assert naive.mean() < -4 * naive.std() / math.sqrt(30)  # the bias the equal sizes remove
    assert abs(diff.mean()) < 3 * diff.std() / math.sqrt(30)
    assert abs(diff.mean()) < 0.25 * abs(naive.mean())


# reports


def test_as_dict_is_json_and_the_table_has_a_row_per_report():
    train, held = mixture(600, 120), mixture(600, 121)
    fresh = novelty(mixture(600, 122), train, held)
    copied = novelty(copies_of(train, 600, 1e-3, 123), train, held)
    d = json.loads(json.dumps(fresh.as_dict()))
    assert d["near_copy_share"] == fresh.near_copy_share and d["excess"] == pytest.approx(fresh.excess)
    table = novelty_table({"independent": fresh, "expressway": copied})
    lines = table.strip().splitlines()
    assert len(lines) == 4 and lines[2].startswith("| independent | data |") and lines[2].endswith("| no |")
    assert "| expressway |" in lines[3] and "yes (+99.0 pts)" in lines[3]


def test_held_out_points_in_the_training_set_give_an_infinite_ratio_reported_as_none():
    train = mixture(300, 130)
    report = novelty(mixture(300, 131), train, train[:200])
    assert report.heldout_median == 0.0 and report.threshold == 0.0 and math.isinf(report.ratio)
    assert report.as_dict()["ratio"] is None


def test_copying_margin_is_in_shares():
    train, held = mixture(1000, 140), mixture(1000, 141)
    samples = torch.cat([copies_of(train, 40, 1e-3, 142), mixture(960, 143)])
    report = novelty(samples, train, held)
    assert 0.02 < report.excess < 0.06
    assert report.copies(0.02) and not report.copies(0.1)
    assert report.verdict(0.1).startswith("no sign of copying")


# bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"held_out": mixture(1, 0)}, "held_out needs at least 2"),
        ({"samples": mixture(10, 0, dim=4)}, "shapes must agree after flattening"),
        ({"train": torch.full((10, 8), math.nan)}, "train contains 80 NaN"),
        ({"quantile": 0.0}, "quantile must be in"),
        ({"quantile": 0.7}, "quantile must be in"),
        ({"cells": 0}, "cells must be"),
        ({"features": "pixels"}, "features must be a callable"),
        ({"features": lambda x: x[:3]}, r"features\(samples\) must return a tensor with one row per input"),
        ({"samples": [[0.0] * 8]}, "samples must be a torch.Tensor"),
        ({"samples": torch.zeros(10)}, "samples must have shape"),
        ({"chunk_size": 0}, "chunk_size must be"),
        ({"train": torch.ones(20, 8, dtype=torch.bool)}, "train must hold real numbers"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, match):
    args = {"samples": mixture(10, 1), "train": mixture(20, 2), "held_out": mixture(100, 3)}
    args.update(kwargs)
    extra = {k: args.pop(k) for k in list(args) if k not in ("samples", "train", "held_out")}
    with pytest.raises(ValueError, match=match):
        novelty(args["samples"], args["train"], args["held_out"], **extra)


def test_cells_that_hold_no_samples_are_refused():
    train, held = mixture(500, 150), mixture(200, 151)
    with pytest.raises(ValueError, match="no cell holds more than tau"):
        data_copying_statistic(mixture(30, 152), train, held, cells=5)
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\)"):
        data_copying_statistic(mixture(30, 152), train, held, tau=1.0)


def test_few_held_out_points_warn_about_the_quantile():
    train = mixture(100, 160)
    with pytest.warns(UserWarning, match="hold out at least 100 points"):
        novelty(mixture(20, 161), train, mixture(50, 162))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        novelty(mixture(20, 161), train, mixture(100, 162))


def test_reports_are_frozen():
    train = mixture(100, 170)
    report = novelty(mixture(50, 171), train, mixture(100, 172))
    assert isinstance(report, NoveltyReport)
    with pytest.raises(AttributeError):
        report.ratio = 1.0  # type: ignore[misc]
