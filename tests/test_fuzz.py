"""Property/fuzz suite: malformed recipes and data requests get a clear error, never a crash."""

import string

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
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


@FUZZ
@given(content=st.one_of(st.text(alphabet="0123456789.,-+eE naif\n\t\"x", max_size=200), st.binary(max_size=80)))
def test_arbitrary_csv_tables(tmp_path, content):
    """Any text or bytes as a CSV table: a data set of finite rows or a ValueError with a message."""
    from monge.data.tabular import load_table

    path = tmp_path / "t.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        ds = load_table(path, standardize=True)
    except ValueError as err:
        assert str(err)
    else:
        assert torch.isfinite(ds.data).all() and ds.data.dim() == 2


@FUZZ
@given(depth=st.integers(1, 12), width=st.integers(1, 12))
@example(depth=2, width=3)  # within the limits
@example(depth=9, width=4)  # 36 aliases, 349,526 values
@example(depth=12, width=12)  # 144 aliases
def test_yaml_alias_trees(tmp_path, depth, width):
    """Nested aliases: refused when the recipe would expand past the limit, read otherwise."""
    from monge.limits import MAX_YAML_ALIASES, MAX_YAML_NODES

    lines = ["l0: &l0 [1]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(lines) + "\n")
    sizes = [2]  # values of each list once expanded: l0 = [1] is a list and a scalar
    for _ in range(depth):
        sizes.append(1 + width * sizes[-1])
    nodes = 1 + sum(1 + size for size in sizes)  # the mapping, each key and each list
    aliases = depth * width
    with pytest.raises(ConfigError) as info:  # the keys l0.. are never valid: some error always
        load_config(path)
    message = str(info.value)
    if aliases > MAX_YAML_ALIASES:
        assert "aliases" in message
    elif nodes > MAX_YAML_NODES:
        assert "expands to more than" in message
    else:
        assert "unknown key" in message  # within the limits: read in full
