"""A process killed (SIGKILL) in the middle of a checkpoint write leaves the last good one."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from monge.config import Config
from monge.run.checkpoint import CheckpointError, load_checkpoint
from monge.train import Trainer

SAVER = textwrap.dedent(
    """
    import sys
    from monge.config import Config
    from monge.train import Trainer
    import yaml
    cfg = Config.from_dict(yaml.safe_load(open(sys.argv[1])))
    trainer = Trainer(cfg)
    trainer.fit(overwrite="replace")  # writes a first complete checkpoint (each round starts again)
    print("ready", flush=True)
    while True:  # keep overwriting it with large checkpoints until killed
        trainer.train_step()
        trainer.save()
    """
)


def _default_sigint_in_child() -> None:
    """In a child before it runs: Ctrl-C's default action, whatever the suite inherited (a shell
    starts background jobs and `nohup` commands with SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _sigint_handled():
    """These tests see Python's Ctrl-C handler in the suite's process, however it was started."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before is not None:
        signal.signal(signal.SIGINT, before)


@pytest.fixture
def spawn():
    """``spawn(args, **popen) -> Popen`` with Ctrl-C's default action in the child; every process it
    started is killed at the end of the test, whatever the outcome."""
    procs: list[subprocess.Popen] = []

    def start(args, **kwargs):
        proc = subprocess.Popen(args, preexec_fn=_default_sigint_in_child, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        try:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass


def _config(tmp_path) -> Config:
    return Config.from_dict({
        "name": "crash",
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": "gaussian", "target": "8gaussians"},
        "model": {"name": "mlp", "hidden": 1024, "depth": 4},  # ~3M params: saves take a while
        "train": {"steps": 2, "batch_size": 16, "checkpoint_every": 0, "eval_samples": 20,
                  "progress": False},
        "sample": {"nfe": [1], "adaptive": False},
    })


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_save_keeps_a_loadable_checkpoint_and_resume_works(tmp_path, spawn):
    cfg = _config(tmp_path)
    recipe = tmp_path / "crash.yaml"
    recipe.write_text(cfg.to_yaml())
    run_dir = cfg.run_dir
    killed_mid_write = 0
    for _ in range(3):
        proc = spawn([sys.executable, "-c", SAVER, str(recipe)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # wait until a temporary file is being written
                if list(run_dir.glob(".checkpoint.safetensors.*.tmp")):
                    break
                time.sleep(0.001)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed_mid_write += bool(list(run_dir.glob(".checkpoint.safetensors.*.tmp")))
        tensors, config, state = load_checkpoint(run_dir / "checkpoint.safetensors")
        assert state["step"] >= 2 and config["name"] == "crash"
    assert killed_mid_write >= 1, "the kill never landed inside a write; the test proved nothing"

    cfg.train.steps = state["step"] + 3
    trainer = Trainer(cfg)
    result = trainer.fit(resume=True)
    assert result.step == state["step"] + 3
    assert not list(run_dir.glob(".checkpoint.safetensors.*.tmp")), "stale temporary files are cleaned"
    assert torch.isfinite(torch.tensor(result.loss))


def _train_until(spawn, cfg, recipe, rows: int, timeout: float = 120) -> subprocess.Popen:
    """Start `monge train` on ``cfg`` (written to ``recipe``) and return once its log holds more
    than ``rows`` lines (or ``timeout`` seconds passed)."""
    recipe.write_text(cfg.to_yaml())
    log = cfg.run_dir / "log.csv"
    proc = spawn([sys.executable, "-m", "monge", "train", str(recipe), "--no-progress"],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (log.is_file() and len(log.read_text().splitlines()) > rows):
        time.sleep(0.05)
    return proc


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path, spawn):
    """Ctrl-C in the middle of `monge train`: exit code 130, a checkpoint at the step reached,
    and `--resume` carries on from it."""
    cfg = _config(tmp_path)
    cfg.model.params = {"hidden": 32, "depth": 2}
    cfg.train.steps = 10**6
    cfg.train.log_every = 1
    log = cfg.run_dir / "log.csv"
    proc = _train_until(spawn, cfg, tmp_path / "sigint.yaml", rows=20)
    try:
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume continues" in err and "Traceback" not in err
    _, _, state = load_checkpoint(cfg.run_dir / "checkpoint.safetensors")
    logged = len(log.read_text().splitlines()) - 1
    assert state["step"] >= 20 and state["step"] >= logged  # nothing logged is lost

    cfg.train.steps = state["step"] + 2
    result = Trainer(cfg).fit(resume=True)
    assert result.step == state["step"] + 2


# -- Ctrl-C anywhere in a step: interrupt + resume is bit-identical to an uninterrupted run ------

import os  # noqa: E402
import socket  # noqa: E402

from monge.run.rundir import LOCK_NAME, RunExistsError, RunLockedError  # noqa: E402

_STEPS = 8


def params_of(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _fast(tiny_config, name, **kw):
    settings = dict(name=name, train__steps=_STEPS, train__batch_size=32, train__checkpoint_every=3,
                    train__eval_samples=50, sample={"sampler": "euler", "nfe": [1], "adaptive": False})
    return tiny_config(**{**settings, **kw})


def _arm(trainer, phase, at_step, action):
    """Call ``action()`` once, inside ``phase`` of step ``at_step`` (1-based) of ``trainer``."""
    fired = {"done": False}

    def maybe():
        if not fired["done"] and trainer.step == at_step - 1:
            fired["done"] = True
            action()

    if phase == "draw":  # data drawn (with workers: ahead, on the main thread)
        original = trainer.source.sample

        def sample(*a, **k):
            maybe()
            return original(*a, **k)
        trainer.source.sample = sample
    elif phase == "coupling":
        original_pair = trainer.coupling.pair_solved if trainer.config.train.pairing_workers else trainer.coupling

        def pair(*a, **k):
            maybe()
            return original_pair(*a, **k)
        if trainer.config.train.pairing_workers:
            trainer.coupling.pair_solved = pair
        else:
            trainer.coupling = type("Wrapped", (), {"__call__": staticmethod(pair),
                                                    "__getattr__": lambda s, n: getattr(original_pair, n)})()
    elif phase == "forward":
        trainer.model.register_forward_hook(lambda *a: maybe())
    elif phase == "backward":
        next(trainer.model.parameters()).register_hook(lambda g: (maybe(), g)[1])
    elif phase == "optimizer":  # inside the update: model and optimiser partly written
        trainer.optimizer.register_step_pre_hook(lambda *a: maybe())
    elif phase == "ema":
        original_ema = trainer.ema.update

        def update(model):
            maybe()
            return original_ema(model)
        trainer.ema.update = update
    elif phase == "save":  # between steps, while a checkpoint is written
        original_save = trainer.save

        def save(*a, **k):
            if not fired["done"] and trainer.step == at_step:
                fired["done"] = True
                action()
            return original_save(*a, **k)
        trainer.save = save
    else:
        raise AssertionError(phase)
    return fired


def _sigint():
    os.kill(os.getpid(), signal.SIGINT)


def _twice():
    _sigint()
    _sigint()  # the second Ctrl-C stops at once


def _raise():
    raise KeyboardInterrupt  # no handler (another thread, a custom handler): raised mid-step


@pytest.fixture(scope="module")
def _reference(tmp_path_factory):
    from monge.config import Config

    out = {}
    for workers in (0, 2):
        cfg = Config.from_dict({
            "name": f"full{workers}", "output_dir": str(tmp_path_factory.mktemp("ref")),
            "data": {"source": "gaussian", "target": "8gaussians"}, "coupling": "exact_ot",
            "model": {"name": "mlp", "hidden": 32, "depth": 2},
            "train": {"steps": _STEPS, "batch_size": 32, "lr": 3e-3, "checkpoint_every": 3, "eval_samples": 50,
                      "progress": False, "log_every": 10, "pairing_workers": workers},
            "sample": {"sampler": "euler", "nfe": [1], "adaptive": False}})
        full = Trainer(cfg)
        full.fit()
        out[workers] = (params_of(full.model), params_of(full.ema.model))
    return out


CASES = [  # (phase, step, how, pairing workers)
    *[(phase, step, "sigint", 0) for phase in ("draw", "coupling", "forward", "backward", "optimizer", "ema")
      for step in (1, 4)],
    ("save", 3, "sigint", 0), ("draw", 5, "twice", 0), ("forward", 2, "twice", 0),
    ("draw", 2, "raise", 0), ("backward", 5, "raise", 0), ("optimizer", 5, "raise", 0), ("ema", 8, "raise", 0),
    *[(phase, step, "sigint", 2) for phase in ("draw", "coupling", "optimizer") for step in (2, 4)],
    ("coupling", 8, "sigint", 2),
    ("coupling", 5, "raise", 2), ("draw", 3, "twice", 2), ("draw", 4, "raise", 2),
]


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
@pytest.mark.parametrize("phase,step,how,workers", CASES, ids=[f"{p}-{s}-{h}-w{w}" for p, s, h, w in CASES])
def test_interrupt_anywhere_then_resume_is_bit_identical(tiny_config, _reference, phase, step, how, workers):
    """Ctrl-C at a step boundary, mid-step (data, coupling, forward, backward, optimiser, EMA) or
    during a save; a double Ctrl-C; a KeyboardInterrupt raised without the handler: in every case
    the saved (or kept) checkpoint resumes to exactly the weights of the uninterrupted run."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    cut = Trainer(_fast(tiny_config, "cut", train__pairing_workers=workers))
    action = {"sigint": _sigint, "twice": _twice, "raise": _raise}[how]
    fired = _arm(cut, phase, step, action)
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    assert fired["done"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert not (cut.run_dir / LOCK_NAME).exists()  # lock released
    if how == "sigint":  # a single Ctrl-C finishes the step, then saves
        _, _, state = load_checkpoint(cut.checkpoint_path)
        assert state["step"] == step
    resumed = Trainer(_fast(tiny_config, "cut", train__pairing_workers=workers))
    resumed.fit(resume=True)
    model, ema = _reference[workers]
    assert torch.equal(params_of(resumed.model), model)
    assert torch.equal(params_of(resumed.ema.model), ema)


# -- no silent overwrite, one writer at a time ------------------------------------------------


def test_existing_run_is_refused_without_resume_or_overwrite(tiny_config, capsys):
    cfg = _fast(tiny_config, "kept")
    Trainer(cfg).fit()
    before = cfg.run_dir.joinpath("checkpoint.safetensors").read_bytes()
    log = cfg.run_dir.joinpath("log.csv").read_text()
    with pytest.raises(RunExistsError, match="already holds a run.*--resume.*--overwrite"):
        Trainer(_fast(tiny_config, "kept", train__steps=3)).fit()
    assert cfg.run_dir.joinpath("checkpoint.safetensors").read_bytes() == before
    assert cfg.run_dir.joinpath("log.csv").read_text() == log

    capsys.readouterr()
    result = Trainer(_fast(tiny_config, "kept", train__steps=3)).fit(overwrite=True)
    assert result.step == 3
    backups = list(cfg.run_dir.parent.glob("kept.bak-*"))
    assert len(backups) == 1 and backups[0].joinpath("checkpoint.safetensors").read_bytes() == before
    assert backups[0].joinpath("log.csv").read_text() == log
    assert f"moved to {backups[0]}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="exclude each other"):
        Trainer(cfg).fit(resume=True, overwrite=True)


def test_overwrite_replace_names_what_it_removes(tiny_config, capsys):
    cfg = _fast(tiny_config, "demo-like", train__steps=2)
    Trainer(cfg).fit()
    (cfg.run_dir / "notes.txt").write_text("mine")
    Trainer(cfg).fit(overwrite="replace")
    err = capsys.readouterr().err
    assert "removed checkpoint.safetensors, log.csv" in err
    assert (cfg.run_dir / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_a_second_writer_is_refused_naming_the_holder(tiny_config):
    cfg = _fast(tiny_config, "locked", train__steps=2)
    cfg.run_dir.mkdir(parents=True)
    holder = os.getppid()  # a live process on this host
    (cfg.run_dir / LOCK_NAME).write_text(json_dumps({"pid": holder, "host": socket.gethostname(),
                                                     "started": "now"}))
    with pytest.raises(RunLockedError, match=f"process {holder} on this host"):
        Trainer(cfg).fit()
    assert not (cfg.run_dir / "checkpoint.safetensors").exists()
    (cfg.run_dir / LOCK_NAME).write_text(json_dumps({"pid": 4242, "host": "elsewhere", "started": "now"}))
    with pytest.raises(RunLockedError, match="process 4242 on host elsewhere.*delete"):
        Trainer(cfg).fit()


def test_a_stale_lock_is_taken_over_with_a_notice(tiny_config, capsys, spawn):
    cfg = _fast(tiny_config, "stale", train__steps=2)
    cfg.run_dir.mkdir(parents=True)
    dead = spawn([sys.executable, "-c", "pass"])
    dead.wait()
    (cfg.run_dir / LOCK_NAME).write_text(json_dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert Trainer(cfg).fit().step == 2
    assert f"stale lock of process {dead.pid}" in capsys.readouterr().err
    assert not (cfg.run_dir / LOCK_NAME).exists()


def test_two_cli_writers_on_one_run(tmp_path, tiny_config, spawn):
    """Two `monge train` processes on one run: the second is refused and names the first's PID."""
    cfg = _fast(tiny_config, "twice", train__steps=10**6, train__log_every=1)
    recipe = tmp_path / "twice.yaml"
    first = _train_until(spawn, cfg, recipe, rows=3)
    try:
        second = subprocess.run([sys.executable, "-m", "monge", "train", str(recipe), "--resume",
                                 "--no-progress"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"being written by process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130


def json_dumps(obj):
    import json

    return json.dumps(obj)


# -- interrupts outside a step: one line of what was saved and how to continue -------------------------

def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _one_line(res):
    assert res.exit_code == 130, res.output
    lines = res.output.strip().splitlines()
    assert "Traceback" not in res.output
    return lines[-1]


def test_interrupts_during_a_map_fit_sampling_and_eval_say_what_was_saved(tmp_path, recipe, monkeypatch):
    from typer.testing import CliRunner

    import monge.couplings.maps as maps
    import monge.evaluate as evaluate
    import monge.generate as generate
    from monge.cli import app

    runner = CliRunner()
    with monkeypatch.context() as m:
        m.setattr(maps, "run_map", _interrupt)
        line = _one_line(runner.invoke(app, ["fit-ot", str(recipe), "--no-progress"]))
    assert line.startswith("interrupted while fitting the map; its state is saved in")
    assert "semidiscrete_fit.safetensors every 100 steps: the same command resumes the fit" in line

    assert runner.invoke(app, ["train", str(recipe), "--no-progress"]).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    np_out = tmp_path / "s.npy"
    with monkeypatch.context() as m:
        m.setattr(generate, "generate", _interrupt)
        line = _one_line(runner.invoke(app, ["sample", str(run), "-o", str(np_out)]))
    assert line.startswith("interrupted; nothing was written") and not np_out.exists()
    with monkeypatch.context() as m:
        m.setattr(evaluate, "evaluate_field", _interrupt)
        line = _one_line(runner.invoke(app, ["eval", str(run), "-n", "20", "--nfe", "1", "--no-adaptive"]))
    assert line.startswith("interrupted; nothing was written")


def test_an_interrupt_during_the_final_evaluation_keeps_the_checkpoint_and_resume_evaluates(tmp_path, recipe,
                                                                                             monkeypatch):
    from typer.testing import CliRunner

    from monge.cli import app

    runner = CliRunner()
    with monkeypatch.context() as m:
        m.setattr(Trainer, "evaluate", _interrupt)
        line = _one_line(runner.invoke(app, ["train", str(recipe), "--no-progress"]))
    run = tmp_path / "runs" / "tiny"
    assert line.startswith("interrupted during the final evaluation; the checkpoint at step 30 is saved")
    assert line.endswith("the same command with --resume evaluates it") and not (run / "eval.md").exists()
    res = runner.invoke(app, ["train", str(recipe), "--resume", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (run / "eval.md").is_file() and load_checkpoint(run / "checkpoint.safetensors")[2]["step"] == 30


def test_an_interrupt_while_fitting_the_coupling_before_training_says_the_fit_resumes(tiny_config, monkeypatch):
    cfg = _fast(tiny_config, "fitting", coupling={"name": "semidiscrete_ot", "n_targets": 16, "max_iter": 20})
    monkeypatch.setattr(Trainer, "prepare", _interrupt)
    with pytest.raises(KeyboardInterrupt, match="while fitting the coupling before training.*same command resumes"):
        Trainer(cfg).fit()
    assert not (cfg.run_dir / LOCK_NAME).exists()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_before_its_first_checkpoint_starts_again_with_the_same_command(tmp_path, tiny_config, spawn,
                                                                                      capsys):
    cfg = _fast(tiny_config, "early", train__steps=10**6, train__log_every=1, train__checkpoint_every=0)
    recipe = tmp_path / "early.yaml"
    proc = _train_until(spawn, cfg, recipe, rows=3)
    proc.kill()
    proc.wait(timeout=30)
    assert (cfg.run_dir / "log.csv").is_file() and not (cfg.run_dir / "checkpoint.safetensors").exists()
    assert (cfg.run_dir / LOCK_NAME).is_file()  # left by the killed process
    with pytest.raises(CheckpointError, match="no checkpoint yet.*without --resume"):
        Trainer(cfg).fit(resume=True)
    cfg.train.steps = 4
    assert Trainer(cfg).fit().step == 4  # no --overwrite needed
    err = capsys.readouterr().err
    assert f"stale lock of process {proc.pid}" in err and "stopped before its first checkpoint" in err
