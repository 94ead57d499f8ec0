from pathlib import Path

import pytest

from monge.config import Config, ConfigError, apply_overrides, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_recipes_load(path, tmp_path, monkeypatch):
    import yaml

    coupling = yaml.safe_load(path.read_text())["coupling"]
    if isinstance(coupling, dict) and coupling["name"] == "reflow":  # needs the pairs that `monge reflow` writes
        import torch

        from monge.couplings.reflow import save_pairs

        monkeypatch.chdir(tmp_path)
        save_pairs(coupling["params"]["pairs"], torch.randn(8, 2), torch.randn(8, 2))
    target = yaml.safe_load(path.read_text())["data"]["target"]
    if isinstance(target, dict) and target["name"] == "csv":  # a scikit-learn table, written as the recipe says
        from monge.data.tabular import save_sklearn_table

        monkeypatch.chdir(tmp_path)
        save_sklearn_table(Path(target["path"]).stem, target["path"])
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert Config.from_dict(cfg.to_dict()) == cfg  # round trip


def test_component_forms():
    a = Config.from_dict({"coupling": "exact_ot", "path": {"name": "linear", "sigma": 0.1}})
    assert a.coupling.name == "exact_ot" and a.path.params == {"sigma": 0.1}


def test_overrides():
    raw = {"coupling": "independent", "train": {"steps": 10}}
    out = apply_overrides(raw, ["train.steps=5", "coupling.name=exact_ot", "path.sigma=0.2", "name=x"])
    assert out["train"]["steps"] == 5 and out["coupling"] == {"name": "exact_ot"}
    assert out["path"] == {"sigma": 0.2} and out["name"] == "x"
    assert raw["train"]["steps"] == 10  # input untouched
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides(raw, ["train.steps"])


def test_overrides_reach_into_components_given_by_name():
    """``train.time_sampling.loc=...`` and ``objective.ratio=...`` extend a component written as a bare name."""
    raw = {"objective": "mean_flow", "train": {"time_sampling": "logit_normal"}}
    out = apply_overrides(raw, ["train.time_sampling.loc=0.5", "objective.ratio=0.5"])
    assert out["train"]["time_sampling"] == {"name": "logit_normal", "loc": 0.5}
    assert out["objective"] == {"name": "mean_flow", "ratio": 0.5}
    cfg = Config.from_dict({"train": apply_overrides({"train": {"time_sampling": "logit_normal"}},
                                                     ["train.time_sampling.scale=0.5"])["train"]})
    assert cfg.train.time_sampling.params == {"scale": 0.5}


@pytest.mark.parametrize(
    "raw,msg",
    [
        ({"coupling": "exact-ot"}, "valid choices: .*exact_ot"),
        ({"path": {"name": "curvy"}}, "valid choices: .*linear"),
        ({"path": {"name": "linear", "sigmaa": 1}}, "accepted: sigma"),
        ({"path": {"name": "linear", "sigma": -1}}, "sigma must be"),
        ({"sample": {"sampler": "euler2"}}, "valid choices: .*rk4"),
        ({"sample": {"nfe": [0]}}, "nfe"),
        ({"data": {"target": "mnist2"}}, "valid choices: .*moons"),
        ({"train": {"steps": "many"}}, "train.steps: expected an integer"),
        ({"train": {"stpes": 3}}, "unknown key.*stpes.*valid keys"),
        ({"train": {"lr": -1.0}}, "train.lr"),
        ({"train": {"batch_size": 0}}, "batch_size"),
        ({"train": {"ema_decay": 1.0}}, "ema_decay"),
        ({"model": "transformer"}, "valid choices: .*mlp"),
        ({"trian": {}}, "unknown key"),
        ({"train": {"progress": "yes"}}, "true/false"),
        ({"name": "a/b"}, "plain directory name"),
        (["not", "a", "mapping"], "expected a mapping"),
    ],
)
def test_bad_configs_fail_before_training(raw, msg):
    with pytest.raises(ConfigError, match=msg):
        Config.from_dict(raw)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)
