import csv
import math

import pytest
import torch
from torch import nn

from monge.config import ConfigError
from monge.run.checkpoint import CheckpointError, load_checkpoint
from monge.run.load import load_model
from monge.train import Trainer, TrainingError


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_lowers_the_loss(tiny_config):
    cfg = tiny_config(train__steps=300, train__checkpoint_every=0)
    trainer = Trainer(cfg)
    losses = [trainer.train_step() for _ in range(300)]
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.7 * first


def test_fit_writes_checkpoint_logs_and_eval(tiny_config):
    cfg = tiny_config()
    result = Trainer(cfg).fit()
    run = cfg.run_dir
    assert result.step == 40
    assert (run / "checkpoint.safetensors").is_file() and (run / "config.yaml").is_file()
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert "| euler | 1 |" in (run / "eval.md").read_text()
    assert {r.nfe for r in result.eval_rows} == {1, 2}
    _, config, state = load_checkpoint(run / "checkpoint.safetensors")
    assert state["step"] == 40 and config["coupling"] == {"name": "exact_ot"}


def test_resume_is_exact(tiny_config):
    full = Trainer(tiny_config(name="full", train__checkpoint_every=0))
    full.fit()
    half = Trainer(tiny_config(name="half", train__steps=20))
    half.fit()
    resumed = Trainer(tiny_config(name="half", train__steps=40))
    resumed.fit(resume=True)
    assert resumed.step == 40
    assert torch.equal(_params(full.model), _params(resumed.model))
    assert torch.equal(_params(full.ema.model), _params(resumed.ema.model))


def test_resume_refuses_other_model(tiny_config):
    Trainer(tiny_config(train__steps=20)).fit()
    other = Trainer(tiny_config(train__steps=40, model={"name": "mlp", "hidden": 16, "depth": 2}))
    with pytest.raises(CheckpointError, match="model="):
        other.fit(resume=True)


def test_resume_without_checkpoint(tiny_config):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(tiny_config()).fit(resume=True)


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_config, monkeypatch):
    cfg = tiny_config(train__steps=30, train__checkpoint_every=10)
    trainer = Trainer(cfg)
    original = trainer.target.sample
    calls = {"n": 0}

    def poisoned(n, generator=None, device="cpu"):
        calls["n"] += 1
        x = original(n, generator=generator, device=device)
        return x * float("inf") if calls["n"] == 15 else x

    monkeypatch.setattr(trainer.target, "sample", poisoned)
    with pytest.raises((TrainingError, ValueError), match="step 15|NaN/Inf"):
        trainer.fit()
    _, _, state = load_checkpoint(cfg.run_dir / "checkpoint.safetensors")
    assert state["step"] == 10


def test_nonfinite_loss_message(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config())
    trainer.objective.loss = lambda *a, **k: (torch.tensor(float("nan"), requires_grad=True), {})
    with pytest.raises(TrainingError, match="loss is nan at step 1"):
        trainer.train_step()


def test_load_model_returns_ema_weights(tiny_config):
    cfg = tiny_config()
    trainer = Trainer(cfg)
    trainer.fit()
    ema, loaded_cfg = load_model(cfg.run_dir)
    raw, _ = load_model(cfg.run_dir / "checkpoint.safetensors", ema=False)
    assert loaded_cfg == cfg
    assert torch.equal(_params(ema), _params(trainer.ema.model))
    assert torch.equal(_params(raw), _params(trainer.model))
    assert not torch.equal(_params(ema), _params(raw))


@pytest.mark.parametrize("flags", [{"train__precision": "bf16"}, {"train__compile": True}], ids=["bf16", "compile"])
def test_opt_in_precision_and_compile_run_on_cpu(tiny_config, flags):
    cfg = tiny_config(**flags)
    cfg.train.steps = 6
    trainer = Trainer(cfg)
    first = trainer.train_step()
    result = trainer.fit()
    assert math.isfinite(first) and math.isfinite(result.loss) and result.step == 6
    # the checkpoint holds the plain module's weights (no compile / DDP prefixes)
    model, _ = load_model(result.run_dir / "checkpoint.safetensors")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_bad_precision_is_a_config_error(tiny_config):
    with pytest.raises(ConfigError, match="precision"):
        tiny_config(train__precision="fp8").validate()


def test_semidiscrete_map_is_fitted_once_cached_and_reused_on_resume(tiny_config):
    """The trainer prepares the coupling before step 1, caches the map in the run directory,
    reuses it on --resume, and pairs every noise with the target of its OT cell."""
    from monge.couplings.maps import load_map

    coupling = {"name": "semidiscrete_ot", "n_targets": 16, "tol": 0.3, "max_iter": 300}
    cfg = tiny_config(coupling=coupling, train__steps=10, train__checkpoint_every=5)
    trainer = Trainer(cfg)
    trainer.fit()
    cached = cfg.run_dir / "semidiscrete.safetensors"
    sd = load_map(cached)
    assert sd.n_targets == 16 and trainer.prepare_seconds > 0
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    pairs = trainer.coupling(x0, torch.zeros(50, 2))
    assert torch.equal(pairs.x1, sd(x0)[1])

    before = cached.stat().st_mtime_ns
    cfg.train.steps = 15
    resumed = Trainer(cfg)
    resumed.fit(resume=True)
    assert cached.stat().st_mtime_ns == before  # loaded, not refitted
    assert torch.equal(resumed.coupling.map.heights, sd.heights)


# ----------------------------------------------------------------- class-conditional training
class _LabelProbe(nn.Module):
    """Records ``(x_t, t, y)`` of every training forward pass; ``num_classes`` makes it conditional."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 64)
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append((x.detach().clone(), torch.as_tensor(t).detach().clone(), y))
        return self.lin(x.flatten(1)).reshape(x.shape)


class _Zeros:
    shape = (1, 8, 8)

    def sample(self, n, generator=None, device="cpu"):
        torch.rand(n, generator=generator)  # keep the draw order of a real source
        return torch.zeros(n, *self.shape, device=device)


@pytest.mark.parametrize("coupling", ["independent", {"name": "entropic", "sampling": "noise"}])
def test_conditional_training_passes_each_data_points_label(tiny_config, coupling):
    """With zero noise, x_t = t x1 identifies the data point; its label must be the one the
    network gets (or the null class, at the label-dropout rate), also when the coupling re-draws
    the data side (entropic plan sampled per noise)."""
    from monge.data.images import ImageDataset

    cfg = tiny_config(data={"source": "gaussian", "target": {"name": "digits", "size": 8}}, coupling=coupling,
                      train__label_dropout=0.25, train__steps=6, train__batch_size=64)
    probe = _LabelProbe()
    trainer = Trainer(cfg, model=probe)
    labels = torch.arange(40) % 10
    trainer.target = ImageDataset((labels.float() / 10 - 0.45).reshape(40, 1, 1, 1).expand(40, 1, 8, 8).contiguous(),
                                  labels, "constant", 10)
    trainer.source = _Zeros()
    for _ in range(6):
        trainer.train_step()
    dropped = kept = 0
    for x, t, y in probe.seen:
        value = x[:, 0, 0, 0] / t.reshape(-1) + 0.45
        expect = (value * 10).round().long()
        ok = t.reshape(-1) > 0.05
        null = y == 10
        dropped += int(null.sum())
        kept += int((~null).sum())
        assert torch.equal(y[ok & ~null], expect[ok & ~null])
    assert 0.15 < dropped / (dropped + kept) < 0.35


def test_conditional_model_needs_labels_and_a_batch_coupling(tiny_config):
    with pytest.raises(ConfigError, match="has no labels"):
        Trainer(tiny_config(data={"source": "gaussian", "target": "moons"}), model=_LabelProbe())
    cfg = tiny_config(data={"source": "gaussian", "target": {"name": "digits", "size": 8}},
                      model={"name": "unet", "channels": [8, 16], "num_classes": 10},
                      coupling={"name": "semidiscrete_ot", "n_targets": 8})
    with pytest.raises(ConfigError, match="labels cannot follow"):
        Trainer(cfg)
    cfg = tiny_config(data={"source": "gaussian", "target": {"name": "digits", "size": 8}},
                      model={"name": "unet", "channels": [8, 16], "num_classes": 4})
    with pytest.raises(ConfigError, match="num_classes=4"):
        Trainer(cfg)
    with pytest.raises(ConfigError, match="label_dropout"):
        tiny_config(train__label_dropout=1.0)


# -- settings changed on resume ----------------------------------------------------------------


def test_resume_applies_allowed_changes_and_logs_them(tiny_config, capsys):
    Trainer(tiny_config(train__steps=20)).fit()
    resumed = Trainer(tiny_config(train__steps=30, train__lr=0.5, train__grad_clip=None))
    result = resumed.fit(resume=True)
    assert result.step == 30 and result.trained == 10
    assert all(g["lr"] == 0.5 for g in resumed.optimizer.param_groups)  # the new lr wins over the stored one
    assert "train.lr: 0.003 -> 0.5" in resumed.resume_changes
    assert "train.grad_clip: 1.0 -> null" in resumed.resume_changes
    assert "train.lr: 0.003 -> 0.5" in capsys.readouterr().err
    with open(resumed.run_dir / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["lr"]) == 0.5 and float(rows[0]["lr"]) == 3e-3


@pytest.mark.parametrize("change,named", [
    ({"coupling": "independent"}, 'coupling={"name": "exact_ot"} -> coupling={"name": "independent"}'),
    ({"path": {"name": "vp"}}, "path="),
    ({"train__batch_size": 16}, "train.batch_size: 64 -> 16"),
    ({"train__seed": 5}, "train.seed: 0 -> 5"),
    ({"train__precision": "bf16"}, "train.precision"),
])
def test_resume_refuses_changes_that_would_make_another_run(tiny_config, change, named):
    Trainer(tiny_config(train__steps=10)).fit()
    with pytest.raises(CheckpointError, match="cannot change on resume") as err:
        Trainer(tiny_config(train__steps=20, **change)).fit(resume=True)
    assert named in str(err.value) and "--overwrite" in str(err.value)


def test_resume_refuses_a_checkpoint_beyond_train_steps(tiny_config):
    Trainer(tiny_config(train__steps=20)).fit()
    with pytest.raises(CheckpointError, match="step 20, beyond train.steps=10"):
        Trainer(tiny_config(train__steps=10)).fit(resume=True)


# -- divergence guard ----------------------------------------------------------------------------


def test_divergence_guard_stops_naming_the_step_and_keeps_the_sane_checkpoint(tiny_config, monkeypatch):
    import monge.run.divergence as train_mod

    monkeypatch.setattr(train_mod, "DIVERGENCE_WARMUP", 5)
    cfg = tiny_config(train__steps=30, train__checkpoint_every=10)
    trainer = Trainer(cfg)
    objective = trainer.objective
    calls = {"n": 0}

    def exploding(*a, **k):
        calls["n"] += 1
        loss, logs = real_loss(*a, **k)
        return (loss * 1e30 if calls["n"] >= 15 else loss), logs  # finite, but absurd

    real_loss = objective.loss
    objective.loss = exploding
    with pytest.raises(TrainingError, match=r"diverged at step 15: loss .* times its running median"):
        trainer.fit()
    _, _, state = load_checkpoint(cfg.run_dir / "checkpoint.safetensors")
    assert state["step"] == 10
    load_model(cfg.run_dir)  # the kept checkpoint is sane


@pytest.mark.parametrize("clip", [1.0, None])
def test_nonfinite_gradient_stops_the_run(tiny_config, clip):
    cfg = tiny_config(train__steps=30, train__checkpoint_every=10, train__grad_clip=clip)
    trainer = Trainer(cfg)
    real_step = trainer.train_step

    def step():
        if trainer.step == 12:
            hook = next(trainer.model.parameters()).register_hook(lambda g: g * float("inf"))
            try:
                return real_step()
            finally:
                hook.remove()
        return real_step()

    trainer.train_step = step
    with pytest.raises(TrainingError, match="gradient is non-finite .* at step 13"):
        trainer.fit()
    assert trainer.step == 12 and torch.isfinite(_params(trainer.model)).all()  # no update was applied
    _, _, state = load_checkpoint(cfg.run_dir / "checkpoint.safetensors")
    assert state["step"] == 10


def test_nonfinite_weights_are_never_saved(tiny_config):
    cfg = tiny_config(train__steps=4, train__checkpoint_every=2)
    trainer = Trainer(cfg)
    trainer.fit()
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    before = trainer.checkpoint_path.read_bytes()
    with pytest.raises(TrainingError, match="weights are non-finite"):
        trainer.save()
    assert trainer.checkpoint_path.read_bytes() == before


def test_conditional_ot_trains_a_class_conditional_mlp(tiny_config):
    """labels reach the coupling (per-class pairing) and, with dropout, the MLP."""
    from monge.couplings import ConditionalOT

    seen = []

    class Spy(ConditionalOT):
        def pair(self, x0, x1, generator, labels=None):
            seen.append(labels.clone())
            return super().pair(x0, x1, generator, labels=labels)

    cfg = tiny_config(coupling="conditional_ot", model={"name": "mlp", "hidden": 32, "depth": 2, "num_classes": 8},
                      train__steps=5, train__label_dropout=0.2)
    trainer = Trainer(cfg)
    trainer.coupling = Spy()
    for _ in range(5):
        trainer.train_step()
    assert len(seen) == 5 and all(int(y.max()) < 8 for y in seen)


def test_conditional_ot_needs_labels_and_a_conditional_model(tiny_config):
    with pytest.raises(ConfigError, match="has no labels"):
        Trainer(tiny_config(data={"source": "gaussian", "target": "moons"}, coupling="conditional_ot",
                            model={"name": "mlp", "hidden": 8, "depth": 1, "num_classes": 2}))
    with pytest.raises(ConfigError, match="set model.num_classes"):
        Trainer(tiny_config(coupling="conditional_ot"))


def test_log_has_coupling_diagnostics_and_resumes_an_old_log(tiny_config):
    cfg = tiny_config(train__steps=20, train__checkpoint_every=10)
    Trainer(cfg).fit()
    rows = list(csv.DictReader((cfg.run_dir / "log.csv").open()))
    assert float(rows[-1]["pair_cost_ratio"]) < 0.9  # exact_ot shortens the pairs
    assert float(rows[-1]["weights_ess"]) == 1.0
    assert float(rows[-1]["plan_entropy"]) == 0.0  # a permutation
    # a log written before the diagnostics keeps its header on resume
    path = cfg.run_dir / "log.csv"
    path.write_text("step,loss,lr,seconds\n10,1.0,0.003,0.1\n20,1.0,0.003,0.2\n")
    Trainer(tiny_config(train__steps=30, train__checkpoint_every=10)).fit(resume=True)
    lines = path.read_text().splitlines()
    assert lines[0] == "step,loss,lr,seconds" and len(lines[-1].split(",")) == 4


def test_trainer_names_the_step_of_a_coupling_warning(tiny_config):
    cfg = tiny_config(coupling={"name": "entropic", "relative_eps": 0.01, "max_iter": 2, "tol": 1e-9},
                      train__steps=1)
    with pytest.warns(RuntimeWarning, match="step 1: Entropic: Sinkhorn did not converge"):
        Trainer(cfg).train_step()


_CONT = {"source": "8gaussians", "target": {"name": "conditional_toy", "set": "moons", "condition": "x"}}


def test_continuous_conditions_reach_the_coupling_and_the_model(tiny_config):
    """The coupling gets the batch's (B, 1) conditions, the model the conditions of its pairs' data."""
    from monge.couplings import ConditionalOT

    seen: dict[str, list] = {"coupling": [], "model": []}

    class Spy(ConditionalOT):
        def pair(self, x0, x1, generator, labels=None):
            seen["coupling"].append((x1.clone(), labels.clone()))
            return super().pair(x0, x1, generator, labels=labels)

    cfg = tiny_config(data=_CONT, coupling={"name": "conditional_ot", "condition": "continuous", "weight": 5.0},
                      model={"name": "mlp", "hidden": 16, "depth": 1, "cond_dim": 1}, train__steps=3)
    trainer = Trainer(cfg)
    assert trainer.cond_dim == 1 and trainer.num_classes is None
    trainer.coupling = Spy(condition="continuous", weight=5.0)
    forward = trainer.model.forward

    def spy_forward(x, t, c=None):
        seen["model"].append(c.clone())
        return forward(x, t, c)

    trainer.model.forward = spy_forward
    trainer.net = trainer.model
    for _ in range(3):
        trainer.train_step()
    for (x1, c), cm in zip(seen["coupling"], seen["model"], strict=True):
        assert c.shape == (64, 1) and torch.equal(c[:, 0], x1[:, 0])  # the condition: each point's x
        assert torch.equal(cm, c)  # conditional_ot keeps the data in order: the model sees the same conditions


def test_continuous_condition_run_trains_evaluates_and_resumes(tiny_config):
    cfg = tiny_config(data=_CONT, coupling={"name": "conditional_ot", "condition": "continuous", "weight": 5.0},
                      model={"name": "mlp", "hidden": 16, "depth": 1, "cond_dim": 1}, train__steps=20)
    res = Trainer(cfg).fit()
    assert res.step == 20 and all(math.isfinite(r.w2) for r in res.eval_rows)
    rows = list(csv.DictReader((cfg.run_dir / "log.csv").open()))
    assert float(rows[-1]["plan_entropy"]) == 0.0 and float(rows[-1]["pair_cost_ratio"]) < 1.0
    model, _ = load_model(cfg.run_dir)
    assert model.cond_dim == 1


def test_continuous_condition_settings_are_checked(tiny_config):
    mlp = {"name": "mlp", "hidden": 8, "depth": 1, "cond_dim": 1}
    with pytest.raises(ConfigError, match="has none"):
        Trainer(tiny_config(model=mlp))
    with pytest.raises(ConfigError, match="cond_dim=2"):
        Trainer(tiny_config(data=_CONT, model={**mlp, "cond_dim": 2}))
    with pytest.raises(ConfigError, match="condition: continuous"):
        Trainer(tiny_config(data=_CONT, model=mlp, coupling="conditional_ot"))


def test_discrete_c2ot_task_with_label_dropout_trains(tiny_config):
    """The 8gaussians -> moons class task: labels follow the pairs, dropout gives the null class 2."""
    seen = []
    cfg = tiny_config(data={"source": "8gaussians", "target": {"name": "conditional_toy", "set": "moons"}},
                      coupling="conditional_ot", model={"name": "mlp", "hidden": 16, "depth": 1, "num_classes": 2},
                      train__label_dropout=0.5, train__steps=4)
    trainer = Trainer(cfg)
    forward = trainer.model.forward

    def spy_forward(x, t, y=None):
        seen.append(y.clone())
        return forward(x, t, y)

    trainer.model.forward = spy_forward
    trainer.net = trainer.model
    for _ in range(4):
        trainer.train_step()
    ys = torch.cat(seen)
    assert set(ys.tolist()) == {0, 1, 2} and 0.3 < float((ys == 2).float().mean()) < 0.7


def test_nan_conditions_stop_training_with_a_clear_error(tiny_config):
    cfg = tiny_config(data=_CONT, coupling="independent", model={"name": "mlp", "hidden": 8, "depth": 1, "cond_dim": 1})
    trainer = Trainer(cfg)
    draw = trainer.target.sample_with_conditions

    def nan_conditions(n, generator=None, device="cpu"):
        x, c = draw(n, generator=generator, device=device)
        return x, torch.where(torch.arange(n)[:, None] == 3, float("nan"), c)

    trainer.target.sample_with_conditions = nan_conditions
    with pytest.raises(TrainingError, match="NaN/Inf conditions at step 1"):
        trainer.train_step()
    assert trainer.step == 0


def test_per_class_semidiscrete_maps_train_a_class_conditional_model(tiny_config):
    from monge.couplings.conditional_semidiscrete import CLASS_MAPS_FILE

    cfg = tiny_config(data={"source": "gaussian", "target": {"name": "conditional_toy", "set": "moons"}},
                      coupling={"name": "conditional_semidiscrete_ot", "n_targets": 16, "tol": 0.1},
                      model={"name": "mlp", "hidden": 16, "depth": 1, "num_classes": 2}, train__steps=10)
    res = Trainer(cfg).fit()
    assert res.step == 10 and (cfg.run_dir / CLASS_MAPS_FILE).is_file()
    rows = list(csv.DictReader((cfg.run_dir / "log.csv").open()))
    assert float(rows[-1]["plan_entropy"]) == 0.0
    trainer = Trainer(tiny_config(data={"source": "gaussian", "target": {"name": "conditional_toy", "set": "moons"}},
                                  coupling={"name": "conditional_semidiscrete_ot", "n_targets": 16, "tol": 0.1},
                                  model={"name": "mlp", "hidden": 16, "depth": 1, "num_classes": 2},
                                  train__steps=12))
    trainer.fit(resume=True)  # the cached maps are loaded, not refitted
    assert trainer.step == 12


def test_a_data_prediction_run_is_stored_sampled_and_evaluated_as_such(tiny_config):
    from monge.generate import generate

    cfg = tiny_config(objective={"name": "data"}, train__steps=30, train__checkpoint_every=0)
    result = Trainer(cfg).fit()
    assert result.eval_rows and all(math.isfinite(r.w2) for r in result.eval_rows)
    model, config = load_model(cfg.run_dir)
    assert (model.prediction, model.sampler_kind) == ("data", "ode")
    for sampler in ("euler", "ddim"):
        x = generate(model, config, n=64, sampler=sampler, nfe=4).x
        assert x.shape == (64, 2) and bool(torch.isfinite(x).all())


@pytest.mark.parametrize("objective", ["noise", "score"])
def test_the_checkpoint_records_the_objectives_prediction(tiny_config, objective):
    cfg = tiny_config(objective={"name": objective})
    trainer = Trainer(cfg)
    for _ in range(3):
        assert math.isfinite(trainer.train_step())
    cfg.run_dir.mkdir(parents=True)
    model, _ = load_model(trainer.save())
    assert (model.prediction, model.sampler_kind) == (objective, "ode")
