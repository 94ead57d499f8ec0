"""What a run keeps of its data (monge.rundata): a run whose data moved still samples, a resume
takes the new location (same data only), and the divergence guard's recent losses survive a resume."""

import shutil

import numpy as np
import pytest

from monge.config import Config, ConfigError
from monge.generate import generate
from monge.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from monge.run.divergence import DIVERGENCE_WINDOW
from monge.run.load import load_model
from monge.train import Trainer, TrainingError


def _raw(tmp_path, data_file, steps=6, **target):
    return {"name": "moved", "output_dir": str(tmp_path / "runs"),
            "data": {"source": "gaussian", "target": {"name": "array", "path": str(data_file), **target}},
            "model": {"name": "mlp", "hidden": 16, "depth": 1},
            "train": {"steps": steps, "batch_size": 16, "eval_samples": 20, "progress": False, "checkpoint_every": 0,
                      "log_every": 1},
            "sample": {"nfe": [1], "adaptive": False}}


@pytest.fixture()
def moved_run(tmp_path):
    data_file = tmp_path / "old" / "table.npy"
    data_file.parent.mkdir()
    np.save(data_file, np.random.default_rng(0).normal(size=(64, 3)) * 5 + 100)
    trainer = Trainer(Config.from_dict(_raw(tmp_path, data_file, standardize=True)))
    trainer.fit()
    new_file = tmp_path / "new" / "table.npy"
    new_file.parent.mkdir()
    shutil.move(data_file, new_file)
    return tmp_path, data_file, new_file, trainer


def test_sampling_needs_no_data(moved_run):
    _, _, _, trainer = moved_run
    model, cfg = load_model(trainer.checkpoint_path)
    x = generate(model, cfg, 200, nfe=4).x
    assert x.shape == (200, 3) and abs(float(x.mean()) - 100) < 5  # data units, from stored statistics


def test_resume_names_the_stored_path_and_takes_the_new_one(moved_run, capsys):
    tmp_path, old, new, _ = moved_run
    with pytest.raises(ConfigError, match=r"No such file.*point at its new place with data.target.path=NEW"):
        Config.from_dict(_raw(tmp_path, old, standardize=True))  # the recipe still names the old place
    resumed = Trainer(Config.from_dict(_raw(tmp_path, new, steps=8, standardize=True)))
    resumed.fit(resume=True)
    assert resumed.step == 8
    err = capsys.readouterr().err
    assert f'data.target.path: "{old}" -> "{new}"' in err
    # anything else about the data still cannot change on resume
    other = Trainer(Config.from_dict(_raw(tmp_path, new, steps=9, standardize=False)))
    with pytest.raises(CheckpointError, match="cannot change on resume"):
        other.fit(resume=True)


def test_resume_refuses_other_data_at_the_new_location(moved_run):
    tmp_path, _, new, _ = moved_run
    other = tmp_path / "other.npy"
    rows = np.load(new)
    rows[0, 0] += 1.0  # one value differs
    np.save(other, rows)
    trainer = Trainer(Config.from_dict(_raw(tmp_path, other, steps=8, standardize=True)))
    with pytest.raises(CheckpointError, match=r"not the data the run trained on.*a resumed run trains on the same"):
        trainer.fit(resume=True)
    _, _, state = load_checkpoint(trainer.checkpoint_path)
    assert state["step"] == 6  # the run is untouched


def test_old_checkpoints_without_a_shape_read_the_data(moved_run):
    _, old, new, trainer = moved_run
    tensors, config, state = load_checkpoint(trainer.checkpoint_path)
    del state["data_shape"]
    save_checkpoint(trainer.checkpoint_path, tensors, config, state)
    with pytest.raises(ValueError, match=rf"data.target.path = '{old}'"):
        load_model(trainer.checkpoint_path)
    shutil.move(new, old)
    model, _ = load_model(trainer.checkpoint_path)
    assert model.shape == (3,)


def test_divergence_guard_history_survives_resume(tmp_path):
    data_file = tmp_path / "t.npy"
    np.save(data_file, np.random.default_rng(0).normal(size=(64, 2)))
    raw = _raw(tmp_path, data_file, steps=DIVERGENCE_WINDOW + 20)
    full = Trainer(Config.from_dict(raw))
    full.fit()
    _, _, state = load_checkpoint(full.checkpoint_path)
    assert len(state["loss_window"]) == DIVERGENCE_WINDOW
    assert state["loss_window"] == list(full.guard.losses)

    raw["name"] = "half"
    half = Trainer(Config.from_dict({**raw, "train": {**raw["train"], "steps": 110}}))
    half.fit()
    resumed = Trainer(Config.from_dict(raw))
    resumed.load()
    assert list(resumed.guard.losses) == list(half.guard.losses)  # the guard is armed at once, no new warm-up
    # and it fires on the first step after the resume when that loss explodes
    resumed.objective = _Exploding(resumed.objective)
    with pytest.raises(TrainingError, match=r"diverged at step 111"):
        resumed.train_step()


class _Exploding:
    def __init__(self, objective):
        self.objective = objective
        self.prediction, self.sampler_kind = objective.prediction, objective.sampler_kind

    def loss(self, *args, **kwargs):
        loss, logs = self.objective.loss(*args, **kwargs)
        return loss * 1e30, logs


def test_a_malformed_loss_window_is_refused(tmp_path):
    data_file = tmp_path / "t.npy"
    np.save(data_file, np.zeros((8, 2)) + np.arange(8)[:, None])
    trainer = Trainer(Config.from_dict(_raw(tmp_path, data_file)))
    trainer.fit()
    tensors, config, state = load_checkpoint(trainer.checkpoint_path)
    state["loss_window"] = ["x"]
    save_checkpoint(trainer.checkpoint_path, tensors, config, state)
    with pytest.raises(CheckpointError, match="loss_window"):
        Trainer(Config.from_dict({**_raw(tmp_path, data_file), "train": {**_raw(tmp_path, data_file)["train"],
                                                                          "steps": 9}})).fit(resume=True)


@pytest.mark.parametrize("edit", ["value", "swap"])
def test_resume_refuses_data_edited_in_place(moved_run, edit):
    """Same path, new rows: the data's digest is checked on every resume (a swap of two rows keeps
    the sums the older fingerprint held)."""
    tmp_path, _, new, _ = moved_run
    resumed = Trainer(Config.from_dict(_raw(tmp_path, new, steps=7, standardize=True)))
    resumed.fit(resume=True)  # the moved file, unchanged: fine
    rows = np.load(new)
    if edit == "value":
        rows[5, 1] += 0.5
    else:
        rows[[3, 4]] = rows[[4, 3]]
    np.save(new, rows)
    trainer = Trainer(Config.from_dict(_raw(tmp_path, new, steps=8, standardize=True)))
    with pytest.raises(CheckpointError, match="not the data the run trained on.*edited or replaced since"):
        trainer.fit(resume=True)
    _, _, state = load_checkpoint(trainer.checkpoint_path)
    assert state["step"] == 7
