"""The digits demo: a tiny run writes its report, tables and grids; its scores are honest."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from typer.testing import CliRunner

from monge.cli import app
from monge.data.digits import load_digits
from monge.demo_images import image_demo_config, run_image_demo, score_images
from monge.metrics.classifier import classifier_features, load_or_train_classifier


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("demo-digits")
    return run_image_demo(out, couplings=("independent", "semidiscrete_ot"), size=8, steps=20, batch_size=32,
                          n=120, nfes=(1, 10), expressway_nfes=(10,), classifier_cache=cache, classifier_epochs=2,
                          coupling_params={"semidiscrete_ot": {"n_targets": 32, "tol": 0.3, "max_iter": 200}},
                          expressway_targets=32,
                          progress=False, command="monge demo --data digits --size 8")


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_report_tables_and_grids(tiny):
    text = tiny.report.read_text()
    assert text.startswith("# monge demo: couplings on 8x8 digits")
    assert "monge demo --data digits --size 8" in text
    for title in ("**Fréchet distance by NFE**", "**Mode mixture by NFE**", "**Pixel W2 by NFE**", "**References**",
                  "**Goal**"):
        assert title in text
    assert "| coupling | 1 | 10 | adaptive | 10 (expressway) |" in text
    assert set(tiny.rows) == {"independent", "semidiscrete_ot"}
    for name in ("independent", "semidiscrete_ot"):  # DPM-OT proper and the semidiscrete_ot model
        assert [r.setting for r in tiny.rows[name]] == ["euler", "euler", "dopri5 (adaptive)", "expressway t_s=0.5"]
        assert tiny.rows[name][-1].nfe == 10
    assert "- independent + expressway (DPM-OT): mode mixture" in text
    assert "- semidiscrete_ot + expressway: mode mixture" in text
    assert "a map onto 32 training digits" in text
    assert "| coupling | sampler | NFE | Fréchet | mixture | coverage | W2 | near-copies: samples / held-out | " \
           "Fréchet to train |" in text
    assert "No sign of copying" in text or "**Copying:**" in text
    for rows in tiny.rows.values():
        for r in rows:  # every row, the expressway's included, says whether its samples are new
            assert r.novelty is not None and r.novelty.features is not None
            assert 0 <= r.near_copies <= 1 and r.heldout_near_copies == pytest.approx(0.01, abs=0.005)
            assert f"| {100 * r.near_copies:.1f}% / {100 * r.heldout_near_copies:.1f}% |" in text
            assert math.isfinite(r.frechet) and r.frechet >= 0
            assert math.isfinite(r.w2) and r.w2 >= 0
            assert 0 <= r.mixture <= 1 and 0 <= r.coverage <= 1
    from PIL import Image

    for path in tiny.grids.values():
        assert f"]({path.name})" in text
        img = Image.open(path)
        rows = 4  # NFE 1, 10, adaptive, expressway
        assert img.size == ((16 * (8 + 2) + 2) * 8, (rows * (8 + 2) + 2) * 8)  # 16 per row, 2-pixel gaps, scale 8
    assert (tiny.report.parent / "samples_real.png").is_file()


def test_runs_train_on_the_training_split_only(tiny):
    # the semi-discrete targets are training digits, none of them held out
    from monge.couplings.maps import load_map

    digits = load_digits(8)
    train, test = digits.split(0.2, seed=0)
    sd = load_map(tiny.report.parent / "semidiscrete_ot" / "semidiscrete.safetensors")
    targets = sd.targets.reshape(sd.targets.shape[0], -1)
    d_train = torch.cdist(targets, train.data.reshape(len(train), -1)).min(1).values
    assert float(d_train.max()) < 1e-5
    held_out_only = test.data.reshape(len(test), -1)
    d_test = torch.cdist(held_out_only, train.data.reshape(len(train), -1)).min(1).values
    unique_test = held_out_only[d_test > 1e-5]
    assert torch.cdist(targets, unique_test).min() > 1e-3


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_independent_expressway_is_dpm_ot(tiny, cache):
    # DPM-OT proper: the independent model, started from the map's digit noised to t_s = 0.5. Rebuilt
    # here from the saved checkpoint and map (same fit parameters and generator) with a hand-written Euler
    from monge.couplings.maps import load_map
    from monge.run.load import load_model

    run = tiny.report.parent
    net, _ = load_model(run / "independent" / "checkpoint.safetensors")
    sd = load_map(run / "semidiscrete_ot" / "semidiscrete.safetensors")
    noise = torch.randn((120, 1, 8, 8), generator=torch.Generator().manual_seed(999))
    y = sd(noise)[1]
    xi = torch.randn(noise.shape, generator=torch.Generator().manual_seed(5))
    x, ts, k = 0.5 * xi + 0.5 * y, 0.5, 10
    with torch.no_grad():
        for i in range(k):
            t = ts + (1 - ts) * i / k
            x = x + (1 - ts) / k * net(x, torch.full((len(x),), t))
    train, test = load_digits(8).split(0.2, seed=0)
    ref = score_images(x, test.data, load_or_train_classifier(train, cache, seed=0, epochs=2))
    row = tiny.rows["independent"][-1]
    assert row.frechet == pytest.approx(ref.frechet, rel=1e-3, abs=1e-3)
    assert row.w2 == pytest.approx(ref.w2, rel=1e-3)
    assert row.mixture == pytest.approx(ref.mixture, abs=0.01)
    # not the plain Euler-10 sample from noise
    assert abs(row.w2 - tiny.rows["independent"][1].w2) > 1e-3


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead ReLU features: singular covariances
def test_scores_are_honest(cache):
    digits = load_digits(8)
    train, test = digits.split(0.2, seed=0)
    clf = load_or_train_classifier(train, cache, seed=0, epochs=2)
    same = score_images(test.data, test.data, clf)
    assert abs(same.frechet) < 1e-6 and same.w2 < 1e-6  # a set against itself
    real = score_images(train.data, test.data, clf)
    noise = score_images(torch.randn(300, 1, 8, 8, generator=torch.Generator().manual_seed(1)), test.data, clf)
    assert noise.frechet > 10 * real.frechet and noise.w2 > 2 * real.w2
    assert real.coverage >= 0.8
    # independent reference for the Fréchet distance: scipy sqrtm on the same features
    fa = classifier_features(clf, train.data).double().numpy()
    fb = classifier_features(clf, test.data).double().numpy()
    assert real.frechet == pytest.approx(_scipy_frechet(fa, fb), rel=1e-4, abs=1e-6)
    # samples are clipped to the pixel range before scoring
    wide = score_images(train.data * 3, test.data, clf)
    clipped = score_images((train.data * 3).clamp(-1, 1), test.data, clf)
    assert wide.frechet == pytest.approx(clipped.frechet, rel=1e-9)


def test_config_and_validation(tmp_path):
    cfg = image_demo_config("semidiscrete_ot", tmp_path, size=16, steps=7, batch_size=8, model="unet")
    assert cfg.model.name == "unet" and cfg.train.steps == 7
    assert "n_targets" not in cfg.coupling.params  # every training digit by default
    assert cfg.coupling.params["max_time"] == 600
    assert cfg.data.target.params == {"size": 16}
    with pytest.raises(ValueError, match="model"):
        image_demo_config("independent", tmp_path, model="resnet")
    with pytest.raises(ValueError, match="couplings"):
        run_image_demo(tmp_path, couplings=("independent", "independent"))
    with pytest.raises(ValueError, match="expressway"):
        run_image_demo(tmp_path, expressway=1.0)
    with pytest.raises(ValueError, match="steps"):
        run_image_demo(tmp_path, steps=0)
    with pytest.raises(ValueError, match="expressway_targets"):
        run_image_demo(tmp_path, expressway_targets=0)
    with pytest.raises(ValueError, match="expressway_couplings"):
        run_image_demo(tmp_path, expressway_couplings="independent")


def test_cli_rejects_unknown_data(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--data", "cifar", "-o", str(tmp_path)])
    assert res.exit_code != 0 and "--data must be 'toy' or 'digits'" in res.output


def test_partial_report_survives_a_failure_in_a_later_model(tmp_path, cache, monkeypatch):
    import monge.demo_images as demo_images

    real_train, calls = demo_images._train, []

    def train_then_fail(config, train_set, progress):
        calls.append(config.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the demo during the second model
        return real_train(config, train_set, progress)

    monkeypatch.setattr(demo_images, "_train", train_then_fail)
    with pytest.raises(KeyboardInterrupt):
        run_image_demo(tmp_path, couplings=("independent", "exact_ot"), size=8, steps=5, batch_size=16, n=40,
                       nfes=(1,), expressway_couplings=(), classifier_cache=cache, classifier_epochs=2,
                       progress=False)
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("> Partial report: 1 of 2 models done (exact_ot still to train)")
    assert "| independent |" in text and (tmp_path / "samples_independent.png").is_file()


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_report_names_rows_that_copy_training_digits(cache):
    # expressway rows whose samples are training digits beside euler rows whose samples are the held-out digits
    from monge.demo_images import _novelty_sentence
    from monge.evaluate import NoveltyReference

    train, test = load_digits(8).split(0.2, seed=0)
    clf = load_or_train_classifier(train, cache, seed=0, epochs=2)
    against = NoveltyReference.from_data(train.data, test.data, "digits", classifier=clf, clip=(-1.0, 1.0))
    fresh = score_images(test.data, test.data, clf, setting="euler", nfe=4, novelty=against)
    copies = score_images(train.data[:150], test.data, clf, setting="expressway t_s=0.5", nfe=10, novelty=against)
    assert copies.near_copies == 1.0 and fresh.near_copies == fresh.heldout_near_copies
    sentence = _novelty_sentence({"independent": [fresh, copies]})
    assert sentence.startswith("**Copying:** independent expressway t_s=0.5 at 10 NFE: 100.0% vs 1.1%")
    assert "euler" not in sentence and "near-copies of training digits" in sentence
    assert _novelty_sentence({"independent": [fresh]}).startswith("No sign of copying")
