"""Evaluation metrics: Wasserstein distances, MMD, path straightness, a trained field's distance to
the exact field of its coupling on a finite data set, mode statistics, and image
metrics (classifier features and mode statistics, Fréchet distances, k-NN precision/recall), novelty
(nearest-neighbour memorisation tests against a training and a held-out split), the evaluation of
synthetic tables (SDMetrics' column shapes and pair trends, alpha-precision / beta-recall, C2ST,
ML efficiency, distance to closest record), and the
sampler-free parts of likelihood evaluation (divergences, dequantisation, bits per dimension; the
ODE solve is :func:`monge.flow_likelihood.log_likelihood`)."""

from .classifier import (
    ClassifierModeStats,
    FeatureClassifier,
    classifier_features,
    classifier_mode_stats,
    classifier_probs,
    load_or_train_classifier,
    mode_coverage,
    mode_mixture,
    train_classifier,
)
from .field import FieldError, exact_velocity, field_error
from .frechet import (
    classifier_frechet_distance,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    inception_fid,
    load_feature_network,
    network_features,
)
from .likelihood import (
    bits_per_dim,
    dequantize,
    draw_probes,
    exact_divergence,
    gaussian_log_prob,
    hutchinson_divergence,
    standard_normal_log_prob,
)
from .mmd import median_bandwidth, mmd_rbf
from .modes import ModeStats, mode_stats
from .novelty import (
    NoveltyReport,
    TrainHeldoutFrechet,
    data_copying_statistic,
    frechet_train_heldout,
    mann_whitney_z,
    nearest_neighbours,
    novelty,
    novelty_reports,
    novelty_table,
)
from .precision_recall import PrecisionRecall, knn_radii, manifold_membership, precision_recall
from .straightness import straightness
from .tabular import (
    TABLE_KINDS,
    AlphaPrecisionBetaRecall,
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
from .wasserstein import sliced_wasserstein, wasserstein2

__all__ = [
    "wasserstein2",
    "sliced_wasserstein",
    "mmd_rbf",
    "median_bandwidth",
    "straightness",
    "FieldError",
    "exact_velocity",
    "field_error",
    "ModeStats",
    "mode_stats",
    "FeatureClassifier",
    "train_classifier",
    "load_or_train_classifier",
    "classifier_features",
    "classifier_probs",
    "mode_mixture",
    "mode_coverage",
    "ClassifierModeStats",
    "classifier_mode_stats",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "classifier_frechet_distance",
    "load_feature_network",
    "network_features",
    "inception_fid",
    "PrecisionRecall",
    "precision_recall",
    "knn_radii",
    "manifold_membership",
    "NoveltyReport",
    "TrainHeldoutFrechet",
    "nearest_neighbours",
    "mann_whitney_z",
    "data_copying_statistic",
    "novelty",
    "novelty_reports",
    "frechet_train_heldout",
    "novelty_table",
    "bits_per_dim",
    "dequantize",
    "draw_probes",
    "exact_divergence",
    "hutchinson_divergence",
    "gaussian_log_prob",
    "standard_normal_log_prob",
    "TABLE_KINDS",
    "column_shapes",
    "column_pair_trends",
    "quality_score",
    "AlphaPrecisionBetaRecall",
    "alpha_precision_beta_recall",
    "c2st",
    "detection_score",
    "ml_efficiency",
    "distance_to_closest_record",
    "tabular_report",
]
