import pytest
import torch

from monge.couplings import COUPLINGS, ReflowPairs
from monge.couplings.reflow import load_pairs, save_pairs
from monge.metrics import straightness
from monge.rectify import distill, generate_pairs, reflow
from monge.run.load import load_model
from monge.samplers import sample
from monge.train import Trainer


def test_pairs_roundtrip_and_coupling_keeps_pairs(tmp_path):
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(50, 3, generator=g)
    z1 = 2 * z0 + 1  # paired by a known map
    path = save_pairs(tmp_path / "p.safetensors", z0, z1, {"note": "test"})
    a, b = load_pairs(path)
    assert torch.equal(a, z0) and torch.equal(b, z1)
    c = COUPLINGS.build("reflow", pairs=str(path))
    out = c(torch.randn(32, 3), torch.randn(32, 3), generator=g)
    assert out.x0.shape == (32, 3) and out.weights is None
    torch.testing.assert_close(out.x1, 2 * out.x0 + 1)  # still paired
    # every served noise is a stored one
    assert bool(((out.x0[:, None] == z0[None]).all(-1)).any(1).all())
    mem = ReflowPairs.from_tensors(z0, z1)
    served = mem(torch.randn(8, 3), torch.randn(8, 3), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(served.x1, 2 * served.x0 + 1)


def test_pairs_bad_input(tmp_path):
    with pytest.raises(ValueError, match="pairs file not found"):
        COUPLINGS.build("reflow", pairs=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="same shape"):
        save_pairs(tmp_path / "p.safetensors", torch.randn(4, 2), torch.randn(5, 2))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file at all")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_pairs(bad)
    p = save_pairs(tmp_path / "p.safetensors", torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="sample shape"):
        COUPLINGS.build("reflow", pairs=str(p))(torch.randn(4, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="n=3"):
        generate_pairs(lambda x, t: x, torch.randn(4, 2), 3)


def test_generate_pairs_solves_the_ode():
    # v(x, t) = a x  =>  z1 = e^a z0
    z0, z1 = generate_pairs(lambda x, t: 0.5 * x, torch.randn(64, 2, generator=torch.Generator().manual_seed(0)), 64)
    torch.testing.assert_close(z1, z0 * torch.exp(torch.tensor(0.5)), rtol=1e-4, atol=1e-5)


def _traj_straightness(model, noise):
    out = sample(model, noise, sampler="euler", nfe=32, return_trajectory=True)
    return straightness(out.trajectory, out.times), out.x


def test_reflow_straightens_trajectories(tiny_config, tmp_path):
    cfg = tiny_config(coupling="independent", data={"source": "gaussian", "target": "8gaussians"},
                      model={"name": "mlp", "hidden": 64, "depth": 2},
                      train={"steps": 600, "batch_size": 256, "lr": 3e-3, "checkpoint_every": 0,
                             "eval_samples": 200, "progress": False, "log_every": 100})
    first = Trainer(cfg).fit()
    ckpt = first.run_dir / "checkpoint.safetensors"
    out = reflow(ckpt, n_pairs=2000, steps=600, out_dir=tmp_path / "rf", distill=True,
                 sampler="rk4", nfe=64, distill_steps=400)
    assert (out / "checkpoint.safetensors").is_file() and (out / "reflow_pairs.safetensors").is_file()
    m1, _ = load_model(ckpt)
    m2, cfg2 = load_model(out)
    assert cfg2.coupling.name == "reflow"
    noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(123))
    s1, x1 = _traj_straightness(m1, noise)
    s2, x2 = _traj_straightness(m2, noise)
    # 1-RF on 8 Gaussians bends a lot (measured S 1.77); reflow removes nearly all of it (0.01)
    assert s2 < 0.1 * s1, (s1, s2)
    # one-step Euler of the reflowed model lands nearer its own ODE endpoint than 1-RF's does
    e1 = (sample(m1, noise, sampler="euler", nfe=1).x - x1).square().sum(1).mean().item()
    e2 = (sample(m2, noise, sampler="euler", nfe=1).x - x2).square().sum(1).mean().item()
    assert e2 < 0.1 * e1, (e1, e2)
    # distilled: one step hits the reflowed model's endpoint closer still
    m3, _ = load_model(out / "distill")
    e3 = (sample(m3, noise, sampler="euler", nfe=1).x - x2).square().sum(1).mean().item()
    assert e3 < 0.5 * e2, (e2, e3)
    assert "| euler | 1 |" in (out / "distill" / "eval.md").read_text()  # the distilled model is evaluated
    print(f"straightness 1-RF {s1:.3f} 2-RF {s2:.3f}; 1-step error 1-RF {e1:.3f} 2-RF {e2:.3f} distilled {e3:.3f}")


def test_distill_fits_a_linear_map():
    # pairs z1 = 3 z0: a linear 'model' v(x, 0) = W x can reach zero loss with W = 2 I
    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 2, bias=False)

        def forward(self, x, t):
            return self.w(x)

    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(512, 2, generator=g)
    m = Lin()
    before = m.w.weight.detach().clone()
    s = distill(m, z0, 3 * z0, steps=800, lr=2e-2, generator=g, grad_clip=None)
    assert torch.equal(m.w.weight, before)  # the teacher is untouched
    torch.testing.assert_close(s.w.weight.detach(), 2 * torch.eye(2), atol=2e-2, rtol=0)
