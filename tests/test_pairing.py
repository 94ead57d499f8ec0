import threading
import time

import pytest
import torch

from monge.config import ConfigError
from monge.couplings import COUPLINGS, SolverCoupling
from monge.pairing import PairingPipeline
from monge.train import Trainer


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _drawer(g, n=32):
    def draw():
        return torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g) + 3, torch.rand(n, generator=g)

    return draw


@pytest.mark.parametrize("name", ["exact_ot", "immiscible", "entropic", "schrodinger_bridge"])
def test_pipeline_gives_the_pairs_of_the_serial_coupling(name):
    coupling = COUPLINGS.build(name)
    assert isinstance(coupling, SolverCoupling)
    g_serial, g_pipe = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    pg_serial, pg_pipe = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    draw_serial = _drawer(g_serial)
    with PairingPipeline(_drawer(g_pipe), coupling.solve, g_pipe, workers=3) as pipe:
        for _ in range(7):
            x0, x1, t = draw_serial()
            expected = coupling(x0, x1, generator=pg_serial)
            (y0, y1, s), solution = pipe.next()
            got = coupling.pair_solved(y0, y1, solution, pg_pipe)
            assert torch.equal(t, s)
            assert torch.equal(expected.x0, got.x0) and torch.equal(expected.x1, got.x1)


def test_solves_run_ahead_in_worker_threads():
    g = torch.Generator().manual_seed(0)
    threads, started = set(), threading.Event()

    def solve(x0, x1):
        threads.add(threading.current_thread().name)
        started.set()
        return x0.shape[0]

    with PairingPipeline(_drawer(g), solve, g, workers=2, depth=4) as pipe:
        _, n = pipe.next()
        assert n == 32
        assert started.wait(5)
        assert len(pipe._queue) == 4  # drawn ahead, solving while the caller trains
    assert threads and all(name.startswith("monge-pairing") for name in threads)


def test_resume_state_is_before_the_first_unused_batch_and_close_rewinds():
    g = torch.Generator().manual_seed(0)
    reference = torch.Generator().manual_seed(0)
    ref_draw = _drawer(reference)
    pipe = PairingPipeline(_drawer(g), lambda a, b: None, g, workers=2)
    pipe.next()
    pipe.next()
    ref_draw(), ref_draw()
    assert torch.equal(pipe.resume_state(), reference.get_state())
    assert not torch.equal(g.get_state(), reference.get_state())  # batches drawn ahead
    pipe.close()
    assert torch.equal(g.get_state(), reference.get_state())
    with pytest.raises(RuntimeError, match="closed"):
        pipe.next()


def test_remaining_bounds_the_batches_drawn_ahead():
    g = torch.Generator().manual_seed(0)
    draws = []
    draw = _drawer(g)

    def counted():
        draws.append(1)
        return draw()

    with PairingPipeline(counted, lambda a, b: None, g, workers=4) as pipe:
        pipe.next(remaining=3)
        pipe.next(remaining=2)
        pipe.next(remaining=1)
    assert len(draws) == 3


def test_solver_errors_reach_the_caller():
    g = torch.Generator().manual_seed(0)

    def solve(x0, x1):
        raise ValueError("bad batch")

    with PairingPipeline(_drawer(g), solve, g, workers=1) as pipe, pytest.raises(ValueError, match="bad batch"):
        pipe.next()


def test_workers_hide_a_slow_solve():
    """Four 50 ms solves overlap: 8 batches take well under 8 x 50 ms (sleep releases the GIL)."""
    g = torch.Generator().manual_seed(0)

    def solve(x0, x1):
        time.sleep(0.05)

    with PairingPipeline(_drawer(g), solve, g, workers=4) as pipe:
        start = time.perf_counter()
        for _ in range(8):
            pipe.next()
        elapsed = time.perf_counter() - start
    assert elapsed < 0.25


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_worker_counts(bad):
    g = torch.Generator()
    with pytest.raises(ValueError, match="workers"):
        PairingPipeline(_drawer(g), lambda a, b: None, g, workers=bad)


# ------------------------------------------------------------------------------------ trainer
@pytest.mark.parametrize("coupling", ["exact_ot", "immiscible"])
def test_training_with_pairing_workers_is_the_same_run(tiny_config, coupling):
    serial = Trainer(tiny_config(name="serial", coupling=coupling, train__checkpoint_every=0))
    serial.fit()
    piped = Trainer(tiny_config(name="piped", coupling=coupling, train__checkpoint_every=0,
                                train__pairing_workers=2))
    piped.fit()
    assert piped.batches.pipeline is None  # stopped at the end of fit
    assert torch.equal(_params(serial.model), _params(piped.model))
    assert torch.equal(serial.generator.get_state(), piped.generator.get_state())


def test_resume_with_pairing_workers_is_exact(tiny_config):
    full = Trainer(tiny_config(name="full", train__checkpoint_every=0))
    full.fit()
    half = Trainer(tiny_config(name="half", train__steps=20, train__pairing_workers=3))
    half.fit()
    resumed = Trainer(tiny_config(name="half", train__steps=40, train__pairing_workers=3))
    resumed.fit(resume=True)
    assert torch.equal(_params(full.model), _params(resumed.model))


def test_checkpoint_mid_run_holds_the_state_before_the_next_unused_batch(tiny_config):
    """A checkpoint written while batches are drawn ahead (step 20 of 40) resumes exactly."""
    full = Trainer(tiny_config(name="full", train__checkpoint_every=0))
    full.fit()
    piped = Trainer(tiny_config(name="mid", train__checkpoint_every=20, train__pairing_workers=2))
    saved = []
    real_save = piped.save

    def save(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if piped.step == 20:
            saved.append(path.read_bytes())
        return path

    piped.save = save
    piped.fit()
    assert saved
    piped.checkpoint_path.write_bytes(saved[0])
    resumed = Trainer(tiny_config(name="mid", train__pairing_workers=2))
    resumed.fit(resume=True)
    assert torch.equal(_params(full.model), _params(resumed.model))


def test_pairing_workers_need_a_solver_coupling(tiny_config):
    with pytest.raises(ConfigError, match="pairing_workers.*exact_ot, immiscible.*knn_immiscible.*without"):
        tiny_config(coupling={"name": "knn_immiscible"}, train__pairing_workers=2)
    with pytest.raises(ConfigError, match="'entropic': its Sinkhorn"):
        tiny_config(coupling={"name": "entropic"}, train__pairing_workers=2)
    for bad in (-1, 1.5, "2", 1000):
        with pytest.raises(ConfigError, match="pairing_workers"):
            tiny_config(train__pairing_workers=bad)


def test_interrupt_with_pairing_workers_saves_a_resumable_checkpoint(tiny_config):
    """Ctrl-C at step 13 while batches are drawn ahead: the checkpoint resumes to the full run."""
    full = Trainer(tiny_config(name="full", train__checkpoint_every=0))
    full.fit()
    cut = Trainer(tiny_config(name="cut", train__checkpoint_every=0, train__pairing_workers=2))
    real_step = cut.train_step

    def step():
        loss = real_step()
        if cut.step == 13:
            raise KeyboardInterrupt
        return loss

    cut.train_step = step
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    assert cut.batches.pipeline is None
    assert not [t for t in threading.enumerate() if t.name.startswith("monge-pairing")]
    resumed = Trainer(tiny_config(name="cut", train__pairing_workers=2))
    resumed.fit(resume=True)
    assert torch.equal(_params(full.model), _params(resumed.model))
