"""Long steps show progress on a terminal's stderr and nothing off a terminal.

tqdm redraws at most every 0.1 s and a bar of ``leave=False`` clears itself, so a fast loop leaves
its first frame (``desc: 0%| 0/N [...]``): the tests look for the bar's label and total.
"""

import io
import sys
from contextlib import contextmanager

import pytest
import torch

from monge.progress import item_status, progress_bar, progress_enabled, status

pytestmark = pytest.mark.usefixtures("one_thread")


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@contextmanager
def stderr_as(stream):
    """``sys.stderr`` replaced inside the test body (pytest's own capture resets it after fixtures)."""
    saved, sys.stderr = sys.stderr, stream
    try:
        yield stream
    finally:
        sys.stderr = saved


def test_enabled_follows_the_terminal_unless_forced():
    with stderr_as(TTY()):
        assert progress_enabled(None) and not progress_enabled(False)
    assert not progress_enabled(None, io.StringIO()) and progress_enabled(True, io.StringIO())


def test_bar_status_and_item_lines_on_a_terminal():
    with stderr_as(TTY()) as tty:
        with progress_bar(4, "work") as bar:
            bar.update(4)
        with status("fitting", estimate=3.0):
            pass
        item_status(1, 3, "model (a)", 0.0, prefix="demo")
        item_status(2, 3, "model (b)", 60.0, prefix="demo")
    text = tty.getvalue()
    assert "work:" in text and "/4 [" in text
    assert "fitting ... (about 3 s)" in text and "fitting: done in" in text
    assert "demo: model 1 of 3 (a)\n" in text and "demo: model 2 of 3 (b), about 2.0 min left at 60 s each" in text


def test_nothing_off_a_terminal():
    with stderr_as(io.StringIO()) as pipe:
        with progress_bar(4, "work") as bar:
            bar.update(4)
        with status("fitting"):
            pass
        item_status(2, 3, "model (b)", 60.0)
    assert pipe.getvalue() == ""


def _mlp():
    from monge.models import MLP

    return MLP(2, hidden=16, depth=2)


def test_reflow_pairs_and_distillation_show_bars():
    from monge.rectify import distill, generate_pairs

    with stderr_as(TTY()) as tty:
        z0, z1 = generate_pairs(_mlp(), torch.randn(64, 2), 64, sampler="euler", nfe=2, batch_size=16)
        distill(_mlp(), z0, z1, steps=5, batch_size=16)
    text = tty.getvalue()
    assert "reflow pairs (euler):" in text and "/64 [" in text
    assert "distilling to one step:" in text and "/5 [" in text


def test_optimized_grid_fit_shows_a_bar():
    from monge.samplers import optimized

    with stderr_as(TTY()) as tty:
        ts = optimized(lambda x, t: -x, None, 3, "euler", torch.randn(32, 2), reference_steps=8, refine_sweeps=1)
    assert ts.numel() == 4
    assert "fitting the euler grid, NFE 3:" in tty.getvalue()


def test_training_bar_on_a_terminal_only(tiny_config):
    from monge.train import Trainer

    with stderr_as(TTY()) as tty:
        Trainer(tiny_config(train__steps=3, train__progress=True)).fit()
    assert "tiny:" in tty.getvalue() and "/3 [" in tty.getvalue()
    with stderr_as(io.StringIO()) as pipe:
        Trainer(tiny_config(name="tiny2", train__steps=3, train__progress=True)).fit()
    assert "tiny2" not in pipe.getvalue()


def test_demo_says_which_model_it_trains(tmp_path):
    from monge.demo import run_demo

    with stderr_as(TTY()) as tty:
        run_demo(tmp_path, couplings=("independent", "exact_ot"), steps=2, batch_size=16, samples=32)
    text = tty.getvalue()
    assert "demo: model 1 of 2 (independent, 2 steps)" in text
    assert "demo: model 2 of 2 (exact_ot, 2 steps), about" in text


def test_semidiscrete_fit_bar_on_a_terminal_only():
    from monge.ot.semidiscrete import fit_semidiscrete

    y = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    with stderr_as(TTY()) as tty:
        fit_semidiscrete(y, max_iter=30, tol=1e-6, generator=torch.Generator().manual_seed(1))
    assert "semi-discrete fit" in tty.getvalue() and "/30" in tty.getvalue()
    with stderr_as(io.StringIO()) as pipe:
        fit_semidiscrete(y, max_iter=30, tol=1e-6, generator=torch.Generator().manual_seed(1))
    assert pipe.getvalue() == ""
