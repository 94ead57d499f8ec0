r"""The evaluation of synthetic tables: fidelity, detection, utility and privacy, in a table's own units.

A table is a mapping ``column name -> 1-D array`` (all of one length; numeric columns float64 or
int64, categorical columns arrays of labels, usually ``str``; no missing values) with ``kinds``
mapping each column to ``"numeric"`` or ``"categorical"``. Every function takes the real and the
synthetic table (and, where it needs one, rows held out of training) in that form.

* **Fidelity** as SDMetrics' ``QualityReport``: :func:`column_shapes` (one score per column),
  :func:`column_pair_trends` (one per pair of columns), :func:`quality_score` (their means and the
  mean of the two), and :func:`alpha_precision_beta_recall` (Alaa et al. 2022).
* **Detection**: :func:`c2st`, the held-out AUC of a classifier telling real rows from synthetic
  ones (0.5 is ideal), and :func:`detection_score`.
* **Utility**: :func:`ml_efficiency`, a model trained on synthetic rows against one trained on
  real rows, both scored on real held-out rows.
* **Privacy**: :func:`distance_to_closest_record`, each synthetic row's distance to its nearest
  training row against the same for held-out rows (:func:`monge.metrics.novelty.novelty`).

:func:`tabular_report` gathers all of them in one flat dict. The distances and classifiers work
on the *encoded* rows: each numeric column standardised by the real training rows,
:math:`z = (x - \mu)/\sigma` (:math:`\sigma = 1` for a constant column), each categorical column
one-hot over the real table's categories (a synthetic label the real rows lack encodes as all
zeros). The classifier-based metrics need scikit-learn (``pip install "monge[tables]"``).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import ks_2samp
from scipy.stats.contingency import association

from .._validation import check_number, check_positive_int
from .novelty import NoveltyReport, nearest_neighbours, novelty
from .precision_recall import knn_radii

__all__ = [
    "TABLE_KINDS",
    "AlphaPrecisionBetaRecall",
    "column_shapes",
    "column_pair_trends",
    "quality_score",
    "alpha_precision_beta_recall",
    "c2st",
    "detection_score",
    "ml_efficiency",
    "distance_to_closest_record",
    "tabular_report",
]

#: The kinds a column may have.
TABLE_KINDS = ("numeric", "categorical")
#: Equal-width bins a numeric column is cut into when paired with a categorical one (SDMetrics' default).
TREND_BINS = 10

Table = Mapping[str, np.ndarray]
Kinds = Mapping[str, str]


# --------------------------------------------------------------------------------------------- checks


def _check_kinds(kinds: Kinds) -> dict[str, str]:
    if not isinstance(kinds, Mapping) or not kinds:
        raise ValueError(f"kinds must be a non-empty mapping of column name to kind, got {kinds!r}")
    for col, kind in kinds.items():
        if kind not in TABLE_KINDS:
            raise ValueError(f"kinds[{col!r}] must be one of {TABLE_KINDS}, got {kind!r}")
    return dict(kinds)


def _check_table(table: Table, kinds: Kinds, name: str, min_rows: int = 1) -> dict[str, np.ndarray]:
    """The columns of ``kinds`` from ``table`` as arrays, checked: 1-D, one length, no missing values."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{name} must be a mapping of column name to 1-D array, got {type(table).__name__}")
    missing = [c for c in kinds if c not in table]
    extra = [c for c in table if c not in kinds]
    if missing or extra:
        raise ValueError(
            f"{name} and kinds must name the same columns: {name} lacks {missing}, kinds lacks {extra}; "
            "drop those columns or give their kinds"
        )
    out, lengths = {}, set()
    for col, kind in kinds.items():
        x = np.asarray(table[col])
        if x.ndim != 1:
            raise ValueError(f"{name}[{col!r}] must be a 1-D array, got shape {x.shape}")
        if kind == "numeric":
            if x.dtype.kind not in "iuf":
                raise ValueError(
                    f"{name}[{col!r}] is numeric in kinds but holds dtype {x.dtype}; convert it to numbers "
                    "or mark it categorical"
                )
            x = x.astype(np.float64)
            if not np.isfinite(x).all():
                bad = int((~np.isfinite(x)).sum())
                raise ValueError(f"{name}[{col!r}] holds {bad} missing or non-finite values; impute or drop them")
        elif x.dtype.kind == "f" or (x.dtype == object and any(v is None or v != v for v in x)):
            raise ValueError(
                f"{name}[{col!r}] is categorical but holds floats or missing values; pass labels (str or int)"
            )
        out[col] = x
        lengths.add(x.shape[0])
    if len(lengths) > 1:
        raise ValueError(f"the columns of {name} must have one length, got lengths {sorted(lengths)}")
    n = lengths.pop()
    if n < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {n}")
    return out


def _tables(kinds: Kinds, min_rows: int = 1, **tables: Table) -> tuple[dict[str, str], list[dict[str, np.ndarray]]]:
    kinds = _check_kinds(kinds)
    return kinds, [_check_table(t, kinds, name, min_rows) for name, t in tables.items()]


def _codes(col: str, *arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Integer codes of the labels of ``arrays`` over their union, and the number of labels."""
    try:
        labels, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
    except TypeError as err:
        raise ValueError(f"column {col!r} mixes label types (e.g. str and int); give it one type") from err
    splits = np.cumsum([a.shape[0] for a in arrays])[:-1]
    return np.split(inverse.reshape(-1), splits), labels.shape[0]


def _tvd(a: np.ndarray, b: np.ndarray, size: int) -> float:
    r"""Total variation :math:`\tfrac12\sum_k |p_k - q_k|` of the frequencies of codes ``a`` and ``b``."""
    p = np.bincount(a, minlength=size) / a.shape[0]
    q = np.bincount(b, minlength=size) / b.shape[0]
    return 0.5 * float(np.abs(p - q).sum())


# ------------------------------------------------------------------------------------------- fidelity


def column_shapes(real: Table, synth: Table, kinds: Kinds) -> dict[str, float]:
    r"""Per-column shape similarity, SDMetrics' ``KSComplement`` and ``TVComplement``.

    A numeric column scores :math:`1 - \sup_x |F_r(x) - F_s(x)|` (one minus the two-sample
    Kolmogorov-Smirnov statistic of the empirical CDFs, :func:`scipy.stats.ks_2samp`); a categorical
    one :math:`1 - \tfrac12 \sum_k |p_k - q_k|` (one minus the total variation distance of the
    category frequencies, over the categories of either table). 1 is a perfect match, 0 disjoint.
    """
    kinds, (r, s) = _tables(kinds, real=real, synth=synth)
    out = {}
    for col, kind in kinds.items():
        if kind == "numeric":
            out[col] = 1.0 - float(ks_2samp(r[col], s[col]).statistic)
        else:
            (a, b), size = _codes(col, r[col], s[col])
            out[col] = 1.0 - _tvd(a, b, size)
    return out


def _discretise(x: np.ndarray) -> np.ndarray:
    """Bin index of each value on ``TREND_BINS`` equal-width bins of ``x``'s own range (``np.digitize``)."""
    return np.digitize(x, np.histogram_bin_edges(x, bins=TREND_BINS))


def _correlation_similarity(
    a_r: np.ndarray, b_r: np.ndarray, a_s: np.ndarray, b_s: np.ndarray, threshold: float
) -> float:
    if min(np.ptp(a_r), np.ptp(b_r), np.ptp(a_s), np.ptp(b_s)) == 0:
        return math.nan  # Pearson's rho is undefined on a constant column
    rho_r = float(np.corrcoef(a_r, b_r)[0, 1])
    if threshold > 0 and abs(rho_r) <= threshold:
        return math.nan
    rho_s = float(np.corrcoef(a_s, b_s)[0, 1])
    return 1.0 - abs(rho_r - rho_s) / 2


def _contingency_similarity(
    a: tuple[list[np.ndarray], int], b: tuple[list[np.ndarray], int], threshold: float
) -> float:
    (a_r, a_s), k_a = a
    (b_r, b_s), k_b = b
    if threshold > 0:
        counts = np.bincount(a_r * k_b + b_r, minlength=k_a * k_b).reshape(k_a, k_b)
        counts = counts[counts.sum(1) > 0][:, counts.sum(0) > 0]  # the labels seen in the real rows
        if min(counts.shape) < 2 or association(counts, method="cramer") <= threshold:
            return math.nan
    return 1.0 - _tvd(a_r * k_b + b_r, a_s * k_b + b_s, k_a * k_b)


def column_pair_trends(
    real: Table,
    synth: Table,
    kinds: Kinds,
    *,
    correlation_threshold: float = 0.0,
    association_threshold: float = 0.0,
) -> dict[tuple[str, str], float]:
    r"""Per-pair trend similarity, as SDMetrics' ``QualityReport`` (property ``Column Pair Trends``).

    Pairs ``(a, b)`` follow the order of ``kinds``. Two numeric columns score
    :math:`1 - |\rho_r - \rho_s| / 2` with :math:`\rho` Pearson's correlation in each table
    (``CorrelationSimilarity``; NaN when a column is constant in either table). A pair with a
    categorical column scores :math:`1 - \tfrac12\sum_{j,k} |p_{jk} - q_{jk}|`, one minus the total
    variation distance of the joint frequencies (``ContingencySimilarity``). A numeric column in
    such a pair is first cut into 10 equal-width bins with ``np.digitize`` (the maximum falls in an
    11th bin), the edges taken from each table's own range, exactly as the report does: the bins of
    two tables match only where their ranges do. Unlike the report, no rows are subsampled (it
    draws 50,000 at random from larger tables).

    Pairs weakly related in the real table score NaN when thresholds are given: numeric pairs with
    :math:`|\rho_r| \le` ``correlation_threshold``, the others with Cramér's :math:`V` of the real
    contingency table :math:`\le` ``association_threshold``. The defaults (0) score every pair, as
    the TabDDPM / TabSyn / TabDiff tables do; 0.5 and 0.3 are the defaults of SDMetrics 0.32's report.
    NaN pairs are left out of the means of :func:`quality_score`, as the report leaves them out.
    """
    correlation_threshold = check_number(correlation_threshold, "correlation_threshold", 0.0, 1.0)
    association_threshold = check_number(association_threshold, "association_threshold", 0.0, 1.0)
    kinds, (r, s) = _tables(kinds, real=real, synth=synth)
    codes: dict[str, tuple[list[np.ndarray], int]] = {}
    for col, kind in kinds.items():
        if kind == "numeric":
            codes[col] = _codes(col, _discretise(r[col]), _discretise(s[col]))
        else:
            codes[col] = _codes(col, r[col], s[col])
    out = {}
    for a, b in itertools.combinations(kinds, 2):
        if kinds[a] == kinds[b] == "numeric":
            out[(a, b)] = _correlation_similarity(r[a], r[b], s[a], s[b], correlation_threshold)
        else:
            out[(a, b)] = _contingency_similarity(codes[a], codes[b], association_threshold)
    return out


def _nanmean(values: Any) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def quality_score(real: Table, synth: Table, kinds: Kinds, **thresholds: float) -> dict[str, float]:
    r"""SDMetrics' quality score: ``column_shapes`` the mean of :func:`column_shapes`,
    ``column_pair_trends`` the mean of :func:`column_pair_trends` (NaN pairs left out; NaN when no
    pair is left), ``quality`` the mean of the two (of those that are not NaN). ``thresholds``
    (``correlation_threshold``, ``association_threshold``) go to :func:`column_pair_trends`."""
    shapes = _nanmean(column_shapes(real, synth, kinds).values())
    trends = _nanmean(column_pair_trends(real, synth, kinds, **thresholds).values())
    return {"column_shapes": shapes, "column_pair_trends": trends, "quality": _nanmean([shapes, trends])}


# ------------------------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class _Encoding:
    """Standardised numeric columns and one-hot categorical ones, fitted on real rows."""

    kinds: dict[str, str]
    mean: dict[str, float]
    scale: dict[str, float]
    categories: dict[str, np.ndarray]

    def __call__(self, table: dict[str, np.ndarray]) -> np.ndarray:
        parts = []
        for col, kind in self.kinds.items():
            x = table[col]
            if kind == "numeric":
                parts.append(((x - self.mean[col]) / self.scale[col])[:, None])
                continue
            cats = self.categories[col]
            try:
                at = np.minimum(np.searchsorted(cats, x), cats.shape[0] - 1)
            except TypeError as err:
                raise ValueError(f"column {col!r} mixes label types (e.g. str and int); give it one type") from err
            hit = cats[at] == x
            onehot = np.zeros((x.shape[0], cats.shape[0]))
            onehot[np.flatnonzero(hit), at[hit]] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1)


def _fit_encoding(real: dict[str, np.ndarray], kinds: dict[str, str]) -> _Encoding:
    mean, scale, categories = {}, {}, {}
    for col, kind in kinds.items():
        if kind == "numeric":
            std = float(real[col].std())
            mean[col], scale[col] = float(real[col].mean()), std if std > 0 else 1.0
        else:
            try:
                categories[col] = np.unique(real[col])
            except TypeError as err:
                raise ValueError(f"column {col!r} mixes label types (e.g. str and int); give it one type") from err
    return _Encoding(kinds, mean, scale, categories)


def _sklearn(what: str) -> None:
    if importlib.util.find_spec("sklearn") is None:
        raise ImportError(f'{what} needs scikit-learn: pip install "monge[tables]"')


# ---------------------------------------------------------------------------- alpha-precision / recall


@dataclass(frozen=True)
class AlphaPrecisionBetaRecall:
    r"""Result of :func:`alpha_precision_beta_recall`: the integrated scores and their curves on ``alphas``."""

    alpha_precision: float
    beta_recall: float
    alphas: np.ndarray
    precision_curve: np.ndarray
    recall_curve: np.ndarray


def alpha_precision_beta_recall(
    real: Table, synth: Table, kinds: Kinds, *, steps: int = 30
) -> AlphaPrecisionBetaRecall:
    r"""Integrated :math:`\alpha`-precision and :math:`\beta`-recall (Alaa et al. 2022, "How faithful is
    your synthetic data?"), the "naive" variant that TabSyn and TabDiff report (synthcity's
    ``AlphaPrecision``, ``*_naive``), on the encoded rows (module docstring; synthcity min-max scales
    instead of standardising) rather than a learned one-class embedding.

    With real rows :math:`x_i`, synthetic rows :math:`y_j`, the real centre :math:`c = \bar x` and
    :math:`\alpha` on the grid ``np.linspace(0, 1, steps)``:

    .. math:: P_\alpha = \tfrac1m \sum_j \mathbf 1\big[\|y_j - c\| \le Q_\alpha(\{\|x_i - c\|\})\big],

    the share of synthetic rows inside the ball holding a share :math:`\alpha` of the real rows;
    with :math:`y_{(i)}` the synthetic row nearest :math:`x_i`, :math:`d_i = \|y_{(i)} - \bar y\|` and
    :math:`r_i` the distance from :math:`x_i` to its nearest other real row,

    .. math:: R_\beta = \tfrac1n \sum_i \mathbf 1\big[\|x_i - y_{(i)}\| \le r_i\big]\,
              \mathbf 1\big[d_i \le Q_\beta(\{d_i\})\big].

    The scores are :math:`1 - \sum_k |\alpha_k - P_{\alpha_k}| / \sum_k \alpha_k` (and the same for
    :math:`R`), the grid form of :math:`1 - 2\int_0^1 |P_\alpha - \alpha|\,d\alpha`: 1 when the
    synthetic rows fill the real quantile balls as the real rows do, lower for rows off the support
    (precision) or parts of the support left empty (recall).
    """
    steps = check_positive_int(steps, "steps", 10_000)
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the alpha grid holds 0 and 1), got {steps}")
    kinds, (r, s) = _tables(kinds, 2, real=real, synth=synth)
    enc = _fit_encoding(r, kinds)
    x, y = enc(r), enc(s)
    alphas = np.linspace(0.0, 1.0, steps)
    centre = x.mean(0)
    radii = np.quantile(np.linalg.norm(x - centre, axis=1), alphas)
    precision = (np.linalg.norm(y - centre, axis=1)[None, :] <= radii[:, None]).mean(1)
    real_to_real = knn_radii(torch.from_numpy(x), k=1).numpy()
    real_to_synth, nearest = (t.numpy() for t in nearest_neighbours(torch.from_numpy(x), torch.from_numpy(y)))
    d = np.linalg.norm(y[nearest] - y.mean(0), axis=1)
    covered = real_to_synth <= real_to_real
    recall = (covered[None, :] & (d[None, :] <= np.quantile(d, alphas)[:, None])).mean(1)
    return AlphaPrecisionBetaRecall(
        alpha_precision=1.0 - float(np.abs(alphas - precision).sum() / alphas.sum()),
        beta_recall=1.0 - float(np.abs(alphas - recall).sum() / alphas.sum()),
        alphas=alphas,
        precision_curve=precision,
        recall_curve=recall,
    )


# ------------------------------------------------------------------------------------------ detection


def c2st(
    real_holdout: Table, synth: Table, kinds: Kinds, *, seed: int = 0, test_share: float = 0.3
) -> float:
    r"""Classifier two-sample test: held-out ROC AUC of a classifier telling real rows from synthetic ones.

    The larger set is subsampled (seeded) to the size :math:`n` of the smaller, the :math:`2n` encoded
    rows are split (stratified, seeded) into a training part and a ``test_share`` part, a
    scikit-learn ``HistGradientBoostingClassifier`` is fitted on the first and
    :math:`\mathrm{AUC} = P(f(x_\text{real}) > f(x_\text{synth}))` measured on the second. 0.5 is
    ideal (no classifier can tell the tables apart), 1 means every row gives itself away. Boosted
    trees rather than logistic regression: a linear classifier on these features only sees a shift
    of the mean along one direction, so a synthetic table with the right means and wrong spreads,
    modes or interactions passes it. Pass rows the generator did not train on as ``real_holdout``:
    training rows it memorised would read as real.
    """
    _sklearn("c2st")
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    test_share = check_number(test_share, "test_share", 0.0, 1.0, low_open=True, high_open=True)
    kinds, (r, s) = _tables(kinds, 5, real_holdout=real_holdout, synth=synth)
    enc = _fit_encoding(r, kinds)
    x_r, x_s = enc(r), enc(s)
    rng = np.random.default_rng(seed)
    n = min(x_r.shape[0], x_s.shape[0])
    x = np.concatenate([x_r[rng.permutation(x_r.shape[0])[:n]], x_s[rng.permutation(x_s.shape[0])[:n]]])
    label = np.repeat([1, 0], n)
    x_fit, x_test, y_fit, y_test = train_test_split(
        x, label, test_size=test_share, stratify=label, random_state=seed
    )
    if len(set(y_test.tolist())) < 2:
        raise ValueError(f"test_share={test_share} leaves too few rows to score; raise it or pass more rows")
    clf = HistGradientBoostingClassifier(random_state=seed).fit(x_fit, y_fit)
    return float(roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1]))


def detection_score(auc: float) -> float:
    r"""SDMetrics' detection score of a C2ST AUC: :math:`1 - (2\max(\mathrm{AUC}, 0.5) - 1)`.

    1 when the classifier does no better than chance, 0 when it separates the tables; an AUC below
    0.5 on held-out rows is chance too and scores 1 (TabSyn reports this as its C2ST).
    """
    auc = check_number(auc, "auc", 0.0, 1.0)
    return 1.0 - (2.0 * max(auc, 0.5) - 1.0)


# -------------------------------------------------------------------------------------------- utility


def _fit_predict(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, kind: str, seed: int) -> np.ndarray:
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if kind == "numeric":
        model: Any = HistGradientBoostingRegressor(random_state=seed)
    elif len(np.unique(y)) < 2:
        model = DummyClassifier(strategy="most_frequent")  # one class: nothing to learn but the class
    else:
        model = HistGradientBoostingClassifier(random_state=seed)
    return model.fit(x, y).predict(x_test)


def ml_efficiency(
    real_train: Table, synth: Table, real_test: Table, target: str, kinds: Kinds, *, seed: int = 0
) -> dict[str, float]:
    r"""Machine-learning efficiency (train on synthetic, test on real), beside train on real.

    The same scikit-learn model, a seeded ``HistGradientBoostingClassifier`` for a categorical
    ``target`` or ``HistGradientBoostingRegressor`` for a numeric one (default settings; the
    gradient-boosted-tree family TabDDPM and TabSyn use, CatBoost and XGBoost there), is fitted once
    on ``real_train`` and once on ``synth`` (the other columns encoded as in the module docstring,
    statistics from ``real_train``) and scored on ``real_test``: a categorical target gives
    ``accuracy_real``, ``accuracy_synth``, ``f1_real``, ``f1_synth`` (macro
    :math:`F_1 = \frac1K\sum_k \frac{2 P_k R_k}{P_k + R_k}`), a numeric one ``r2_real``, ``r2_synth``
    (:math:`R^2 = 1 - \sum (y - \hat y)^2 / \sum (y - \bar y)^2`). Synthetic rows of a single class
    fit a model that predicts that class.
    """
    _sklearn("ml_efficiency")
    from sklearn.metrics import accuracy_score, f1_score, r2_score

    kinds = _check_kinds(kinds)
    if target not in kinds:
        raise ValueError(f"target {target!r} is not a column of kinds ({list(kinds)}); name the label column")
    features = {c: k for c, k in kinds.items() if c != target}
    if not features:
        raise ValueError(f"the table holds no column but the target {target!r}; there is nothing to predict from")
    _, (tr, sy, te) = _tables(kinds, 2, real_train=real_train, synth=synth, real_test=real_test)
    enc = _fit_encoding(tr, features)
    kind, x_test, y_test = kinds[target], enc(te), te[target]
    pred = {name: _fit_predict(enc(t), t[target], x_test, kind, seed) for name, t in (("real", tr), ("synth", sy))}
    if kind == "numeric":
        return {f"r2_{name}": float(r2_score(y_test, p)) for name, p in pred.items()}
    out = {f"accuracy_{name}": float(accuracy_score(y_test, p)) for name, p in pred.items()}
    out.update({f"f1_{name}": float(f1_score(y_test, p, average="macro", zero_division=0)) for name, p in pred.items()})
    return out


# -------------------------------------------------------------------------------------------- privacy


def distance_to_closest_record(
    real_train: Table, synth: Table, holdout: Table, kinds: Kinds, *, quantile: float = 0.05
) -> NoveltyReport:
    r"""Distance to closest record: :func:`~monge.metrics.novelty.novelty` on the encoded rows.

    :math:`\mathrm{DCR}(y) = \min_{x \in T} \|e(y) - e(x)\|_2` with :math:`e` the encoding of the
    module docstring (statistics from ``real_train`` :math:`T`), for each synthetic row and each
    ``holdout`` row. The report's ``ratio`` is :math:`\operatorname{med}\mathrm{DCR}(S) /
    \operatorname{med}\mathrm{DCR}(H)` (about 1 for rows as new as fresh data, near 0 for copies),
    ``near_copy_share`` the share of synthetic rows at or below the ``quantile`` (5th percentile)
    of the held-out DCRs, beside ``heldout_near_copy_share`` (about ``quantile``); ``copies()``
    flags a synthetic table whose near-copy share exceeds the held-out one.
    """
    quantile = check_number(quantile, "quantile", 0.0, 0.5, low_open=True)
    kinds, (tr, sy, ho) = _tables(kinds, 2, real_train=real_train, synth=synth, holdout=holdout)
    enc = _fit_encoding(tr, kinds)
    rows = [torch.from_numpy(enc(t)) for t in (sy, tr, ho)]
    return novelty(*rows, quantile=quantile, space="standardised one-hot")


# --------------------------------------------------------------------------------------------- report


def tabular_report(
    real_train: Table,
    synth: Table,
    holdout: Table,
    kinds: Kinds,
    target: str | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """All the metrics of this module in one flat dict (keys in this order).

    * ``column_shapes``, ``column_pair_trends``, ``quality``: :func:`quality_score` of ``synth``
      against ``real_train``;
    * ``alpha_precision``, ``beta_recall``: :func:`alpha_precision_beta_recall` against ``real_train``;
    * ``c2st_auc`` (:func:`c2st` against ``holdout``) and ``detection`` (:func:`detection_score`);
    * ``dcr_ratio``, ``dcr_share``, ``dcr_heldout_share``, ``dcr_duplicates``:
      :func:`distance_to_closest_record` (ratio, near-copy shares, exact-duplicate share);
    * with a ``target``, :func:`ml_efficiency` trained on ``real_train`` / ``synth`` and tested on
      ``holdout``, each key prefixed ``mle_`` (``mle_accuracy_real``, ``mle_accuracy_synth``,
      ``mle_f1_real``, ``mle_f1_synth``, or ``mle_r2_real``, ``mle_r2_synth``).
    """
    out = dict(quality_score(real_train, synth, kinds))
    ab = alpha_precision_beta_recall(real_train, synth, kinds)
    out.update(alpha_precision=ab.alpha_precision, beta_recall=ab.beta_recall)
    auc = c2st(holdout, synth, kinds, seed=seed)
    out.update(c2st_auc=auc, detection=detection_score(auc))
    dcr = distance_to_closest_record(real_train, synth, holdout, kinds)
    out.update(dcr_ratio=dcr.ratio, dcr_share=dcr.near_copy_share,
               dcr_heldout_share=dcr.heldout_near_copy_share, dcr_duplicates=dcr.duplicate_share)
    if target is not None:
        mle = ml_efficiency(real_train, synth, holdout, target, kinds, seed=seed)
        out.update({f"mle_{k}": v for k, v in mle.items()})
    return out
