import pytest

from monge.quick import MAX_PAIRS, QUICK_ENV, STEP_DIVISOR, quick_cap, quick_mode, quick_steps


def test_off_by_default(monkeypatch):
    monkeypatch.delenv(QUICK_ENV, raising=False)
    assert not quick_mode()
    assert quick_steps(3000) == 3000 and quick_cap(10_000, MAX_PAIRS) == 10_000
    monkeypatch.setenv(QUICK_ENV, "0")
    assert not quick_mode()


def test_quick_cuts_steps_and_caps(monkeypatch):
    monkeypatch.setenv(QUICK_ENV, "1")
    assert quick_mode()
    assert quick_steps(3000) == 3000 // STEP_DIVISOR
    assert quick_steps(1500) * 2 == quick_steps(3000)  # a half run then --resume meet at the same step
    assert quick_steps(1) == 1
    assert quick_cap(10_000, MAX_PAIRS) == MAX_PAIRS and quick_cap(3, MAX_PAIRS) == 3


def test_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(QUICK_ENV, "yes")
    with pytest.raises(ValueError, match="MONGE_QUICK must be 1"):
        quick_mode()
