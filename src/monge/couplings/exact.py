"""Minibatch exact OT (OT-CFM)."""

from __future__ import annotations

from torch import Tensor

from ..ot.exact import assignment, squared_euclidean_cost
from .base import COUPLINGS, AssignmentCoupling, check_equal_batches


@COUPLINGS.register("exact_ot")
class ExactOT(AssignmentCoupling):
    r"""Minibatch exact OT (OT-CFM, Tong et al. 2023; Pooladian et al. 2023).

    Pairs ``x0[perm[j]]`` with ``x1[j]`` where ``perm`` solves the assignment problem

    .. math:: \min_{\sigma} \sum_i \|x_0^{\sigma(i)} - x_1^{i}\|^2 .

    Every sample is used exactly once (a permutation, not pairs re-drawn from the plan with
    replacement). Equal batch sizes are required.
    """

    def solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        """``perm`` (``(B,)`` int64): data point ``j`` is paired with noise ``perm[j]``."""
        check_equal_batches(x0, x1, "exact_ot")
        return assignment(squared_euclidean_cost(x1, x0))  # rows: data, cols: noise
