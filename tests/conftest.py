import pytest

from monge.config import Config


@pytest.fixture
def tiny_config(tmp_path):
    """A seconds-long run: small MLP, small batches, a cheap evaluation."""

    def make(**overrides):
        raw = {
            "name": "tiny",
            "output_dir": str(tmp_path / "runs"),
            "data": {"source": "gaussian", "target": "8gaussians"},
            "coupling": "exact_ot",
            "path": {"name": "linear"},
            "model": {"name": "mlp", "hidden": 32, "depth": 2},
            "train": {"steps": 40, "batch_size": 64, "lr": 3e-3, "checkpoint_every": 20,
                      "eval_samples": 200, "progress": False, "log_every": 10},
            "sample": {"sampler": "euler", "nfe": [1, 2], "adaptive": False},
        }
        for key, value in overrides.items():
            section, _, sub = key.partition("__")
            if sub:
                raw.setdefault(section, {})[sub] = value
            else:
                raw[section] = value
        return Config.from_dict(raw)

    return make
