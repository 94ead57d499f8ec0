"""Limits checked before any work: memory of a model or a batch against the memory available,
the device asked for, and caps on recipe size and sampling budgets.

Each check raises ``ValueError`` saying what is too large and how to fix it, so a mistake costs a
clear message instead of an allocation crash minutes later.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "MAX_GUIDANCE",
    "MAX_IMAGE_PIXELS",
    "MAX_NFE",
    "MAX_RECIPE_BYTES",
    "MAX_RECIPE_DEPTH",
    "MAX_YAML_ALIASES",
    "MAX_YAML_NODES",
    "TRAIN_COPIES",
    "activation_elements",
    "available_memory",
    "check_device",
    "check_guidance",
    "check_memory",
    "check_model_memory",
    "check_nfe",
    "check_sampling_memory",
    "load_yaml_bounded",
    "model_parameters",
    "parse_nfe",
]

#: Most network evaluations one sampling call may take (``--nfe``, ``sample.nfe``).
MAX_NFE = 10_000
#: Largest recipe file read (bytes); recipes are a few hundred bytes.
MAX_RECIPE_BYTES = 1 << 20
#: Most YAML aliases (``*name``) a recipe may use: anchors save typing, not a way to build large
#: documents (a "billion laughs" recipe of a few hundred bytes expands to gigabytes).
MAX_YAML_ALIASES = 100
#: Largest image (pixels) decoded from a file: 8192 x 8192.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Float copies of the weights training holds: weights, gradients, AdamW's two moments, EMA.
TRAIN_COPIES = 5
#: Deepest nesting of a recipe (mappings and lists inside each other, dotted override keys): a
#: recipe's settings sit 2-4 levels deep; 64 leaves room and stays far from Python's recursion limit.
MAX_RECIPE_DEPTH = 64
#: Largest classifier-free guidance weight |w|: the guided field :math:`v_u + w (v_c - v_u)` leaves
#: the data's range as :math:`w` grows; weights in use lie in [1, 10], so 100 is a tenfold margin.
MAX_GUIDANCE = 100.0


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory available on ``device`` (``None`` when unknown): ``MemAvailable`` of
    ``/proc/meminfo`` (or ``sysconf``), capped by a cgroup memory limit, for the CPU;
    ``torch.cuda.mem_get_info`` for a GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    if device.type != "cpu":
        return None
    system = _meminfo_available()
    limit = _cgroup_room()  # a container's memory limit, when lower than the machine's
    if system is None or limit is None:
        return system if limit is None else limit
    return min(system, limit)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``); ``None`` without a limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            text = (root / limit_file).read_text().strip()
            if text == "max" or int(text) >= 2**60:
                return None
            return max(int(text) - int((root / usage_file).read_text().strip()), 0)
        except (OSError, ValueError):
            continue
    return None


def model_parameters(model: nn.Module) -> int:
    """Number of parameters (works on the ``meta`` device, without allocating weights)."""
    return sum(p.numel() for p in model.parameters())


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_memory(nbytes: int, what: str, fix: str, device: torch.device | str = "cpu") -> None:
    """Raise ``ValueError`` when ``nbytes`` exceed the memory available on ``device``."""
    available = available_memory(device)
    if available is not None and nbytes > available:
        raise ValueError(f"{what} needs about {_gib(nbytes)} but {_gib(available)} of memory is available on "
                         f"{torch.device(device)}; {fix}")


def check_model_memory(model: nn.Module, what: str, copies: int = 1, device: torch.device | str = "cpu") -> int:
    """Check ``copies`` float32 copies of ``model``'s weights fit (``model`` may be on ``meta``);
    return the parameter count."""
    n = model_parameters(model)
    check_memory(n * 4 * copies, f"{what} ({n:,} parameters, {copies} cop{'y' if copies == 1 else 'ies'})",
                 "make the model smaller (model.hidden, model.depth, model.channels)", device)
    return n


def check_device(device: str) -> torch.device:
    """``torch.device(device)`` when it exists on this machine; else a ``ValueError`` naming the
    devices that do."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"train.device={device!r} is not a device name ({err}); use {_devices()}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"train.device={device!r} but this machine has no usable CUDA GPU (torch "
                             f"{torch.__version__}, CUDA build {torch.version.cuda}); use {_devices()}")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"train.device={device!r} but this machine has {count} CUDA GPU(s); use {_devices()}")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"train.device={device!r} but MPS is not available here; use {_devices()}")
        return dev
    raise ValueError(f"train.device={device!r} is not supported; use {_devices()}")


def _devices() -> str:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        names.append("mps")
    return "one of the available devices: " + ", ".join(names)


def parse_nfe(value: int | str, name: str = "--nfe") -> list[int]:
    """The NFE budgets of ``value``, one integer or comma-separated integers (``"1,2,4"``), each in
    ``[1, MAX_NFE]`` (:func:`check_nfe`); a ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, str):
        try:
            values = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"{name} must be comma-separated integers, got {value!r}") from None
        if not values or any(v < 1 for v in values):
            raise ValueError(f"{name} values must be integers >= 1, got {value!r}")
    else:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        values = [value]
    check_nfe(max(values), name)
    return values


def check_nfe(nfe: int, name: str = "--nfe") -> int:
    """``nfe`` when it is at most :data:`MAX_NFE`, else a ``ValueError``."""
    if nfe > MAX_NFE:
        raise ValueError(f"{name}={nfe} is too large (at most {MAX_NFE:,} network evaluations); few-step "
                         "samplers need 1-64, dopri5 chooses its own steps")
    return nfe


def check_guidance(guidance: float, name: str = "--guidance") -> float:
    """``guidance`` as a float when it is finite with ``|w| <= MAX_GUIDANCE``, else a ``ValueError``."""
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
            or abs(guidance) > MAX_GUIDANCE:
        raise ValueError(f"{name} must be a finite weight in [-{MAX_GUIDANCE:g}, {MAX_GUIDANCE:g}] (guidance "
                         f"beyond ~10 already leaves the data's range), got {guidance!r}")
    return float(guidance)


def activation_elements(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Elements of the largest output of any sub-module for one sample, measured by running a
    ``meta``-device copy of ``model`` (no memory allocated); 0 when the model cannot run on meta."""
    largest = [0]

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if torch.is_tensor(output):
            largest[0] = max(largest[0], output.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.empty((1, *shape), device="meta"), torch.empty((1,), device="meta"))
    except Exception:  # noqa: BLE001 - a model that cannot run on meta: the estimate falls back
        return 0
    finally:
        for h in handles:
            h.remove()
    return largest[0]


def check_sampling_memory(meta_model: nn.Module, n: int, shape: tuple[int, ...], what: str,
                          device: torch.device | str = "cpu") -> None:
    r"""Check that drawing ``n`` samples at once fits: about 8 sample-sized buffers (state,
    stages of the solver, output) plus 3 of the network's largest activation, per sample, in float32."""
    per_sample = 8 * math.prod(shape) + 3 * activation_elements(meta_model, shape)
    check_memory(4 * n * per_sample, f"{what} ({n:,} samples of shape {tuple(shape)})",
                 "draw fewer samples per call (-n) and concatenate the files", device)


#: Most YAML nodes a recipe may expand to, aliases counted as copies of what they name.
MAX_YAML_NODES = 100_000


def load_yaml_bounded(text: str, where: str) -> object:
    """``yaml.safe_load(text)`` with the alias count (:data:`MAX_YAML_ALIASES`), the nesting depth
    (:data:`MAX_RECIPE_DEPTH`) and the expanded size (:data:`MAX_YAML_NODES`) checked on the node graph
    before any object is built, so an
    alias bomb fails at once. Raises ``ValueError`` (and ``yaml.YAMLError`` for bad syntax)."""
    import yaml

    class Loader(yaml.SafeLoader):
        aliases = 0
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise ValueError(f"{where}: more than {MAX_YAML_ALIASES} YAML aliases (*name); a recipe "
                                     "needs few, write the values out")
            self.depth += 1
            try:
                if self.depth > MAX_RECIPE_DEPTH:
                    raise ValueError(f"{where}: the YAML nests more than {MAX_RECIPE_DEPTH} levels deep; a recipe's "
                                     "settings sit a few levels deep")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expanded_size(root: object, where: str) -> None:
    """Nodes of the YAML graph once aliases are expanded (memoised: linear in the graph)."""
    import yaml

    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise ValueError(f"{where}: a YAML alias refers to itself (recursive anchor); recipes cannot be recursive")
        visiting.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        visiting.discard(key)
        sizes[key] = total
        if total > MAX_YAML_NODES:
            raise ValueError(f"{where}: the YAML expands to more than {MAX_YAML_NODES:,} values (aliases repeat "
                             "what they name); a recipe is a few dozen settings")
        return total

    size(root)
