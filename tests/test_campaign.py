"""A standing hostile-user campaign: the command line driven in-process with generated inputs
(overrides, ``-o`` targets, numbers at and beyond their bounds) under one contract:

- exit status 0 and finite outputs, or one line of error (``error: ...``, last on stderr) with exit
  status 1 or 2 (or the parser's usage error for a value that is not a number), never a traceback;
- every file of every run byte-identical afterwards, except the files the command owns (its output,
  and the caches it fits: a step grid for ``sample``, the map for ``fit-ot``).

The examples are drawn from a fixed seed (``tests/conftest.py``), so a failure reproduces.
"""

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from monge.cli import app
from monge.limits import MAX_GUIDANCE, MAX_NFE, MAX_RECIPE_DEPTH
from monge.run.rundir import RUN_FILES

pytestmark = pytest.mark.usefixtures("one_thread")

CAMPAIGN = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
runner = CliRunner()

#: numbers at their bounds and beyond, as the command line spells them
HUGE = ["-1", "0", str(2**63), "1e400", "inf", "-inf", "nan", "1e-300"]


def _digests(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _recipe(folder, name, **extra):
    raw = {"name": name, "output_dir": str(folder / "runs"), "data": {"source": "gaussian", "target": "moons"},
           "model": {"name": "mlp", "hidden": 8, "depth": 1},
           "train": {"steps": 3, "batch_size": 8, "eval_samples": 20, "checkpoint_every": 0, "progress": False},
           "sample": {"nfe": [1], "adaptive": False}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, train_tiny_digits):
    """Runs to attack: a 2-D run, a semi-discrete run with a small map, an image run."""
    folder = tmp_path_factory.mktemp("campaign")
    recipe = _recipe(folder, "toy")
    sd = _recipe(folder, "sd", coupling={"name": "semidiscrete_ot", "n_targets": 16, "max_iter": 30})
    for path in (recipe, sd):
        res = runner.invoke(app, ["train", str(path), "--no-progress"])
        assert res.exit_code == 0, res.output
    (folder / "img").mkdir()
    digits = train_tiny_digits(folder / "img")
    np.save(folder / "y.npy", np.zeros((1, 1, 8, 8), dtype=np.float32))
    return {"folder": folder, "recipe": recipe, "toy": folder / "runs" / "toy", "sd": folder / "runs" / "sd",
            "img": digits, "y": folder / "y.npy"}


def _mostly(valid, hostile, weight=3):
    """Draws of ``valid`` values ``weight`` times as often as each ``hostile`` one, so that examples
    get past the first check and reach the later ones."""
    return st.sampled_from(list(valid) * weight + list(hostile))


def _targets(run):
    """``-o`` targets: a new file mostly; else a file name a run owns, a folder, a path under a file,
    a name too long."""
    owned = [str(run / p.replace("*", "x")) for p in RUN_FILES]
    return _mostly(["{out}/new/s.npy", "{out}/s.csv"], [*owned, str(run), str(run / "log.csv" / "s.npy"),
                                                         "{out}/" + "x" * 300 + ".npy"], weight=6)


def _contract(world, args, owned=(), outputs=()):
    """Run ``monge args`` and check the contract; returns the result."""
    roots = [world["folder"] / "runs", world["img"].parent]
    before = {root: _digests(root) for root in roots}
    res = runner.invoke(app, args)
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 0:
        for out in outputs:
            if out.suffix == ".npy" and out.is_file():
                assert np.isfinite(np.load(out)).all(), f"non-finite values written to {out}"
    elif "Invalid value for" in res.stderr:  # the parser's own refusal of a malformed option (usage shown)
        assert res.exit_code == 2, res.output
    else:
        assert res.exit_code in (1, 2), res.output
        lines = res.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: ") and len(lines[-1]) < 2000, res.stderr
        assert sum(line.startswith("error: ") for line in lines) == 1, res.stderr
    for root in roots:
        after = _digests(root)
        changed = [p for p in set(before[root]) | set(after) if before[root].get(p) != after.get(p)]
        foreign = [p for p in changed if p.name not in owned and p not in outputs]
        assert not foreign, f"monge {' '.join(args)} changed {foreign}"
    return res


@settings(CAMPAIGN, max_examples=30)
@given(data=st.data())
def test_sample(world, tmp_path_factory, data):
    run = world["toy"]
    out = tmp_path_factory.mktemp("out")
    target = data.draw(st.one_of(st.none(), _targets(run)), "output")
    n = data.draw(_mostly(["1", "7"], [str(2**27 + 1), *HUGE[:4]]), "n")
    grid, nfe = data.draw(st.one_of(
        st.tuples(_mostly([None, "uniform"], ["edm", "bogus"]),
                  _mostly(["1", "2", "3"], [str(MAX_NFE), str(MAX_NFE + 1), *HUGE[:3]])),
        st.tuples(st.just("optimized"), st.sampled_from(["1", "2", "3"]))), "grid, nfe")
    sampler = data.draw(_mostly(["euler", "heun"], ["dpm_solver_2", "dopri5", "bogus"]), "sampler")
    guidance = data.draw(_mostly([None], ["1", str(MAX_GUIDANCE), *HUGE[2:]], weight=8), "guidance")
    args = ["sample", str(run), "-n", n, "--nfe", nfe, "--sampler", sampler]
    args += [] if grid is None else ["--timesteps", grid]
    args += [] if guidance is None else ["--guidance", guidance, "--class", "1"]
    output = [] if target is None else [target.format(out=out)]
    args += [] if target is None else ["-o", output[0]]
    written = [Path(p) for p in output] if output else [run / "samples.npy"]
    _contract(world, args, owned=("timesteps.safetensors",), outputs=written)


@settings(CAMPAIGN, max_examples=15)
@given(data=st.data())
def test_eval(world, tmp_path_factory, data):
    run = world["toy"]
    out = tmp_path_factory.mktemp("out")
    nfe = data.draw(_mostly(["1", "1,2"], ["0", str(MAX_NFE + 1), "a", "1,,", "-3"]), "nfe")
    n = data.draw(_mostly(["2", "20"], ["1", "20001", *HUGE[:3]]), "n")
    flag = data.draw(st.sampled_from(["-o", "--csv", "--plot"]), "flag")
    target = data.draw(st.one_of(st.none(), _targets(run)), "target")
    args = ["eval", str(run), "--nfe", nfe, "-n", n, "--no-adaptive", "--no-novelty"]
    outputs = []
    if target is not None:
        outputs = [Path(target.format(out=out))]
        args += [flag, str(outputs[0])]
    _contract(world, args, outputs=outputs)


OVERRIDE_KEYS = ["train.lr", "train.batch_size", "train.eval_samples", "train.grad_clip", "train.ema_decay",
                 "train.seed", "model.hidden", "model.depth", "data.target", "path.sigma", "sample.nfe",
                 "coupling.name", "name", "a." * 10 + "b"]
#: values that some keys accept (valid) and hostile ones
OVERRIDE_VALUES = ["1", "2", "3", "0.5", "circles", "exact_ot"] * 2 + [
    "0", "-1", "1.0e+30", "1e-300", ".inf", ".nan", "'x'", "[1, 2]", "{a: 1}", "null",
    "[" * (MAX_RECIPE_DEPTH + 1) + "]" * (MAX_RECIPE_DEPTH + 1)]


@settings(CAMPAIGN, max_examples=20)
@given(overrides=st.lists(st.tuples(st.sampled_from(OVERRIDE_KEYS), st.sampled_from(OVERRIDE_VALUES)),
                          min_size=1, max_size=2),
       depth=_mostly([1], [MAX_RECIPE_DEPTH + 1, 3000], weight=6), existing=_mostly([False], [True], weight=6))
def test_train_with_hostile_overrides(world, tmp_path_factory, overrides, depth, existing):
    """Overrides of a valid recipe into a fresh folder (the attacked runs are never its own), and the
    recipe of an existing run without --overwrite: trained, or refused in one line."""
    out = tmp_path_factory.mktemp("train")
    args = ["train", str(world["recipe"]), *[f"{k}={v}" for k, v in overrides]]
    if depth > 1:
        args.append(".".join(["k"] * depth) + "=1")
    fresh = out / "runs"
    args += [f"output_dir={fresh}", "train.steps=2", "train.batch_size=8", "--no-progress"]
    if existing:  # the existing run itself, without --resume or --overwrite: refused, never replaced
        args = ["train", str(world["recipe"]), "train.eval_samples=20", "--no-progress"]
        res = _contract(world, args)
        assert res.exit_code == 2 and "already holds a run" in res.stderr
        return
    res = _contract(world, args)
    if res.exit_code == 0:
        text = next(fresh.rglob("eval.md")).read_text()
        assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE), text


@settings(CAMPAIGN, max_examples=8)
@given(check=st.sampled_from(["-1", "1", "2", "1000", str(10**12), "1e400"]), refit=st.booleans(),
       target=st.sampled_from([None, "data.target=circles", "coupling.max_iter=31"]))
def test_fit_ot(world, check, refit, target):
    """A run's map with bounded checks; another target or settings are refused with the refit command."""
    run = world["sd"]
    args = ["fit-ot", str(run) if target is None else str(world["folder"] / "sd.yaml")]
    args += [] if target is None else [target]
    args += ["--check-samples", check, "--no-progress"] + (["--refit"] if refit else [])
    res = _contract(world, args, owned=("semidiscrete.safetensors",) if target is None else ())
    if res.exit_code == 0:
        assert "empty cells" in res.stdout and not math.isnan(float(res.stdout.split("RMS relative ")[1].split()[0]))


@settings(CAMPAIGN, max_examples=12)
@given(operator=_mostly(["blur"], ["denoise", "downsample", "nope"], weight=2),
       blur=_mostly(["1", "8"], ["9", "1e9", *HUGE[2:]]), nfe=_mostly(["2"], ["0", str(MAX_NFE + 1)], weight=4),
       sigma=_mostly(["0", "0.1"], ["-1", "inf", "nan"]), link=_mostly([False], [True], weight=4))
def test_restore(world, tmp_path_factory, operator, blur, nfe, sigma, link):
    run = world["img"]
    out = tmp_path_factory.mktemp("restore") / "r.npy"
    if link:  # a link that points at the run's checkpoint
        out.symlink_to(run / "checkpoint.safetensors")
    args = ["restore", str(run), "--operator", operator, "--input", str(world["y"]), "--blur-std", blur,
            "--nfe", nfe, "--sigma", sigma, "-n", "1", "-o", str(out)]
    res = _contract(world, args, outputs=[out] if not link else [])
    if link:
        assert res.exit_code == 2
