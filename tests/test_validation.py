import math

import pytest
import torch

from monge._validation import check_batches, check_number, check_positive


def test_check_number_intervals_and_types():
    assert check_number(0.5, "p", 0, 1) == 0.5 and isinstance(check_number(1, "p", 0, 1), float)
    assert check_number(3, "k", 1, 4, integer=True) == 3
    assert check_number(math.inf, "g", 0.0) == math.inf  # no upper bound given
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\], got 0"):
        check_number(0, "p", 0, 1, low_open=True)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1.0"):
        check_number(1.0, "p", 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\], got 'x'"):
        check_number("x", "p", 0, 1)
    for bad in (True, float("nan"), None):
        with pytest.raises(ValueError, match="p must be a number in"):
            check_number(bad, "p", 0, 1)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 4\], got 2.0"):
        check_number(2.0, "k", 1, 4, integer=True)


def test_check_positive():
    assert check_positive(2, "eps") == 2.0 and check_positive(None, "eps", allow_none=True) is None
    assert check_positive(math.inf, "eps", allow_inf=True) == math.inf
    for bad in (0, -1.0, math.inf, math.nan, True, "1", None):
        with pytest.raises(ValueError, match="eps must be a positive finite number"):
            check_positive(bad, "eps")


def test_check_batches():
    check_batches(torch.zeros(3, 2), torch.zeros(5, 2), "a", "b")  # sizes may differ
    with pytest.raises(ValueError, match=r"a and b must have the same sample shape, got \(2,\) and \(3,\)"):
        check_batches(torch.zeros(3, 2), torch.zeros(3, 3), "a", "b")
    with pytest.raises(ValueError, match="b contains 1 NaN/Inf"):
        check_batches(torch.zeros(3, 2), torch.tensor([[0.0, float("nan")]]), "a", "b")
