"""Minibatch exact OT (OT-CFM)."""

from __future__ import annotations

from torch import Tensor

from ..ot.exact import squared_euclidean_cost
from .base import COUPLINGS, AssignmentCoupling


@COUPLINGS.register("exact_ot")
class ExactOT(AssignmentCoupling):
    r"""Minibatch exact OT (OT-CFM, Tong et al. 2023; Pooladian et al. 2023).

    Pairs ``x0[perm[j]]`` with ``x1[j]`` where ``perm`` solves the assignment problem

    .. math:: \min_{\sigma} \sum_i \|x_0^{\sigma(i)} - x_1^{i}\|^2 .

    Every sample is used exactly once (a permutation, not pairs re-drawn from the plan with
    replacement). Equal batch sizes are required. ``solver``, ``scope`` (``"global"``: OT over
    the batch of all ranks under torchrun) and ``tol``: see :class:`AssignmentCoupling`.
    """

    label = "exact_ot"

    def cost(self, x0: Tensor, x1: Tensor) -> Tensor:
        """Squared distances, rows: data, columns: noise."""
        return squared_euclidean_cost(x1, x0)
