"""Table schemas: kinds inferred or declared, one-hot encoding and its decode, missing cells, bad columns."""

import json
import logging

import numpy as np
import pytest
import torch

from monge.data.schema import Column, TableSchema
from monge.data.sources import build_source
from monge.data.tabular import load_table, table_csv


def _write(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _mixed(path, n=40):
    """Text, integer, float and label columns: row i is identifiable by its integer ``n``."""
    rows = [f"{['red', 'green', 'blue'][i % 3]},{3 * i + 7},{0.5 * i - 1.25},{'yes' if i % 4 else 'no'}"
            for i in range(n)]
    return _write(path, "colour,n,x,ok", rows)


def test_kinds_are_inferred_and_the_table_round_trips(tmp_path):
    ds = load_table(_mixed(tmp_path / "t.csv"), label_column="ok")
    schema = ds.schema
    assert [(c.name, c.kind) for c in schema.columns] == [("colour", "categorical"), ("n", "integer"),
                                                         ("x", "numeric")]
    assert schema.columns[0].categories == ("blue", "green", "red")  # sorted
    assert schema.columns[2].decimals == 2 and schema.columns[1].decimals is None
    assert schema.width == 5 and ds.shape == (5,)
    assert schema.kinds == {"colour": "categorical", "n": "numeric", "x": "numeric", "ok": "categorical"}
    assert ds.class_names == ["no", "yes"] and ds.num_classes == 2 and ds.labels[:5].tolist() == [0, 1, 1, 1, 0]
    assert ds.data[0].tolist() == [0, 0, 1, 7, -1.25]  # one-hot red, then the numbers
    table = ds.table()  # decoded: the file's columns, kinds and order
    assert list(table) == ["colour", "n", "x", "ok"]
    assert table["colour"].dtype == object and table["colour"][:4].tolist() == ["red", "green", "blue", "red"]
    assert table["n"].dtype == np.int64 and table["n"][:3].tolist() == [7, 10, 13]
    assert table["x"].dtype == np.float64 and table["ok"][:2].tolist() == ["no", "yes"]
    np.testing.assert_array_equal(schema.encode(table), ds.data.numpy())


def test_decode_takes_the_argmax_rounds_and_clips_integers():
    schema = TableSchema((Column("c", "categorical", ("a", "b", "c")), Column("k", "integer", low=0, high=5),
                          Column("v", "numeric", low=-1, high=1)))
    x = np.array([[0.1, 0.7, 0.2, 2.4, 0.3], [-3, -2, -1, 7.6, 9.0], [1, 0, 0, -0.6, -2.0]])
    out = schema.decode(x)
    assert out["c"].tolist() == ["b", "c", "a"]
    assert out["k"].tolist() == [2, 5, 0]  # rounded, then clipped to the training range [0, 5]
    assert out["v"].tolist() == [0.3, 9.0, -2.0]  # numbers are not clipped
    rounded = TableSchema((Column("v", "numeric", low=0, high=1, decimals=1),))
    assert rounded.decode(np.array([[0.2345], [-1.06]]))["v"].tolist() == [0.2, -1.1]  # the file's decimals
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        schema.decode(x[:, :4])
    with pytest.raises(ValueError, match="'z' is not one of its categories"):
        schema.encode({"c": np.array(["z"], dtype=object), "k": np.array([1]), "v": np.array([0.0])})


def test_schema_is_json_and_round_trips(tmp_path):
    schema = load_table(_mixed(tmp_path / "t.csv"), label_column="ok").schema
    again = TableSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert again == schema and again.order == ("colour", "n", "x", "ok") and again.label_counts == (10, 30)
    with pytest.raises(ValueError, match="malformed table schema"):
        TableSchema.from_dict({"order": []})
    with pytest.raises(ValueError, match="kind must be one of"):
        TableSchema.from_dict({"columns": [{"name": "a", "kind": "text"}]})


def test_declared_kinds_override_inference(tmp_path):
    path = _mixed(tmp_path / "t.csv")
    ds = load_table(path, numeric=["n"], drop=["colour", "ok"])
    assert [(c.name, c.kind) for c in ds.schema.columns] == [("n", "numeric"), ("x", "numeric")]
    ds = load_table(_write(tmp_path / "k.csv", "k,x", [f"{i % 4},{i}.5" for i in range(8)]), categorical=["k"])
    assert ds.schema.columns[0].categories == ("0", "1", "2", "3") and ds.shape == (5,)
    with pytest.raises(ValueError, match="column 'n' has a different value in every row"):
        load_table(path, categorical=["n"])  # an identifier stays refused as a category
    with pytest.raises(ValueError, match="declared both categorical and integer"):
        load_table(path, categorical=["n"], integer=["n"])
    with pytest.raises(ValueError, match=r"line 2, column 1 \('colour'\): 'red' is not a number, but the column is "
                                         "declared numeric"):
        load_table(path, numeric=["colour"])
    with pytest.raises(ValueError, match=r"line 2, column 3 \('x'\): '-1.25' is not a whole number"):
        load_table(path, integer=["x"])
    with pytest.raises(ValueError, match="not both"):
        load_table(path, columns=["n"], drop=["x"])


def test_mixed_column_is_categorical_and_said_so_or_refused_when_declared_numeric(tmp_path, caplog):
    rows = [f"{v},{i % 5}" for i, v in enumerate(["1", "2", "?", "2", "1", "3", "?", "1"] * 3)]
    path = _write(tmp_path / "m.csv", "score,k", rows)
    with caplog.at_level(logging.WARNING, logger="monge.data.schema"):
        ds = load_table(path)
    assert ds.schema.columns[0].categories == ("1", "2", "3", "?")
    assert "mixing numbers and text, read as categorical" in caplog.text and "'score' (e.g. '?' on line 4)" in \
        caplog.text
    with pytest.raises(ValueError, match=r"line 4, column 1 \('score'\): '\?' is not a number, but the column is "
                                         r"declared numeric"):
        load_table(path, numeric=["score"])


def test_missing_cells_are_refused_or_imputed_and_logged(tmp_path, caplog):
    rows = [f"{c},{v},{k}" for c, v, k in [("a", "1.5", "1"), ("", "2.5", "2"), ("b", "NA", "4"), ("a", "9.5", ""),
                                           ("b", "3.5", "2"), ("a", "0.5", "3")]]
    path = _write(tmp_path / "m.csv", "c,v,k", rows)
    with pytest.raises(ValueError, match=r"line 3, column 1 \('c'\): missing value \(1 in the column\).*"
                                         r"missing: impute"):
        load_table(path)
    with caplog.at_level(logging.WARNING, logger="monge.data.schema"):
        table = load_table(path, missing="impute").table()
    assert table["c"].tolist() == ["a", "a", "b", "a", "b", "a"]  # the most frequent label
    assert table["v"][2] == pytest.approx(2.5)  # the median of 1.5, 2.5, 9.5, 3.5, 0.5
    assert table["k"][3] == 2 and table["k"].dtype == np.int64  # the median of 1, 2, 4, 2, 3
    assert caplog.text.count("missing cells imputed") == 1  # one line for the table
    assert "'c': 1 cell(s) = a" in caplog.text and "'k': 1 cell(s) = 2" in caplog.text
    with pytest.raises(ValueError, match="missing must be one of refuse, impute"):
        load_table(path, missing="drop")


def test_imputation_uses_the_training_rows_only(tmp_path):
    rows = [f"{v}" if i != 0 else "" for i, v in enumerate([0] + [1] * 10 + [1000] * 10)]
    path = _write(tmp_path / "m.csv", "v,g", [f"{r},{i % 2}" for i, r in enumerate(rows)])
    ds = load_table(path, missing="impute", holdout=0.5, holdout_seed=3)
    kept = torch.randperm(21, generator=torch.Generator().manual_seed(3))[10:].sort().values.numpy()
    values = np.array([np.nan] + [1.0] * 10 + [1000.0] * 10)
    expected = np.nanmedian(values[kept])
    full = np.concatenate([ds.table()["v"], ds.held_out.table()["v"]])
    assert expected in full and ds.schema.columns[0].low == values[kept][~np.isnan(values[kept])].min()


def test_label_column_with_a_missing_cell_is_refused_whatever_the_policy(tmp_path):
    path = _write(tmp_path / "l.csv", "x,y", ["1.5,a", "2.5,", "3.5,b", "0.5,a"])
    for missing in ("refuse", "impute"):
        with pytest.raises(ValueError, match=r"line 3, column 2 \('y'\): the label column has a missing cell"):
            load_table(path, label_column="y", missing=missing)


def test_constant_columns_are_kept_and_decoded_as_their_value(tmp_path, caplog):
    path = _write(tmp_path / "c.csv", "a,k,t,x", [f"3.25,7,same,{i * 0.37 % 1:.3f}" for i in range(12)])
    with caplog.at_level(logging.WARNING, logger="monge.data.schema"):
        ds = load_table(path, standardize=True)
    assert "constant columns, kept and written as their one value: 'a' = 3.25; 'k' = 7; 't' = 'same'" in caplog.text
    noise = torch.randn(50, ds.schema.width, generator=torch.Generator().manual_seed(0))
    table = ds.schema.decode(ds.standardizer.inverse(noise).numpy())
    assert set(table["a"]) == {3.25} and set(table["k"]) == {7} and set(table["t"]) == {"same"}


def test_a_category_seen_once_is_kept_with_a_warning(tmp_path, caplog):
    path = _write(tmp_path / "r.csv", "c,x", [f"{c},{i * 0.1:.1f}" for i, c in enumerate("aabbabaz")])
    with caplog.at_level(logging.WARNING, logger="monge.data.schema"):
        ds = load_table(path)
    assert ds.schema.columns[0].categories == ("a", "b", "z")
    assert "categories seen in one row only, kept" in caplog.text and "'c': 'z'" in caplog.text


def test_identifier_columns_are_refused_naming_the_fix(tmp_path):
    ids = _write(tmp_path / "id.csv", "name,x", [f"user{i},{i % 3}" for i in range(20)])
    with pytest.raises(ValueError, match=r"column 'name' has a different value in every row \(20 rows\), an "
                                         r"identifier.*drop: \[name\]"):
        load_table(ids)
    assert load_table(ids, drop=["name"]).schema.names == ["x"]
    counter = _write(tmp_path / "row.csv", "row,x", [f"{i + 1},{(i * 7) % 5}" for i in range(20)])
    with pytest.raises(ValueError, match=r"column 'row' counts 1, 2, 3, ... row by row, a row number.*"
                                         r"drop: \[row\]"):
        load_table(counter)
    assert load_table(counter, integer=["row"]).schema.columns[0].kind == "integer"  # declared: kept
    pandas_index = _write(tmp_path / "index.csv", ",x", [f"{i},{(i * 7) % 5}" for i in range(20)])  # no name
    with pytest.raises(ValueError, match=r'column \'\' counts 0, 1, 2, .*drop: \[""\]'):
        load_table(pandas_index)
    assert load_table(pandas_index, drop=[""]).schema.names == ["x"]
    short = _write(tmp_path / "short.csv", "k,x", [f"{i},{i * 0.5}" for i in range(5)])  # too few rows to tell
    assert load_table(short).schema.columns[0].kind == "integer"


def test_too_many_categories_is_refused_naming_the_cap(tmp_path):
    path = _write(tmp_path / "wide.csv", "c,x", [f"c{i // 2},{i * 7 % 13}" for i in range(40)])
    assert load_table(path).schema.columns[0].width == 20
    with pytest.raises(ValueError, match=r"column 'c' has 20 categories, more than max_categories=10.*raise "
                                         "max_categories"):
        load_table(path, max_categories=10)
    labels = _write(tmp_path / "lab.csv", "x,y", [f"{i * 0.1},{i % 3 * 50}" for i in range(30)])
    with pytest.raises(ValueError, match="label column 'y' has class 100, more than max_categories=100"):
        load_table(labels, label_column="y")
    assert load_table(labels, label_column="y", categorical=["y"]).class_names == ["0", "100", "50"]


def test_text_labels_are_classes_and_integer_labels_keep_their_index(tmp_path):
    path = _mixed(tmp_path / "t.csv")
    ds = load_table(path, label_column="colour")
    assert ds.class_names == ["blue", "green", "red"] and ds.labels[:3].tolist() == [2, 1, 0]
    assert ds.schema.class_index("green") == 1
    with pytest.raises(ValueError, match="'pink' is not a class of the label column 'colour': blue, green, red"):
        ds.schema.class_index("pink")
    assert ds.schema.draw_labels("red", 4).tolist() == [2] * 4
    assert ds.schema.draw_labels("all", 5).tolist() == [0, 1, 2, 0, 1]
    drawn = ds.schema.draw_labels(None, 3000, seed=1)
    assert np.allclose(np.bincount(drawn) / 3000, np.array(ds.schema.label_counts) / 40, atol=0.03)
    ints = _write(tmp_path / "i.csv", "x,y", [f"{i * 0.1},{1 + i % 3}" for i in range(9)])
    ds = load_table(ints, label_column="y")
    assert ds.labels[:3].tolist() == [1, 2, 3] and ds.class_names == ["0", "1", "2", "3"]  # the value is the class


def test_headerless_files_and_the_csv_writer(tmp_path):
    path = tmp_path / "bare.csv"
    path.write_text("1,a,2.5\n2,b,3.5\n1,a,0.5\n")
    ds = load_table(path, header=False, categorical=[0])
    assert ds.schema.header is False and ds.schema.names == ["0", "1", "2"]
    text = table_csv(ds.table(), header=False)
    assert text.splitlines() == ["1,a,2.5", "2,b,3.5", "1,a,0.5"]
    quoted = table_csv({"c": np.array(["a, b", 'say "hi"'], dtype=object), "k": np.array([1, 2])})
    assert quoted.splitlines() == ["c,k", '"a, b",1', '"say ""hi""",2']


def test_csv_source_takes_the_options(tmp_path):
    path = _mixed(tmp_path / "t.csv")
    ds = build_source({"name": "csv", "path": str(path), "label_column": "ok", "drop": ["x"], "standardize": True,
                       "numeric": ["n"], "max_categories": 50, "holdout": 0.25})
    assert ds.schema.names == ["colour", "n"] and ds.shape == (4,) and len(ds.held_out) == 10
    assert [c.kind for c in ds.schema.columns] == ["categorical", "numeric"]
    assert ds.standardizer.std[:3].tolist() == [1, 1, 1] and ds.standardizer.mean[:3].tolist() == [0, 0, 0]
    assert float(ds.standardizer.std[3]) > 10  # one-hot blocks are never rescaled, numbers are
    with pytest.raises(ValueError, match="categorical must be a list of column names"):
        build_source({"name": "csv", "path": str(path), "categorical": "n"})
