"""The sampler template of CONTRIBUTING.md ("Adding a sampler") runs as written: it imports only
public names, registers, and samples through monge.samplers.sample."""

import re
from pathlib import Path

import pytest
import torch

from monge.paths import SCHEDULES
from monge.samplers import SAMPLERS, nfe_for_steps, sample

CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"
F64 = torch.float64


def _template() -> str:
    text = CONTRIBUTING.read_text()
    section = text[text.index("## Adding a sampler"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def my_solver():
    """The template's sampler, registered for one test and removed afterwards."""
    code = _template()
    assert "import" in code and not re.search(r"\b_\w+\b", code.split("\n", 1)[0]), "imports a private name"
    namespace: dict = {}
    exec(compile(code, str(CONTRIBUTING), "exec"), namespace)
    try:
        yield namespace["my_solver"]
    finally:
        SAMPLERS._items.pop("my_solver", None)
        SAMPLERS._meta.pop("my_solver", None)


def test_the_template_registers_and_samples(my_solver):
    assert "my_solver" in SAMPLERS and SAMPLERS.info("my_solver").needs_schedule
    sched = SCHEDULES.build("vp_linear")
    calls = [0]

    def model(x, t):  # a smooth noise prediction
        calls[0] += 1
        return torch.tanh(x + t[:, None])

    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.linspace(1e-3, 1.0, 6, dtype=F64)
    out = sample(model, x, sampler="my_solver", timesteps=ts, schedule=sched, prediction="noise",
                 return_trajectory=True)
    assert out.nfe == calls[0] == nfe_for_steps("my_solver", 5) == 5
    assert out.trajectory.shape == (6, 6, 2) and torch.equal(out.times, ts)
    # with my_option = 1 the template's step is deterministic DDIM
    ddim = sample(model, x, sampler="ddim", timesteps=ts, schedule=sched, prediction="noise")
    torch.testing.assert_close(out.x, ddim.x, rtol=1e-12, atol=1e-12)
    # and its option changes the step
    other = sample(model, x, sampler="my_solver", timesteps=ts, schedule=sched, prediction="noise", my_option=0.5)
    assert not torch.allclose(other.x, out.x)
    assert sample(model, x, sampler="my_solver", nfe=3, schedule=sched, prediction="noise").nfe == 3


def test_the_template_entry_is_gone_after_the_test():
    assert "my_solver" not in SAMPLERS
