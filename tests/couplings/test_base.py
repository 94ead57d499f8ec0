import pytest
import torch

from monge.couplings import COUPLINGS, WCFM, Entropic, Immiscible, Independent, KNNImmiscible, SchrodingerBridge


def test_independent_truncates_to_common_batch():
    out = Independent()(torch.randn(10, 2), torch.randn(7, 2))
    assert out.x0.shape == out.x1.shape == (7, 2) and out.weights is None


def test_registry_lists_choices_on_unknown_name():
    with pytest.raises(ValueError, match="valid choices: .*exact_ot.*independent"):
        COUPLINGS.build("exact-ot")


@pytest.mark.parametrize(
    "coupling,match",
    [
        (lambda: Immiscible()(torch.randn(4, 2), torch.randn(5, 2)), "equal batch sizes"),
        (lambda: KNNImmiscible(0), "k must be a positive integer"),
        (lambda: WCFM(eps=-1.0), "eps must be a positive"),
        (lambda: WCFM(cost="l1"), "cost must be"),
        (lambda: Entropic(sampling="rows"), "sampling must be"),
        (lambda: SchrodingerBridge(sigma=0), "sigma must be a positive"),
        (lambda: COUPLINGS.build("wcfm", temperature=1.0), "accepted: eps, relative_eps, cost, marginal_correction"),
        (lambda: Entropic()(torch.randn(4, 2), torch.full((4, 2), float("inf"))), "x1 contains 8 NaN/Inf"),
    ],
)
def test_new_couplings_bad_input(coupling, match):
    with pytest.raises(ValueError, match=match):
        coupling()
