"""Optimal-transport solvers on torch tensors (no generative-model code here).

- :mod:`.exact`: exact plans (network simplex) and assignments (SciPy / network simplex / auction).
- :mod:`.auction`: certified torch auction for (batched) assignment problems, any device.
- :mod:`.sinkhorn`: batched log-domain Sinkhorn, epsilon scaling, unbalanced (KL) marginals.
- :mod:`.sliced`: sliced Wasserstein distance.
- :mod:`.semidiscrete`: semi-discrete OT map from a continuous source onto weighted points.

Solvers are pure: they take tensors and return results; none reads or writes a file.
"""

from .auction import AssignmentResult, auction
from .exact import ExactResult, assignment, emd, exact_ot, squared_euclidean_cost
from .semidiscrete import (
    MarginalReport,
    SemiDiscreteMap,
    SemiDiscreteResult,
    SemiDiscreteSolver,
    cell_mass_error,
    cell_search,
    fit_semidiscrete,
    fit_semidiscrete_sharded,
)
from .sinkhorn import SinkhornResult, sinkhorn, sinkhorn_unbalanced
from .sliced import random_directions, sliced_wasserstein

__all__ = [
    "ExactResult",
    "AssignmentResult",
    "auction",
    "assignment",
    "emd",
    "exact_ot",
    "squared_euclidean_cost",
    "SinkhornResult",
    "sinkhorn",
    "sinkhorn_unbalanced",
    "random_directions",
    "sliced_wasserstein",
    "MarginalReport",
    "SemiDiscreteMap",
    "SemiDiscreteResult",
    "SemiDiscreteSolver",
    "cell_mass_error",
    "cell_search",
    "fit_semidiscrete",
    "fit_semidiscrete_sharded",
]
