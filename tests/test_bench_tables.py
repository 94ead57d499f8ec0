"""bench/tables.py on wine: the split and CSVs every method shares, a peer's cell end to end, and a
report whose headline bench/assemble.py reads (skipped without the bench-tables extra)."""

from __future__ import annotations

import csv
import dataclasses

import pytest
from benchload import load_bench

for name in ("pandas", "sdv", "sdmetrics", "sklearn"):
    pytest.importorskip(name)



@pytest.fixture(scope="module")
def tables():
    return load_bench("tables")


def test_wine_split_is_seeded_stratified_and_written_with_text_labels(tables, tmp_path):
    s = tables.QUICK
    data = tables.prepare_table("wine", s, tmp_path)
    again = tables.prepare_table("wine", dataclasses.replace(s, seeds=(5,)), tmp_path / "again")
    assert (len(data.train), len(data.holdout)) == (142, 36)
    assert data.train.equals(again.train)  # the split does not follow the training seed
    assert data.kinds["cultivar"] == "categorical" and data.integer == ["magnesium", "proline"]
    share = data.train["cultivar"].value_counts(normalize=True)
    held = data.holdout["cultivar"].value_counts(normalize=True)
    assert (share - held).abs().max() < 0.03  # stratified on the target
    with data.train_csv.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(data.train.columns) and len(rows) == 143
    assert {r[-1] for r in rows[1:]} == {"class_0", "class_1", "class_2"}


def test_a_peer_cell_and_the_report(tables, tmp_path):
    s = dataclasses.replace(tables.QUICK, methods=("gaussian_copula",))
    records = tables.run(s, tmp_path, log=lambda m: None)
    assert sorted(r["method"] for r in records) == ["gaussian_copula", "holdout"]
    cell = next(r for r in records if r["method"] == "gaussian_copula")
    assert 0.5 < cell["metrics"]["quality"] <= 1 and 0 <= cell["metrics"]["c2st_auc"] <= 1
    for rec in records:  # monge's shapes and trends against SDMetrics' QualityReport, to the third decimal
        ag = rec["agreement"]
        assert max(ag["max_shape_diff"], ag["max_trend_diff"], ag["max_mean_diff"]) < 5e-4
    assert tables.run(s, tmp_path, log=lambda m: None) == records  # resumed: nothing rerun
    out = tmp_path / "tables_quick.md"
    out.write_text(tables.report(records, s, "python bench/tables.py --quick"))
    headline, body = load_bench("assemble").read_headline(out)
    assert headline.met == "n/a" and "SDV GaussianCopula" in body and "held-out rows" in body
