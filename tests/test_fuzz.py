"""Property/fuzz suite: malformed recipes and data requests get a clear error, never a crash."""

import string

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monge.config import Config, ConfigError, load_config
from monge.data import GaussianMixture
from monge.data.sources import DATA_SOURCES, build_source

#: derandomized: the same examples on every run, so a CI result is reproducible
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.dates(),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
SECTIONS = ["name", "output_dir", "data", "coupling", "path", "model", "train", "sample"]
TRAIN_KEYS = ["steps", "batch_size", "lr", "weight_decay", "grad_clip", "ema_decay", "log_every", "eval_every",
              "checkpoint_every", "eval_samples", "seed", "device", "progress", "precision", "compile"]


def _valid() -> dict:
    return {"name": "fuzz", "data": {"source": "gaussian", "target": "moons"}, "coupling": "independent",
            "model": {"name": "mlp", "hidden": 8, "depth": 1}, "train": {"steps": 1, "batch_size": 4}}


@FUZZ
@given(content=st.one_of(st.text(alphabet=string.printable, max_size=200), st.binary(max_size=100)))
def test_arbitrary_recipe_files(tmp_path, content):
    """Any text or bytes as a recipe: a config or a ConfigError with a message, nothing else."""
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        load_config(path)
    except ConfigError as err:
        assert str(err)


@FUZZ
@given(section=st.sampled_from(SECTIONS), value=values)
def test_wrong_section_values(section, value):
    raw = _valid()
    raw[section] = value
    try:
        Config.from_dict(raw)
    except ConfigError as err:
        assert str(err)


@FUZZ
@given(key=st.sampled_from(TRAIN_KEYS), value=values)
def test_wrong_train_values(key, value):
    raw = _valid()
    raw["train"][key] = value
    try:
        Config.from_dict(raw)
    except ConfigError as err:
        assert str(err)


@FUZZ
@given(key=st.sampled_from(["hidden", "depth", "time_dim", "activation", "time_embedding", "bogus"]), value=values)
def test_wrong_model_params(key, value):
    raw = _valid()
    raw["model"][key] = value
    try:
        Config.from_dict(raw)
    except ConfigError as err:
        assert str(err)


@pytest.mark.parametrize("key,value,match", [
    ("batch_size", 10**12, "batch_size"),
    ("eval_samples", 10**9, "eval_samples"),
    ("steps", -5, "steps"),
    ("lr", float("inf"), "lr"),
])
def test_huge_and_negative_train_values(key, value, match):
    raw = _valid()
    raw["train"][key] = value
    with pytest.raises(ConfigError, match=match):
        Config.from_dict(raw)


def test_huge_model_is_refused_before_allocation():
    raw = _valid()
    raw["model"]["hidden"] = 10**9
    with pytest.raises(ConfigError, match="hidden"):
        Config.from_dict(raw)


@FUZZ
@given(name=st.sampled_from(DATA_SOURCES.names()), n=st.one_of(st.integers(-5, 0), st.just(10**13),
                                                            st.floats(), st.text(max_size=3), st.none()))
def test_data_sources_reject_bad_sizes(name, n):
    with pytest.raises(ValueError):
        build_source(name).sample(n)


@FUZZ
@given(means=st.lists(st.lists(st.floats(width=32), min_size=2, max_size=2), min_size=1, max_size=4),
       std=st.floats(width=32))
def test_gaussian_mixture_parameters(means, std):
    try:
        gmm = GaussianMixture(torch.tensor(means), std)
    except ValueError as err:
        assert str(err)
    else:
        assert torch.isfinite(gmm.sample(5)).all()
