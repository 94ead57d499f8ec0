"""Tabular metrics: hand-computed shapes and trends, SDMetrics' QualityReport to the third decimal,
copies and shifts scored as such, and bad tables refused by name."""

import importlib.util
import math
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from monge.metrics.tabular import (
    _fit_encoding,
    alpha_precision_beta_recall,
    c2st,
    column_pair_trends,
    column_shapes,
    detection_score,
    distance_to_closest_record,
    ml_efficiency,
    quality_score,
    tabular_report,
)

KINDS = {"age": "numeric", "income": "numeric", "rooms": "numeric", "city": "categorical", "owner": "categorical"}
CITIES = np.array(["lyon", "nice", "paris"], dtype=object)


def make_table(n, seed, shift=0.0):
    """Mixed table: two correlated numbers, an integer column and two categories tied to them."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40 + 10 * shift, 10, n)
    income = 0.8 * age + rng.normal(0, 5, n)
    city = CITIES[rng.choice(3, n, p=[0.2, 0.3, 0.5] if shift == 0 else [0.5, 0.3, 0.2])]
    rooms = rng.integers(1, 4, n) + 2 * (city == "paris")
    owner = np.where(age + rng.normal(0, 5, n) > 45, "yes", "no").astype(object)
    return {"age": age, "income": income, "rooms": rooms.astype(np.int64), "city": city, "owner": owner}


def subset(table, rows):
    return {col: x[rows] for col, x in table.items()}


# ------------------------------------------------------------------------------ shapes and trends by hand


def test_column_shapes_by_hand():
    real = {"x": np.array([1.0, 2.0, 3.0, 4.0]), "c": np.array(["a", "a", "b", "c"], dtype=object)}
    synth = {"x": np.array([3.0, 4.0, 5.0, 6.0]), "c": np.array(["a", "a", "a", "b"], dtype=object)}
    shapes = column_shapes(real, synth, {"x": "numeric", "c": "categorical"})
    # KS: sup |F_r - F_s| = 0.5 at x = 2; TVD: (|.5 - .75| + |.25 - .25| + |.25 - 0|) / 2 = 0.25
    assert shapes == pytest.approx({"x": 0.5, "c": 0.75}, abs=1e-12)


def test_column_shapes_count_synthetic_only_categories():
    real = {"c": np.array(["a", "b"], dtype=object)}
    synth = {"c": np.array(["a", "z"], dtype=object)}
    assert column_shapes(real, synth, {"c": "categorical"})["c"] == pytest.approx(0.5)  # (0 + .5 + .5) / 2


def test_column_pair_trends_by_hand():
    kinds = {"x": "numeric", "y": "numeric", "c": "categorical", "d": "categorical"}
    real = {"x": np.array([1.0, 2.0, 3.0, 4.0]), "y": np.array([1.0, 2.0, 3.0, 4.0]),
            "c": np.array(["a", "a", "b", "c"], dtype=object), "d": np.array(["u", "u", "v", "v"], dtype=object)}
    synth = {"x": np.array([1.0, 2.0, 3.0, 4.0]), "y": np.array([1.0, 3.0, 2.0, 4.0]),
             "c": np.array(["a", "a", "a", "b"], dtype=object), "d": np.array(["u", "v", "v", "v"], dtype=object)}
    trends = column_pair_trends(real, synth, kinds)
    assert list(trends) == [("x", "y"), ("x", "c"), ("x", "d"), ("y", "c"), ("y", "d"), ("c", "d")]
    # rho_r = 1, rho_s = 4/5: 1 - 0.2/2
    assert trends[("x", "y")] == pytest.approx(0.9, abs=1e-12)
    # joint (c, d): real (a,u) .5, (b,v) .25, (c,v) .25; synth (a,u) .25, (a,v) .5, (b,v) .25: TVD 0.5
    assert trends[("c", "d")] == pytest.approx(0.5, abs=1e-12)
    # x falls in its own bins 1, 4, 7 and 11 in both tables: only c changes, (b,3) and (c,4) become (a,3) and (b,4)
    assert trends[("x", "c")] == pytest.approx(0.5, abs=1e-12)


def test_numeric_bins_follow_each_tables_own_range():
    """As SDMetrics: a shifted numeric column keeps its pair score (bins on its own range), not its shape."""
    kinds = {"x": "numeric", "c": "categorical"}
    real = {"x": np.array([0.0, 0.0, 10.0, 10.0]), "c": np.array(["a", "a", "b", "b"], dtype=object)}
    shifted = {"x": real["x"] + 100.0, "c": real["c"]}
    mixed = {"x": real["x"], "c": np.array(["a", "b", "a", "b"], dtype=object)}
    assert column_pair_trends(real, shifted, kinds)[("x", "c")] == 1.0
    assert column_shapes(real, shifted, kinds)["x"] == 0.0
    assert column_pair_trends(real, mixed, kinds)[("x", "c")] == pytest.approx(0.5)


def test_constant_column_pair_is_nan_and_left_out_of_the_mean():
    kinds = {"x": "numeric", "y": "numeric", "k": "numeric"}
    real = {"x": np.arange(5.0), "y": np.arange(5.0) ** 2, "k": np.ones(5)}
    trends = column_pair_trends(real, real, kinds)
    assert math.isnan(trends[("x", "k")]) and math.isnan(trends[("y", "k")])
    assert trends[("x", "y")] == 1.0
    assert quality_score(real, real, kinds) == {"column_shapes": 1.0, "column_pair_trends": 1.0, "quality": 1.0}


def test_thresholds_leave_weak_real_pairs_out():
    real, synth = make_table(400, 0), make_table(400, 1, shift=0.5)
    every = column_pair_trends(real, synth, KINDS)
    strong = column_pair_trends(real, synth, KINDS, correlation_threshold=0.5, association_threshold=0.3)
    assert not any(math.isnan(v) for v in every.values())
    assert not math.isnan(strong[("age", "income")])  # rho about 0.85
    assert math.isnan(strong[("income", "rooms")])  # independent columns
    assert {k: v for k, v in strong.items() if not math.isnan(v)} == {k: every[k] for k in strong
                                                                        if not math.isnan(strong[k])}


def test_identical_tables_score_one_and_a_shift_scores_lower():
    real = make_table(500, 0)
    assert quality_score(real, real, KINDS) == {"column_shapes": 1.0, "column_pair_trends": 1.0, "quality": 1.0}
    fresh = quality_score(real, make_table(500, 1), KINDS)["quality"]
    shifted = quality_score(real, make_table(500, 1, shift=1.0), KINDS)["quality"]
    assert fresh > 0.9 and shifted < fresh - 0.15


# ------------------------------------------------------------------------------------------ SDMetrics


def _sdmetrics_report(real, synth, kinds, thresholds):
    pd = pytest.importorskip("pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sdmetrics.reports import QualityReport

        meta = {"tables": {"t": {"columns": {
            c: {"sdtype": "numerical" if k == "numeric" else "categorical"} for c, k in kinds.items()}}}}
        report = QualityReport()
        report.real_correlation_threshold, report.real_association_threshold = thresholds
        report.generate({"t": pd.DataFrame(real)}, {"t": pd.DataFrame(synth)}, meta, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    pairs = report.get_details("Column Pair Trends", "t")
    return props, report.get_score(), {(a, b): s for a, b, s in zip(pairs["Column 1"], pairs["Column 2"],
                                                                     pairs["Score"], strict=True)}


def _numeric_table(n, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3)) @ np.array([[1.0, 0.7, 0.0], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]]) * scale
    return {"a": z[:, 0], "b": z[:, 1], "c": np.exp(z[:, 2])}


@pytest.mark.parametrize("thresholds", [(0.0, 0.0), (0.5, 0.3)], ids=["every-pair", "sdmetrics-defaults"])
@pytest.mark.parametrize("which", ["numeric", "mixed"])
def test_agrees_with_sdmetrics_quality_report(which, thresholds):
    pytest.importorskip("sdmetrics", minversion="0.32")  # the unified report and its thresholds
    if which == "numeric":
        kinds = {"a": "numeric", "b": "numeric", "c": "numeric"}
        real, synth = _numeric_table(600, 0), _numeric_table(450, 1, scale=1.3)
    else:
        kinds, real, synth = KINDS, make_table(600, 0), make_table(450, 1, shift=0.4)
    props, overall, pairs = _sdmetrics_report(real, synth, kinds, thresholds)
    th = {"correlation_threshold": thresholds[0], "association_threshold": thresholds[1]}
    ours = quality_score(real, synth, kinds, **th)
    assert ours["column_shapes"] == pytest.approx(props["Column Shapes"], abs=5e-4)
    assert ours["column_pair_trends"] == pytest.approx(props["Column Pair Trends"], abs=5e-4)
    assert ours["quality"] == pytest.approx(overall, abs=5e-4)
    trends = column_pair_trends(real, synth, kinds, **th)
    assert set(trends) == set(pairs)
    for pair, score in pairs.items():
        assert (math.isnan(score) and math.isnan(trends[pair])) or trends[pair] == pytest.approx(score, abs=5e-4)


# ------------------------------------------------------------------------------------------- encoding


def test_encoding_standardises_by_real_rows_and_zeroes_unseen_labels():
    kinds = {"x": "numeric", "c": "categorical"}
    real = {"x": np.array([1.0, 3.0]), "c": np.array(["a", "b"], dtype=object)}
    synth = {"x": np.array([5.0]), "c": np.array(["z"], dtype=object)}
    enc = _fit_encoding(real, kinds)
    np.testing.assert_array_equal(enc(real), [[-1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(enc(synth), [[3.0, 0.0, 0.0]])


# ------------------------------------------------------------------------------ alpha-precision / recall


def _synthcity_naive(x, y, steps=30):
    """synthcity's AlphaPrecision.metrics (emb_center=None) on encoded rows, written with scipy's cdist."""
    alphas = np.linspace(0, 1, steps)
    centre = x.mean(0)
    radii = np.quantile(np.linalg.norm(x - centre, axis=1), alphas)
    synth_to_centre = np.linalg.norm(y - centre, axis=1)
    rr = cdist(x, x)
    np.fill_diagonal(rr, np.inf)
    real_to_real = rr.min(1)
    rs = cdist(x, y)
    real_to_synth, args = rs.min(1), rs.argmin(1)
    closest_d = np.linalg.norm(y[args] - y.mean(0), axis=1)
    closest_radii = np.quantile(closest_d, alphas)
    p = [np.mean(synth_to_centre <= r) for r in radii]
    b = [np.mean((real_to_synth <= real_to_real) * (closest_d <= r)) for r in closest_radii]
    return (1 - np.sum(np.abs(alphas - p)) / np.sum(alphas), 1 - np.sum(np.abs(alphas - b)) / np.sum(alphas))


def test_alpha_precision_beta_recall_matches_synthcitys_formula():
    real, synth = make_table(300, 0), make_table(250, 1, shift=0.5)
    enc = _fit_encoding(real, KINDS)
    ours = alpha_precision_beta_recall(real, synth, KINDS)
    assert (ours.alpha_precision, ours.beta_recall) == pytest.approx(_synthcity_naive(enc(real), enc(synth)), abs=1e-12)


def test_alpha_precision_beta_recall_sees_a_shift_and_a_collapse():
    real = make_table(400, 0)
    same = alpha_precision_beta_recall(real, real, KINDS)
    assert same.alpha_precision > 0.95 and same.precision_curve[-1] == 1.0
    assert same.beta_recall > 0.95  # every real row is its own nearest synthetic row
    fresh = alpha_precision_beta_recall(real, make_table(400, 1), KINDS)
    shifted = alpha_precision_beta_recall(real, make_table(400, 1, shift=2.0), KINDS)
    assert fresh.alpha_precision > 0.85 and shifted.alpha_precision < fresh.alpha_precision - 0.3
    collapsed = alpha_precision_beta_recall(real, subset(make_table(400, 1), np.zeros(400, dtype=int)), KINDS)
    assert collapsed.beta_recall < fresh.beta_recall - 0.2
    assert same.alphas.shape == same.recall_curve.shape == (30,)


# ------------------------------------------------------------------------------------------ detection


def test_c2st_chance_for_fresh_rows_high_for_a_shift_and_seeded():
    holdout = make_table(600, 0)
    fresh = c2st(holdout, make_table(600, 1), KINDS, seed=3)
    assert abs(fresh - 0.5) < 0.1
    assert c2st(holdout, make_table(600, 1), KINDS, seed=3) == fresh
    assert c2st(holdout, make_table(600, 1, shift=1.0), KINDS, seed=3) > 0.7


def test_c2st_sees_broken_dependence_with_right_marginals():
    rng = np.random.default_rng(4)
    independent = {col: rng.permutation(x) for col, x in make_table(600, 1).items()}
    assert quality_score(make_table(600, 0), independent, KINDS)["column_shapes"] > 0.9
    assert c2st(make_table(600, 0), independent, KINDS) > 0.75


def test_detection_score_by_hand():
    assert [detection_score(a) for a in (0.3, 0.5, 0.75, 1.0)] == [1.0, 1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="auc"):
        detection_score(1.5)


# -------------------------------------------------------------------------------------------- utility


def test_ml_efficiency_equal_for_real_rows_and_lower_for_a_broken_label():
    train, test = make_table(500, 0), make_table(300, 1)
    same = ml_efficiency(train, train, test, "owner", KINDS)
    assert list(same) == ["accuracy_real", "accuracy_synth", "f1_real", "f1_synth"]
    assert same["accuracy_real"] == same["accuracy_synth"] and same["f1_real"] == same["f1_synth"]
    assert same["accuracy_real"] > 0.7
    broken = dict(train, owner=np.random.default_rng(5).permutation(train["owner"]))
    assert ml_efficiency(train, broken, test, "owner", KINDS)["accuracy_synth"] < same["accuracy_real"] - 0.15


def test_ml_efficiency_numeric_target_and_single_class():
    train, test = make_table(500, 0), make_table(300, 1)
    r2 = ml_efficiency(train, train, test, "income", KINDS)
    assert list(r2) == ["r2_real", "r2_synth"] and r2["r2_real"] == r2["r2_synth"] > 0.5
    one = dict(train, owner=np.full(500, "yes", dtype=object))
    acc = ml_efficiency(train, one, test, "owner", KINDS)["accuracy_synth"]
    assert acc == pytest.approx(np.mean(test["owner"] == "yes"))


# -------------------------------------------------------------------------------------------- privacy


def test_dcr_flags_copies_and_not_fresh_rows():
    train, holdout = make_table(500, 0), make_table(200, 1)
    copies = distance_to_closest_record(train, subset(train, np.arange(300)), holdout, KINDS)
    assert copies.ratio < 1e-9 and copies.duplicate_share == 1.0 and copies.copies()
    fresh = distance_to_closest_record(train, make_table(300, 2), holdout, KINDS)
    assert 0.7 < fresh.ratio < 1.4 and not fresh.copies(margin=0.05)
    assert fresh.space == "standardised one-hot" and fresh.quantile == 0.05


# --------------------------------------------------------------------------------------------- report


def test_tabular_report_keys_and_values():
    train, holdout = make_table(400, 0), make_table(200, 1)
    keys = ["column_shapes", "column_pair_trends", "quality", "alpha_precision", "beta_recall", "c2st_auc",
            "detection", "dcr_ratio", "dcr_share", "dcr_heldout_share", "dcr_duplicates"]
    report = tabular_report(train, make_table(400, 2), holdout, KINDS)
    assert list(report) == keys and all(math.isfinite(v) for v in report.values())
    copied = tabular_report(train, train, holdout, KINDS, target="owner")
    assert list(copied) == keys + ["mle_accuracy_real", "mle_accuracy_synth", "mle_f1_real", "mle_f1_synth"]
    assert copied["quality"] == 1.0 and copied["dcr_ratio"] == 0.0 and copied["dcr_duplicates"] == 1.0
    assert copied["mle_accuracy_real"] == copied["mle_accuracy_synth"]
    assert report["quality"] < 1.0 and report["dcr_ratio"] > 0.5


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t, k: t.pop("city"), r"synth lacks \['city'\]"),
        (lambda t, k: t.update(extra=np.zeros(4)), r"kinds lacks \['extra'\]"),
        (lambda t, k: t.update(age=np.array([1.0, np.nan, 2.0, 3.0])), r"synth\['age'\] holds 1 missing"),
        (lambda t, k: t.update(age=np.array(["1", "2", "3", "4"])), r"synth\['age'\] is numeric in kinds"),
        (lambda t, k: t.update(city=np.array(["a", 1, "b", "c"], dtype=object)), "mixes label types"),
        (lambda t, k: t.update(city=np.array(["a", None, "b", "c"], dtype=object)), "missing values"),
        (lambda t, k: t.update(age=np.zeros(3)), "one length"),
        (lambda t, k: t.update(age=np.zeros((4, 1))), "1-D array"),
        (lambda t, k: k.update(age="ordinal"), r"kinds\['age'\] must be one of"),
    ],
)
def test_bad_tables_are_refused_by_name(change, match):
    real = subset(make_table(8, 0), np.arange(4))
    synth, kinds = dict(real), dict(KINDS)
    change(synth, kinds)
    with pytest.raises(ValueError, match=match):
        column_shapes(real, synth, kinds)


def test_ml_efficiency_refuses_an_unknown_target():
    t = make_table(20, 0)
    with pytest.raises(ValueError, match="target 'label' is not a column"):
        ml_efficiency(t, t, t, "label", KINDS)


def test_classifier_metrics_name_the_extra_without_scikit_learn(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real_find_spec(name, *a))
    t = make_table(20, 0)
    with pytest.raises(ImportError, match=r'pip install "monge\[tables\]"'):
        c2st(t, t, KINDS)
