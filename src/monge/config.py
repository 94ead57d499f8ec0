"""Typed run configuration, loaded from YAML with ``key.sub=value`` overrides.

A recipe names its pieces by registry name::

    name: 8gaussians-moons-otcfm
    data: {source: 8gaussians, target: moons}
    coupling: exact_ot                    # or {name: exact_ot, <params>}
    path: {name: linear, sigma: 0.0}
    objective: velocity                   # or mean_flow / shortcut (flow maps, model second_time: true)
    model: {name: mlp, hidden: 256, depth: 3}
    train: {steps: 3000, batch_size: 256, lr: 1.0e-3}
    sample: {sampler: euler, nfe: [1, 2, 4, 8]}

Every problem (unknown key, wrong type, unknown name, bad parameter) raises
:class:`ConfigError` before any training starts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = [
    "ConfigError",
    "Component",
    "DataConfig",
    "TrainConfig",
    "SampleConfig",
    "Config",
    "load_config",
    "apply_overrides",
    "build_path",
]


class ConfigError(ValueError):
    """A configuration problem, reported before any work starts."""


@dataclass
class Component:
    """A registry name plus keyword parameters for its factory."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, where: str) -> Component:
        if isinstance(value, Component):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            if "name" not in value or not isinstance(value["name"], str):
                raise ConfigError(f"{where}: a mapping needs a string 'name' key, got {value!r}")
            params = {k: v for k, v in value.items() if k != "name"}
            if isinstance(params.get("params"), dict) and len(params) == 1:
                params = dict(params["params"])
            return cls(value["name"], params)
        raise ConfigError(f"{where}: expected a name or a mapping with 'name', got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    def to_compact(self) -> str | dict[str, Any]:
        """The bare name when there are no parameters, else :meth:`to_dict`."""
        return self.name if not self.params else self.to_dict()

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v!r}" for k, v in self.params.items()) + ")"


@dataclass
class DataConfig:
    """Source (t=0) and target (t=1) distributions: a data-source name, or a mapping with
    ``name`` and its parameters (``{name: digits, size: 16}``). The ``gaussian`` source takes
    the target's sample shape unless given one.

    ``latent``: a latent flow. The run directory or checkpoint of a trained ``autoencoder`` run, or
    a folder of a diffusers ``AutoencoderKL`` / ``AutoencoderTiny`` (:func:`monge.latent.load_codec`):
    the target images are encoded once (cached in the run directory), the flow learns
    ``source -> latents`` and samples are decoded back to images. Checked when training starts,
    so a recipe loads before its autoencoder is trained."""

    source: Component = field(default_factory=lambda: Component("gaussian"))
    target: Component = field(default_factory=lambda: Component("moons"))
    latent: str | None = None


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    log_every: int = 50
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 1000
    eval_samples: int = 1000
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    precision: str = "fp32"  # "fp32" or "bf16" (autocast of the network's forward pass)
    compile: bool = False  # wrap the network in torch.compile
    label_dropout: float = 0.1  # class-conditional models: share of labels replaced by the null class
    pairing_workers: int = 0  # threads solving the OT of upcoming batches (exact_ot, immiscible)
    tensorboard: bool = False  # also write TensorBoard event files to RUN/tb (pip install 'monge[tensorboard]')
    #: the law of the training times (:data:`monge.times.TIMES`): ``uniform`` or ``{name: logit_normal, loc, scale}``
    time_sampling: Component = field(default_factory=lambda: Component("uniform"))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data; ``time_sampling`` only away from ``uniform``, so the configs (and
        fingerprints) of runs recorded before it existed stay the same."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "time_sampling"}
        if self.time_sampling.to_compact() != "uniform":
            out["time_sampling"] = self.time_sampling.to_compact()
        return out


@dataclass
class SampleConfig:
    sampler: str = "euler"
    nfe: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    adaptive: bool = True
    nll: bool = False  # also score held-out data's log-likelihood at evaluation (costly: off by default)


@dataclass
class Config:
    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    coupling: Component = field(default_factory=lambda: Component("independent"))
    path: Component = field(default_factory=lambda: Component("linear"))
    model: Component = field(default_factory=lambda: Component("mlp"))
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    #: what the network learns: ``velocity`` (flow matching) or a flow map (``mean_flow``, ``shortcut``)
    objective: Component = field(default_factory=lambda: Component("velocity"))

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    # -- (de)serialisation -------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Any, check_data: bool = True) -> Config:
        """Build and validate; ``check_data=False`` skips reading the data (a stored run's config,
        sampled without its data) and so the checks that need the data's shape."""
        if raw is None:
            raw = {}
        cfg = _build(cls, raw, "config")
        cfg.validate(check_data)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Component):
                out[f.name] = value.to_dict()
            elif isinstance(value, TrainConfig):
                out[f.name] = value.to_dict()
            elif isinstance(value, DataConfig):
                out[f.name] = {"source": value.source.to_compact(), "target": value.target.to_compact()}
                if value.latent is not None:
                    out[f.name]["latent"] = value.latent
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                out[f.name] = dataclasses.asdict(value)
            else:
                out[f.name] = value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- validation ----------------------------------------------------------
    def validate(self, check_data: bool = True) -> None:
        """Check names against the registries and build each piece once (the data too, unless
        ``check_data=False``)."""
        from .couplings import COUPLINGS
        from .data.sources import DATA_SOURCES
        from .models import MODELS
        from .paths import PATHS
        from .samplers import SAMPLERS

        if not self.name or "/" in self.name or self.name in {".", ".."}:
            raise ConfigError(f"name must be a plain directory name, got {self.name!r}")
        if len(self.name.encode("utf-8", "surrogateescape")) > 255:
            raise ConfigError(f"name is {len(self.name)} characters; a run directory name is at most 255 bytes")
        t = self.train
        for key in ("steps", "batch_size", "log_every", "eval_samples"):
            if getattr(t, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
        if t.eval_samples < 2:  # the unbiased MMD² averages over distinct pairs
            raise ConfigError(f"train.eval_samples must be >= 2 (MMD² compares distinct pairs), got {t.eval_samples}")
        for key, top, why in (("batch_size", 2**20, "per-process batch"),
                              ("eval_samples", 20_000, "exact W2 costs O(n^3) in it")):
            if getattr(t, key) > top:
                raise ConfigError(f"train.{key}={getattr(t, key)} is too large (at most {top}: {why})")
        for key in ("eval_every", "checkpoint_every"):
            if getattr(t, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0 (0 disables it), got {getattr(t, key)}")
        if isinstance(t.pairing_workers, bool) or not isinstance(t.pairing_workers, int) \
                or not 0 <= t.pairing_workers <= 256:
            raise ConfigError(f"train.pairing_workers must be an integer in [0, 256], got {t.pairing_workers!r}")
        if t.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision must be 'fp32' or 'bf16', got {t.precision!r}")
        if not (t.lr > 0 and math.isfinite(t.lr)):
            raise ConfigError(f"train.lr must be a finite number > 0, got {t.lr}")
        if isinstance(t.label_dropout, bool) or not isinstance(t.label_dropout, (int, float)) \
                or not 0.0 <= t.label_dropout < 1.0:
            raise ConfigError(f"train.label_dropout must be in [0, 1), got {t.label_dropout!r}")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
        if t.grad_clip is not None and not t.grad_clip > 0:
            raise ConfigError(f"train.grad_clip must be > 0 or null, got {t.grad_clip}")
        for side in ("source", "target"):
            name = getattr(self.data, side).name
            if name not in DATA_SOURCES:
                raise ConfigError(
                    f"unknown data.{side} {name!r}; valid choices: {', '.join(DATA_SOURCES.names())}"
                )
        if self.sample.sampler not in SAMPLERS:
            raise ConfigError(
                f"unknown sample.sampler {self.sample.sampler!r}; valid choices: {', '.join(SAMPLERS.names())}"
            )
        if not self.sample.nfe or any(n < 1 for n in self.sample.nfe):
            raise ConfigError(f"sample.nfe must be a non-empty list of integers >= 1, got {self.sample.nfe}")
        from .limits import MAX_NFE

        if max(self.sample.nfe) > MAX_NFE:
            raise ConfigError(f"sample.nfe={self.sample.nfe} is too large (at most {MAX_NFE:,} network evaluations "
                              "per sample; few-step samplers need 1-64)")
        for key, registry in (("coupling", COUPLINGS), ("path", PATHS)):
            comp: Component = getattr(self, key)
            try:
                built = registry.build(comp.name, **comp.params)
            except ValueError as err:
                raise ConfigError(f"{key}: {err}") from None
            if key == "coupling" and t.pairing_workers:
                _check_pairing_workers(built, comp.name)
                if getattr(built, "scope", "local") == "global" and t.pairing_workers > 1:
                    raise ConfigError(
                        f"coupling {comp.name!r} with scope: global gathers every rank's batch with a "
                        "collective; with several pairing workers the ranks would issue these in different "
                        "orders and deadlock or mix batches. Set train.pairing_workers: 1 (or 0)"
                    )
        if self.model.name not in MODELS:
            raise ConfigError(
                f"unknown model {self.model.name!r}; valid choices: {', '.join(MODELS.names())}"
            )
        self._validate_objective()
        self._validate_times()
        self._validate_latent()
        if not check_data:
            return
        from .data.sources import build_data
        from .models import build_model

        try:
            source, _ = build_data(self.data)
        except (ValueError, OSError) as err:
            from .data.sources import moved_data_hint

            raise ConfigError(f"data: {moved_data_hint(str(err), self.data)}") from None
        if self.sample.nll:  # the likelihood needs the source's log-density in closed form
            try:
                source.log_prob(source.sample(1))
            except ValueError as err:
                raise ConfigError(f"sample.nll: {err}") from None
        if self.data.latent is not None:
            return  # the model's shape is the autoencoder's latent shape, known when training starts
        try:  # on the meta device: checks the parameters without allocating weights
            with torch.device("meta"):
                build_model(self.model.name, self.model.params, source.shape)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None

    def _validate_latent(self) -> None:
        """An autoencoder trains with the ``reconstruction`` objective and nothing else does; a latent
        flow (``data.latent``) is a flow, not an autoencoder."""
        ae, recon = self.model.name == "autoencoder", self.objective.name == "reconstruction"
        if ae and not recon:
            raise ConfigError(f"model autoencoder trains with objective: reconstruction, not {self.objective.name!r}; "
                              "set objective: reconstruction (configs/digits-autoencoder.yaml)")
        if recon and not ae:
            raise ConfigError(f"objective reconstruction trains an autoencoder, not model {self.model.name!r}; set "
                              "model: {name: autoencoder, ...}, or use objective velocity for a flow")
        if recon:
            if self.coupling.name != "independent":
                raise ConfigError("an autoencoder run pairs no noise with its data, so coupling "
                                  f"{self.coupling.name!r} "
                                  "has nothing to do; set coupling: independent")
            if self.data.latent is not None:
                raise ConfigError("data.latent names the autoencoder a flow works on; an autoencoder run trains on "
                                  "the images themselves: drop data.latent")
            if self.sample.nll:
                raise ConfigError("sample.nll scores a flow's likelihood; an autoencoder has none: set sample.nll: "
                                  "false")
            return
        latent = self.data.latent
        if latent is None:
            return
        if not latent.strip():
            raise ConfigError("data.latent must name an autoencoder run directory (or a diffusers folder), got ''")
        if self.sample.nll:
            raise ConfigError("sample.nll scores the likelihood of the latents, not of the images, for a latent flow "
                              "(data.latent); set sample.nll: false")

    def _validate_times(self) -> None:
        """``train.time_sampling`` names a law of :data:`monge.times.TIMES` the objective draws its times from."""
        from . import objectives
        from .times import TIMES

        comp = self.train.time_sampling
        try:
            TIMES.build(comp.name, **comp.params)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"train.time_sampling: {err}") from None
        if comp.name != "uniform" and objectives.sampler_kind(self.objective.name) != "ode":
            raise ConfigError(f"train.time_sampling: objective {self.objective.name!r} draws its own times (or none); "
                              "remove train.time_sampling or set it to uniform")

    def _validate_objective(self) -> None:
        """The objective exists and agrees with the model (two times for a flow map) and the sampler."""
        from . import objectives

        name = self.objective.name
        try:
            objectives.OBJECTIVES.build(name, **self.objective.params)
            objectives.check_model(name, self.model.params.get("second_time", False) is True)
            if objectives.sampler_kind(name) is not None:  # an autoencoder run samples nothing
                objectives.check_sampler(name, self.sample.sampler)
        except ValueError as err:
            raise ConfigError(f"objective: {err}") from None
        if objectives.is_flow_map(name) and self.sample.adaptive:
            raise ConfigError(f"objective {name!r}: sample.adaptive runs dopri5 on a velocity field; a flow map is "
                              f"evaluated with its {objectives.sampler_kind(name)!r} sampler: set sample.adaptive: "
                              "false")
        if objectives.is_flow_map(name) and self.sample.nll:
            raise ConfigError(f"objective {name!r}: sample.nll integrates the change of variables of a velocity field; "
                              "a flow map has no likelihood here: set sample.nll: false")


def _check_pairing_workers(coupling: Any, name: str) -> None:
    from .couplings import COUPLINGS

    if not coupling.traits.threaded_solve:
        threaded = [n for n in COUPLINGS.names() if COUPLINGS.get_class(n).traits.threaded_solve]
        why = coupling.traits.unthreaded_reason
        raise ConfigError(
            f"train.pairing_workers applies to the couplings whose OT solve runs in worker threads "
            f"({', '.join(threaded)}); not to {name!r}: {why}. Set train.pairing_workers: 0"
        )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Component:
        return Component.parse(value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(names)}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where != "config" else k) for k, v in raw.items()}
    return cls(**kwargs)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a raw config mapping."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, _, text = item.partition("=")
        from .limits import MAX_RECIPE_DEPTH, load_yaml_bounded

        try:

            value = load_yaml_bounded(text, f"override {item!r}") if text else ""
        except ValueError as err:
            raise ConfigError(str(err)) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse value: {err}") from None
        parts = key.strip().split(".")
        if len(parts) > MAX_RECIPE_DEPTH:
            raise ConfigError(f"override {item[:60]!r}...: its key nests {len(parts)} levels deep; a setting sits "
                              f"at most {MAX_RECIPE_DEPTH} (e.g. train.lr=1e-3)")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in ("coupling", "path", "model", "source", "target", "time_sampling",
                                                   "objective"):
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe, apply overrides, validate."""
    from .limits import MAX_RECIPE_BYTES, load_yaml_bounded

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise ConfigError(f"{path} is {size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,} bytes of YAML "
                          "settings (data belongs in files the recipe names)")
    try:
        raw = load_yaml_bounded(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file; a recipe is YAML text") from None
    except ValueError as err:  # too many aliases, too large once expanded
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    if overrides:
        raw = apply_overrides(raw, overrides)
    return Config.from_dict(raw)


def build_path(config: Config):
    """The run's probability path, :class:`~monge.paths.ProbPath` ``config.path`` built from
    :data:`monge.paths.PATHS` (the one place a run's path is built)."""
    from .paths import PATHS

    return PATHS.build(config.path.name, **config.path.params)
