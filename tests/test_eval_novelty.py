"""Is a sample new? in ``monge eval``: copies of training points are reported as copying, fresh
held-out data is not, ``--no-novelty`` turns it off, and data without a held-out split say so."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import monge.evaluate as evaluate
from monge.cli import app
from monge.data.digits import load_digits
from monge.data.images import ImageDataset
from monge.data.sources import build_source
from monge.data.tabular import table_from_array
from monge.evaluate import NoveltyReference, held_out_target, novelty_reference, novelty_sentence

runner = CliRunner()


@pytest.fixture(autouse=True)
def classifier_cache(tmp_path_factory, monkeypatch):
    """The data set's classifier is trained once per test module, in a cache of its own."""
    monkeypatch.setenv("MONGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "classifier-cache"))


def _digits_run(tmp_path, name="dig", coupling="independent", holdout=0.2, nfe=(1,)):
    path = tmp_path / f"{name}.yaml"
    target = {"name": "digits", "size": 8, **({"holdout": holdout} if holdout else {})}
    path.write_text(yaml.safe_dump({
        "name": name, "output_dir": str(tmp_path / "runs"),
        "data": {"source": "gaussian", "target": target},
        "coupling": coupling,
        "model": {"name": "mlp", "hidden": 32, "depth": 2},
        "train": {"steps": 5, "batch_size": 16, "eval_samples": 20, "checkpoint_every": 0},
        "sample": {"nfe": list(nfe), "adaptive": False},
    }))
    res = runner.invoke(app, ["train", str(path), "--no-progress"])
    assert res.exit_code == 0, res.output
    return tmp_path / "runs" / name


def _samples_replaced_by(monkeypatch, images: torch.Tensor) -> None:
    """Every evaluation row's samples become ``images`` (their first n), as a model that outputs them."""
    real = evaluate.sample

    def fake(field, x0, **kwargs):
        out = real(field, x0, **kwargs)
        return dataclasses.replace(out, x=images[: x0.shape[0]].to(x0))

    monkeypatch.setattr(evaluate, "sample", fake)


def _csv_rows(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_digits_take_a_seeded_held_out_split_like_the_demo():
    target = build_source({"name": "digits", "size": 8, "holdout": 0.2, "seed": 3})
    train, test = load_digits(8).split(0.2, seed=3)
    assert torch.equal(target.data, train.data) and torch.equal(target.held_out.data, test.data)
    assert torch.equal(target.held_out.labels, test.labels) and target.num_classes == 10
    assert getattr(build_source({"name": "digits", "size": 8}), "held_out", None) is None


def test_a_run_that_outputs_training_digits_is_reported_as_copying(tmp_path, monkeypatch):
    run = _digits_run(tmp_path)
    train = build_source({"name": "digits", "size": 8, "holdout": 0.2}).data
    _samples_replaced_by(monkeypatch, train[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))])
    table, rows = tmp_path / "eval.md", tmp_path / "eval.csv"
    res = runner.invoke(app, ["eval", str(run), "--nfe", "1,2", "-n", "200", "--no-adaptive", "-o", str(table),
                              "--csv", str(rows)])
    assert res.exit_code == 0, res.output
    text = table.read_text()
    assert "**Is a sample new?**" in text and "1438 training and 359 held-out images" in text
    assert "| euler | 1 | pixels | 0.000 | 100.0% / 1.1% | 100.0% |" in text
    assert "| euler | 2 | classifier features | 0.000 | 100.0% / 1.1% | 100.0% |" in text
    assert "yes (+98.9 pts)" in text
    assert "**Copying:** euler at 1 NFE" in text and "near-copies of training points" in text
    assert text in res.output + "\n"
    lines = _csv_rows(rows)
    assert [(r["run"], r["sampler"], r["nfe"]) for r in lines] == [("dig", "euler", "1"), ("dig", "euler", "2")]
    for r in lines:
        assert r["copying"] == "True" and float(r["near_copies"]) == 1.0 and float(r["duplicates"]) == 1.0
        assert float(r["feature_near_copies"]) == 1.0 and float(r["nn_ratio"]) == 0.0
        # the samples are the training split: far closer to it than to the held-out split in Fréchet
        assert float(r["frechet_train"]) < 0.6 * float(r["frechet_heldout"])


def test_fresh_held_out_digits_are_not_copies(tmp_path, monkeypatch):
    run = _digits_run(tmp_path)
    held = build_source({"name": "digits", "size": 8, "holdout": 0.2}).held_out.data
    _samples_replaced_by(monkeypatch, held)
    rows = tmp_path / "rows.csv"
    res = runner.invoke(app, ["eval", str(run), "--nfe", "1", "-n", "300", "--no-adaptive", "--csv", str(rows)])
    assert res.exit_code == 0, res.output
    assert "No sign of copying" in res.output and "**Copying:**" not in res.output
    (line,) = _csv_rows(rows)
    assert line["copying"] == "False" and float(line["duplicates"]) == 0.0
    for space in ("", "feature_"):
        assert 0.9 < float(line[f"{space}nn_ratio"]) < 1.1
        assert float(line[f"{space}near_copies"]) <= float(line[f"{space}heldout_near_copies"]) + 0.02


def test_novelty_of_new_digits_copies_and_noisy_copies():
    # library level, disjoint halves of the held-out split: one half the reference, the other the samples
    target = build_source({"name": "digits", "size": 8, "holdout": 0.2})
    held = target.held_out.data
    ref = NoveltyReference.from_data(target.data, held[:180], "digits", clip=(-1.0, 1.0))
    fresh = ref.measure(held[180:])
    assert not fresh.copies() and 0.5 < fresh.data.ratio < 2.0
    noisy = target.data[:300] + 0.01 * torch.randn(300, *target.shape, generator=torch.Generator().manual_seed(0))
    near = ref.measure(noisy)
    assert near.copies() and near.data.near_copy_share > 0.9 and near.data.duplicate_share == 0.0
    assert near.features is None and near.frechet is None and near.columns()["feature_near_copies"] is None
    assert "near-copies of training points" in near.verdict()


def test_no_novelty_flag_and_data_without_a_held_out_split(tmp_path):
    run = _digits_run(tmp_path)
    rows = tmp_path / "rows.csv"
    res = runner.invoke(app, ["eval", str(run), "--nfe", "1", "-n", "50", "--no-adaptive", "--no-novelty",
                              "--csv", str(rows)])
    assert res.exit_code == 0, res.output
    assert "Is a sample new?" not in res.output and "Novelty" not in res.output
    assert "near_copies" not in rows.read_text().splitlines()[0]

    whole = _digits_run(tmp_path, "whole", holdout=0.0)
    res = runner.invoke(app, ["eval", str(whole), "--nfe", "1", "-n", "50", "--no-adaptive", "--csv", str(rows)])
    assert res.exit_code == 0, res.output
    assert ("Novelty: no held-out split: novelty not measured (set holdout in data.target, e.g. holdout: 0.2)."
            in res.output)
    assert "Is a sample new?" not in res.output and "near_copies" not in rows.read_text()


def test_why_novelty_is_not_measured_for_other_data():
    toy = build_source("8gaussians")
    assert novelty_reference(None, toy) == (None, "the target is sampled afresh (no finite training set): novelty "
                                                  "not measured")
    folder = ImageDataset(torch.rand(20, 1, 4, 4) * 2 - 1, name="folder")
    spec = type("Spec", (), {"name": "image_folder", "params": {"path": "x"}})()
    assert novelty_reference(spec, folder) == (None, "no held-out split: novelty not measured")
    table = table_from_array(np.random.default_rng(0).normal(size=(50, 3)), name="t")
    assert novelty_reference(None, table)[1].endswith("(set holdout in data.target, e.g. holdout: 0.2)")


def test_a_table_with_holdout_is_measured_in_its_own_units():
    table = table_from_array(np.random.default_rng(0).normal(size=(400, 3)), name="t", holdout=0.25)
    ref, what = novelty_reference(None, table)
    assert what == "300 training and 100 held-out rows of t" and ref.space == "data" and ref.classifier is None
    assert ref.measure(table.data[:100]).copies() and not ref.measure(table.held_out.data).copies()


def test_held_out_images_are_called_images():
    target = build_source({"name": "digits", "size": 8, "holdout": 0.2})
    assert held_out_target(None, target)[1] == "359 held-out images of digits8-train"
    table = table_from_array(np.zeros((10, 2)) + np.arange(10)[:, None], name="t", holdout=0.2)
    assert held_out_target(None, table)[1] == "2 held-out rows of t"


def test_expressway_rows_of_monge_eval_are_measured(tmp_path):
    run = _digits_run(tmp_path, "sd", {"name": "semidiscrete_ot", "n_targets": 16, "tol": 0.3, "max_iter": 200})
    res = runner.invoke(app, ["eval", str(run), "--nfe", "2", "-n", "60", "--no-adaptive"])
    assert res.exit_code == 0, res.output
    assert "| expressway@0.5+euler | 2 | pixels |" in res.output
    assert "| expressway@0.5+euler | 2 | classifier features |" in res.output


def test_held_out_points_are_capped_with_a_seed():
    target = build_source({"name": "digits", "size": 8, "holdout": 0.2})
    a, what = novelty_reference(None, target, classifier=False, max_held_out=100, seed=4)
    b, _ = novelty_reference(None, target, classifier=False, max_held_out=100, seed=4)
    assert a.held_out.shape[0] == 100 and torch.equal(a.held_out, b.held_out)
    assert what == "1438 training and 100 held-out images of digits8-train"


def test_novelty_sentence_names_the_rows_that_copy():
    shares = {"independent euler at 10 NFE": (0.012, 0.01), "independent expressway t_s=0.5 at 10 NFE": (0.2, 0.01)}
    text = novelty_sentence(shares, "training digits")
    assert text == ("**Copying:** independent expressway t_s=0.5 at 10 NFE: 20.0% vs 1.0% (near-copy share of the "
                    "samples vs held-out points): this row is near-copies of training digits, more than 2 points "
                    "above held-out data.")
    # 2 points is the margin: 2.9 points above does not count as copying at margin 0.03
    fine = novelty_sentence({"a": (0.039, 0.01), "b": (0.0, 0.01)}, margin=0.03)
    assert fine == ("No sign of copying: no row's near-copy share exceeds that of held-out points by more than 3 "
                    "points (largest excess, a: 3.9% vs 1.0%).")
    assert novelty_sentence({"a": (0.039, 0.01)}).startswith("**Copying:** a: 3.9% vs 1.0%")
    for bad, match in (({}, "shares is empty"), ({"a": (0.1, 0.0)}, "margin")):
        with pytest.raises(ValueError, match=match):
            novelty_sentence(bad, margin=0.02 if bad == {} else 2.0)
