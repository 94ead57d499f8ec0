"""Tables of (N, D) rows from .npy / .npz / .csv: parsing, errors, standardisation, holdout."""

import numpy as np
import pytest
import torch

from monge.data.sources import build_source
from monge.data.tabular import (
    Standardizer,
    VectorDataset,
    integer_labels,
    load_table,
    read_csv,
    table_from_array,
)


def _write(path, text):
    path.write_text(text)
    return path


def test_csv_with_and_without_header(tmp_path):
    with_header = _write(tmp_path / "h.csv", "a,b,c\n1,2,3\n4,5,6\n\n7,8,9\n")
    values, names = read_csv(with_header)
    assert names == ["a", "b", "c"] and values.shape == (3, 3) and values[2, 1] == 8
    bare = _write(tmp_path / "n.csv", "1,2,3\n4,5,6\n")
    values, names = read_csv(bare)
    assert names is None and values.tolist() == [[1, 2, 3], [4, 5, 6]]
    values, names = read_csv(with_header, header=True)
    assert names == ["a", "b", "c"]
    # header=False on a file whose first row is text: that row is data and is refused
    with pytest.raises(ValueError, match=r"line 1, column 1: 'a' is not a number"):
        read_csv(with_header, header=False)
    # a numeric first row taken as a header when told so
    values, names = read_csv(bare, header=True)
    assert names == ["1", "2", "3"] and values.shape == (1, 3)


@pytest.mark.parametrize("text,match", [
    ("a,b\n1,2\n3,x\n", r"column 'b' has a different value in every row \(2 rows\), an identifier"),
    ("a,b\n1,2\n3\n", r"line 3: 1 fields, but the first row has 2"),
    ("a,b\n1,2\n3,4,5\n", r"line 3: 3 fields"),
    ("a,b\n1,nan\n", r"line 2, column 2 \('b'\): missing value \(1 in the column\).*missing: impute"),
    ("a,b\n1,inf\n", r"non-finite value 'inf'"),
    ("a,b\n1,\n", r"line 2, column 2 \('b'\): missing value"),
    ("a,b\n", r"holds no data rows"),
    ("", r"holds no data rows"),
])
def test_bad_csv_gets_one_clear_error(tmp_path, text, match):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=match):
        load_table(path)


def test_csv_not_utf8_and_missing(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81,2\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_csv(path)
    with pytest.raises(ValueError, match="not found"):
        read_csv(tmp_path / "none.csv")


def test_label_column_and_columns(tmp_path):
    path = _write(tmp_path / "t.csv", "x,y,cls\n1,2,0\n3,4,1\n5,6,2\n")
    ds = load_table(path, label_column="cls")
    assert ds.shape == (2,) and ds.labels.tolist() == [0, 1, 2] and ds.columns == ["x", "y"]
    assert ds.num_classes == 3
    ds = load_table(path, columns=["y"], label_column=2)
    assert ds.data[:, 0].tolist() == [2, 4, 6]
    with pytest.raises(ValueError, match="is not a column"):
        load_table(path, label_column="class")
    with pytest.raises(ValueError, match="label column; it cannot also be a feature"):
        load_table(path, columns=["x", "cls"], label_column="cls")
    _write(tmp_path / "f.csv", "x,cls\n1,0.5\n")
    with pytest.raises(ValueError, match="whole numbers"):
        load_table(tmp_path / "f.csv", label_column="cls")


def test_float_labels_are_never_truncated(tmp_path):
    assert integer_labels(np.array([0.0, 2.0]), "y").tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"whole numbers .* got 1.5"):
        integer_labels(np.array([0.0, 1.5]), "y")
    with pytest.raises(ValueError, match="non-negative"):
        integer_labels(np.array([-1, 2]), "y")
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 3), np.float32), y=np.array([0.7, 1.2]))
    with pytest.raises(ValueError, match="whole numbers"):
        build_source({"name": "array", "path": str(tmp_path / "f.npz")})
    np.savez(tmp_path / "img.npz", x=np.zeros((2, 4, 4), np.float32), y=np.array([0.7, 1.2]))
    with pytest.raises(ValueError, match="whole numbers"):  # the image path reads labels the same way
        build_source({"name": "array", "path": str(tmp_path / "img.npz")})


def test_standardizer_round_trip_and_constant_columns():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64) * torch.tensor([1e3, 2.0, 0.0]) + torch.tensor(
        [5e3, -1.0, 7.0])
    s = Standardizer.fit(x)
    z = s.forward(x.float())
    assert torch.allclose(z[:, :2].mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(z[:, :2].std(0, correction=0), torch.ones(2), atol=1e-4)
    assert float(s.std[2]) == 1.0 and torch.equal(z[:, 2], torch.zeros(500))  # a constant column stays finite
    assert torch.allclose(s.inverse(z).double(), x, rtol=1e-5, atol=1e-3)
    again = Standardizer.from_tensors(s.to_tensors("data.target."), "data.target.")
    assert torch.equal(again.mean, s.mean) and torch.equal(again.std, s.std)
    with pytest.raises(ValueError, match="only one"):
        Standardizer.from_tensors({"p.mean": s.mean}, "p.")
    with pytest.raises(ValueError, match="> 0"):
        Standardizer(torch.zeros(2), torch.tensor([1.0, 0.0]))


def test_holdout_is_seeded_and_disjoint():
    rows = np.arange(200, dtype=np.float64).reshape(100, 2)  # row i is (2i, 2i+1): identifiable
    ds = table_from_array(rows, torch.arange(100) % 3, holdout=0.2, holdout_seed=4)
    held = ds.held_out
    assert isinstance(held, VectorDataset) and len(held) == 20 and len(ds) == 80
    train_ids = set((ds.data[:, 0] / 2).long().tolist())
    held_ids = set((held.data[:, 0] / 2).long().tolist())
    assert not train_ids & held_ids and train_ids | held_ids == set(range(100))
    assert held.labels.tolist() == [i % 3 for i in sorted(held_ids)]  # labels follow their rows
    same = table_from_array(rows, holdout=0.2, holdout_seed=4).held_out
    other = table_from_array(rows, holdout=0.2, holdout_seed=5).held_out
    assert torch.equal(same.data, held.data) and not torch.equal(other.data, held.data)
    # drawing training batches never returns a held-out row
    drawn = set((ds.sample(5000, torch.Generator().manual_seed(0))[:, 0] / 2).long().tolist())
    assert drawn <= train_ids
    with pytest.raises(ValueError, match="empty split"):
        table_from_array(rows[:3], holdout=0.1)
    with pytest.raises(ValueError, match="holdout"):
        table_from_array(rows, holdout=1.0)


def test_standardisation_is_fitted_on_training_rows_only():
    rows = np.concatenate([np.zeros((90, 1)), np.full((10, 1), 1e6)])  # outliers
    ds = table_from_array(rows, standardize=True, holdout=0.5, holdout_seed=0)
    kept = torch.from_numpy(rows)[torch.randperm(100, generator=torch.Generator().manual_seed(0))[50:].sort().values]
    assert torch.allclose(ds.standardizer.mean.double(), kept.mean(0), rtol=1e-6)
    assert torch.allclose(ds.standardizer.inverse(ds.held_out.data).double().sort(0).values,
                          torch.from_numpy(rows)[torch.randperm(100, generator=torch.Generator().manual_seed(0))[:50]]
                          .sort(0).values, rtol=1e-5, atol=1e-2)


def test_array_source_reads_tables_and_images(tmp_path):
    np.save(tmp_path / "t.npy", np.random.default_rng(0).normal(size=(50, 4)) * 10)
    ds = build_source({"name": "array", "path": str(tmp_path / "t.npy"), "standardize": True, "holdout": 0.1})
    assert isinstance(ds, VectorDataset) and ds.shape == (4,) and len(ds.held_out) == 5
    assert abs(float(ds.data.mean())) < 1e-5
    with pytest.raises(ValueError, match="apply to images only"):
        build_source({"name": "array", "path": str(tmp_path / "t.npy"), "size": 8})
    np.save(tmp_path / "i.npy", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"tables only"):
        build_source({"name": "array", "path": str(tmp_path / "i.npy"), "standardize": True})
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match=r"1 row\(s\) hold NaN/Inf \(the first is row 0\)"):
        build_source({"name": "array", "path": str(tmp_path / "nan.npy")})


def test_oversized_csv_is_refused_before_parsing(tmp_path, monkeypatch):
    from monge.data import tabular

    path = _write(tmp_path / "big.csv", "1,2\n" * 100)
    monkeypatch.setattr(tabular, "MAX_TABLE_BYTES", 100)
    with pytest.raises(ValueError, match=r"CSV tables are read up to 0 MiB\. Save it as a \.npy array"):
        read_csv(path)
