"""A table in, a table out, through the command line alone: text, integer, float and missing cells go
in (``monge train recipe.yaml``), a table of the same schema comes out (``monge sample -o synth.csv``)."""

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from monge.cli import app
from monge.data.tabular import load_table
from monge.run.checkpoint import load_checkpoint

runner = CliRunner()
CITIES = ("Paris", "Lyon", "Nice, FR")
HEADER = ["age", "city", "income", "kids", "plan"]


def _table(path, n=240, seed=0):
    """People: age (integer), city (text, one label with a comma), income (float, higher on the pro
    plan), kids (integer), plan (the label column); a few empty income and city cells."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(n):
            plan = ("basic", "pro")[i % 3 == 0]
            row = [int(rng.integers(18, 70)), CITIES[rng.choice(3, p=[0.5, 0.3, 0.2])],
                   f"{rng.normal(30000 + 20000 * (plan == 'pro'), 3000):.2f}", int(rng.poisson(1.2)), plan]
            if i % 37 == 5:
                row[2] = ""
            if i % 41 == 7:
                row[1] = ""
            writer.writerow(row)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("people")
    _table(tmp / "people.csv")
    recipe = tmp / "people.yaml"
    recipe.write_text(f"""name: people
output_dir: {tmp / 'runs'}
data:
  source: gaussian
  target: {{name: csv, path: {tmp / 'people.csv'}, label_column: plan, missing: impute, standardize: true,
           holdout: 0.1}}
coupling: exact_ot
model: {{name: mlp, hidden: 64, depth: 2, num_classes: 2}}
train: {{steps: 300, batch_size: 64, lr: 0.003, eval_samples: 50, checkpoint_every: 0}}
sample: {{nfe: [4], adaptive: false}}
""")
    res = runner.invoke(app, ["train", str(recipe), "--no-progress"])
    assert res.exit_code == 0, res.output
    return tmp, tmp / "runs" / "people"


def _read(path):
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_the_same_schema_comes_out(run):
    tmp, run_dir = run
    out = tmp / "synth.csv"
    res = runner.invoke(app, ["sample", str(run_dir), "-n", "300", "-o", str(out)])
    assert res.exit_code == 0, res.output
    header, rows = _read(out)
    assert header == HEADER and len(rows) == 300
    ages, kids = [int(r[0]) for r in rows], [int(r[3]) for r in rows]  # integers written as integers
    assert all(r[0] == str(int(r[0])) and r[3] == str(int(r[3])) for r in rows)
    assert 18 <= min(ages) and max(ages) <= 69 and min(kids) >= 0  # within the training rows' range
    assert {r[1] for r in rows} <= set(CITIES) and len({r[1] for r in rows}) == 3  # the original labels
    assert {r[4] for r in rows} == {"basic", "pro"}  # the label column, drawn with the table's frequencies
    assert 0.2 < np.mean([r[4] == "pro" for r in rows]) < 0.5
    incomes = np.array([float(r[2]) for r in rows])
    assert np.isfinite(incomes).all() and incomes.std() > 1000
    assert all(len(r[2].partition(".")[2]) <= 2 for r in rows)  # written to the input's 2 decimals
    again = load_table(out, label_column="plan").schema  # read back: the kinds of the input
    source = load_table(tmp / "people.csv", label_column="plan", missing="impute").schema
    assert [(c.name, c.kind) for c in again.columns] == [(c.name, c.kind) for c in source.columns]
    assert again.label.categories == source.label.categories and again.order == source.order


def test_class_conditional_samples_take_the_class_name(run):
    tmp, run_dir = run
    out = tmp / "pro.csv"
    res = runner.invoke(app, ["sample", str(run_dir), "-n", "200", "--class", "pro", "-o", str(out)])
    assert res.exit_code == 0, res.output
    header, rows = _read(out)
    assert header == HEADER and {r[4] for r in rows} == {"pro"}
    assert np.mean([float(r[2]) for r in rows]) > 40000  # the pro plan's incomes (50k against 30k)
    res = runner.invoke(app, ["sample", str(run_dir), "-n", "5", "--class", "gold", "-o", str(tmp / "g.csv")])
    assert res.exit_code == 2 and "'gold' is not a class of the label column 'plan': basic, pro" in res.output
    assert not (tmp / "g.csv").exists()


def test_text_columns_need_a_csv_and_the_default_is_one(run):
    tmp, run_dir = run
    res = runner.invoke(app, ["sample", str(run_dir), "-n", "5", "-o", str(tmp / "s.npy")])
    assert res.exit_code == 2 and "text columns (city)" in res.output and "-o s.csv" in res.output
    res = runner.invoke(app, ["sample", str(run_dir), "-n", "5"])
    assert res.exit_code == 0, res.output
    assert _read(run_dir / "samples.csv")[0] == HEADER and not (run_dir / "samples.npy").exists()


def test_the_checkpoint_keeps_the_schema(run):
    tmp, run_dir = run
    _, _, state = load_checkpoint(run_dir / "checkpoint.safetensors")
    schema = state["table_schema"]
    assert schema["order"] == HEADER and schema["label"]["categories"] == ["basic", "pro"]
    assert [c["kind"] for c in schema["columns"]] == ["integer", "categorical", "numeric", "integer"]
    assert schema["columns"][1]["categories"] == sorted(CITIES)


def test_eval_reports_table_quality_in_the_files_units(run):
    """``monge eval`` on a table run: the tabular report per setting, the label column as the ML-efficiency target."""
    from monge.generate import evaluate_checkpoints

    _, run_dir = run
    res = evaluate_checkpoints([run_dir], nfes=(1, 8), adaptive=False, n=300, seed=0)
    rows = res.tables["people"]
    assert list(rows) == ["1", "8"]
    for r in rows.values():
        assert 0.0 <= r["column_shapes"] <= 1.0 and 0.0 <= r["c2st_auc"] <= 1.0
        assert "mle_accuracy_synth" in r and "mle_f1_real" in r  # the plan column is the target
    # eight Euler steps follow the learned field more closely than one: the shapes do not get worse
    assert rows["8"]["column_shapes"] >= rows["1"]["column_shapes"] - 0.02
    assert "Table quality in the file's units" in res.report and "| 8 |" in res.report
    cli = runner.invoke(app, ["eval", str(run_dir), "--nfe", "4", "--no-adaptive", "-n", "200"])
    assert cli.exit_code == 0, cli.output
    assert "C2ST AUC" in cli.output and "α-precision" in cli.output
