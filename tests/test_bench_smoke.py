"""Smoke runs of the benchmark scripts (tiny settings, a few steps)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from benchload import load_bench


@pytest.fixture(scope="module")
def peers():
    return load_bench("peers")


def test_same_batches_same_model_give_same_field(peers, tmp_path):
    """monge `independent` through the Trainer and the plain peer loop with an identical loss see
    the same batches and initial weights, so after training their fields agree."""
    s = peers.Settings(steps=5, batch_size=32, n_eval=64, nfes=(1,), adaptive=False)
    trained = peers.train_method("independent", "25gaussians", s, tmp_path)

    def loss(model, x0, x1, t):
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0
        return (model(xt, t) - (x1 - x0)).square().mean()

    model = peers._new_model(s)
    peers._plain_loop(model, s, "25gaussians", loss)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((16,), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x, t), model(x, t), rtol=1e-4, atol=1e-5)


def test_run_report_and_skips(peers, tmp_path):
    s = peers.Settings(steps=3, batch_size=32, n_eval=64, nfes=(1, 2), adaptive=False)
    res = peers.run(["independent", "no_such_coupling"], ["25gaussians"], s, log=lambda m: None)
    entries = res["tasks"]["25gaussians"]
    assert [e["method"] for e in entries] == ["independent", "no_such_coupling"]
    assert "skipped" in entries[1] and "skipped" not in entries[0]
    assert [r["nfe"] for r in entries[0]["rows"]] == [1, 2]
    text = peers.format_report(res, None, "cmd")
    assert "skipped" in text and "W2 @1" in text and "Mode mixture" in text
    assert peers.plot_w2(res, tmp_path / "w2.png").stat().st_size > 0


def test_evaluate_matches_independent_recomputation(peers, tmp_path):
    """The NFE-1 row: one Euler step x0 + v(x0, 0); W2 by POT and the mixture rate by hand."""
    import ot

    s = peers.Settings(steps=3, batch_size=32, n_eval=128, nfes=(1,), adaptive=False)
    trained = peers.train_method("exact_ot", "25gaussians", s, tmp_path)
    (row,) = peers.evaluate(trained, "25gaussians", s)
    g = torch.Generator().manual_seed(s.seed + 12345)
    src, tgt = (peers.build_source(n) for n in peers.TASKS["25gaussians"])
    x0, ref = src.sample(s.n_eval, generator=g), tgt.sample(s.n_eval, generator=g)
    with torch.no_grad():
        x1 = (x0 + trained.model(x0, torch.zeros(s.n_eval))).double()
    w2 = float(ot.emd2([], [], ot.dist(x1.numpy(), ref.double().numpy()))) ** 0.5
    assert row["nfe"] == 1
    assert abs(row["w2"] - w2) < 1e-5
    grid = torch.stack(torch.meshgrid(torch.arange(-2.0, 3.0), torch.arange(-2.0, 3.0), indexing="ij"), -1)
    d = torch.cdist(x1, grid.reshape(-1, 2).double()).min(1).values
    assert row["mixture"] == pytest.approx(float((d > 3 * 0.1).double().mean()), abs=1e-12)


def test_assemble(tmp_path):
    assemble = load_bench("assemble")
    res = tmp_path / "results"
    res.mkdir()
    (res / "ot_solvers.md").write_text("# OT\n\ntable\n")
    (res / "peers.md").write_text("# Peers\n\n![plot](p.png)\n")
    text = assemble.assemble(res, tmp_path / "B.md")
    assert text.index("## Peers") < text.index("## OT")
    assert "](results/p.png)" in text
    assert "python bench/samplers.py" in text  # missing section listed with its command


def test_samplers_quick_sections(tmp_path):
    """The samplers bench in quick mode, one section at a time (the second keeps the first's text);
    a trained-model row is recomputed by hand: Euler steps of the network, POT's W2, an RK4 reference."""
    import dataclasses

    import ot

    bench = load_bench("samplers")
    s = dataclasses.replace(bench.QUICK, n=64, n_fit=16, steps=20, nfes=(5, 8))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: much faster on a busy machine
    try:
        bench.run(["oracle"], s, tmp_path, log=lambda m: None)
        (sec, rows), = bench.run(["trained"], s, tmp_path, log=lambda m: None).values()
    finally:
        torch.set_num_threads(threads)
    text = (tmp_path / "samplers.md").read_text()
    assert text.index("<!-- section:oracle -->") < text.index("<!-- section:trained -->")
    assert text.count("goal check, fitted schedules at NFE 5") == 2
    assert text.count("**Overall, `optimized`**") == 2 and text.count("**Overall, `decoupled`**") == 2
    assert (tmp_path / "samplers.png").stat().st_size > 0 and (tmp_path / "samplers_trained.png").stat().st_size > 0
    assert {(r.sampler, r.grid, r.nfe) for r in rows} == {(a, g, n) for a in s.samplers for g in s.grids
                                                          for n in s.nfes}
    row = next(r for r in rows if (r.sampler, r.grid, r.nfe) == ("euler", "uniform", 8))
    x = sec.x0.clone()
    with torch.no_grad():
        for k in range(8):
            x = x + sec.network(x, torch.full((x.shape[0],), k / 8, dtype=x.dtype)) / 8
        y, h = sec.x0.clone(), 1.0 / 400  # RK4 reference flow map
        f = lambda z, t: sec.network(z, torch.full((z.shape[0],), t, dtype=z.dtype))  # noqa: E731
        for k in range(400):
            t = k * h
            k1 = f(y, t)
            k2 = f(y + h / 2 * k1, t + h / 2)
            k3 = f(y + h / 2 * k2, t + h / 2)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + f(y + h * k3, t + h))
    torch.testing.assert_close(sec.ref, y, rtol=0, atol=2e-3)  # quick mode: dopri5 at tolerance 1e-6
    w2 = float(ot.emd2([], [], ot.dist(x.numpy(), sec.data.numpy()))) ** 0.5
    assert row.used_nfe == 8 and abs(row.w2 - w2) < 1e-9
    assert abs(row.path_err - float((x - sec.ref).square().sum(1).mean().sqrt())) < 1e-9
    assert f"{row.w2:.3f} / {row.path_err:.3f}" in text


def test_peers_samplers_match_diffusers_quick():
    """monge's DDIM on the discrete DDPM schedule reproduces diffusers' DDIMScheduler on the oracle,
    and the reported W2 is POT's exact W2 of those samples."""
    pytest.importorskip("diffusers")
    bench = load_bench("peers_samplers")
    rows, info = bench.run([3], n=64, repeats=1, fit_noise=16, fit_steps=8, cases=bench.CASES[:2])
    assert [(r["sampler"], r["nfe"]) for r in rows] == [("DDIM", 3), ("DPM-Solver++ 2M", 3)]
    for r in rows:
        assert r["max_diff"] < 1e-5
        assert abs(r["w2_monge"] - r["w2_diffusers"]) < 1e-4
        assert r["path_optimized"] > 0 and r["time_monge"] > 0
    text = bench.report(rows, info, 64, "cmd", 1.0)
    assert text.count("| DDIM | 3 |") == 1 and "Same samples" in text


def test_couplings_bench_quick(tmp_path, monkeypatch):
    """bench/couplings.py end to end at one small batch: every coupling and the pipelined rows."""
    bench = load_bench("couplings")
    threads = torch.get_num_threads()
    out = tmp_path / "couplings.md"
    monkeypatch.setattr(sys, "argv", ["couplings.py", "--batches", "64", "--repeats", "1", "--light-repeats", "2",
                                      "--pairing-workers", "1", "--out", str(out)])
    bench.main()
    text = out.read_text()
    for name, _ in bench.COUPLINGS_BENCHED:
        assert f"| {name} | " in text
    assert "| exact_ot | 1 | " in text and "| immiscible | 1 | " in text and "| entropic | 1 | " in text
    assert torch.get_num_threads() == threads  # restored after the pipelined rows
    ratio = float(text.split("| independent | ")[1].split(" | ")[1])
    assert ratio == 1.0


def test_couplings_quality_quick(tmp_path):
    """The quality bench trains, evaluates on held-out points and writes its report; the
    verdict against ``independent`` follows the W2 spread."""
    q = load_bench("couplings_quality")
    s = q.Settings(steps=3, n_train=64, n_test=40, n_eval=32, eval_seeds=2, hidden=16, depth=1, nfes=(1,))
    results = q.run(["moons"], ["independent", "exact_ot"], s, log=lambda _: None)
    rows = results["moons"]["rows"]
    assert set(rows) == {"independent", "exact_ot"} and set(rows["exact_ot"]["scores"]) == {"euler 1", "adaptive"}
    text = q.report(results, s, "cmd", 1.0)
    assert "## moons" in text and "| exact_ot |" in text
    base = {"scores": {"adaptive": (1.0, 0.01, 10)}}
    assert q._verdict({"scores": {"adaptive": (1.01, 0.01, 10)}}, base, 0.1) == "within noise"
    assert q._verdict({"scores": {"adaptive": (1.5, 0.01, 10)}}, base, 0.1).startswith("worse by 0.500")


def test_couplings_quality_conditional_quick():
    """The conditional section trains class-conditional MLPs with labels passed to the coupling
    and reports W2 per class with both goals' verdicts."""
    q = load_bench("couplings_quality")
    s = q.Settings(steps=3, n_train=80, n_test=80, n_eval=8, eval_seeds=1, hidden=16, depth=1, nfes=(1,),
                   adaptive=False)  # dopri5 on untrained models is the slow part
    rows = q.run_conditional(["independent", "exact_ot", "conditional_ot"], s, log=lambda _: None)
    assert set(rows["conditional_ot"]["scores"]) == {"euler 1"}
    text = q.report_conditional(rows, s, "cmd", 1.0)
    assert "| conditional_ot |" in text and "W2 per class" in text
    assert q.parse_spec("wcfm:relative_eps=4,marginal_correction=false") == (
        "wcfm", {"relative_eps": 4, "marginal_correction": False})


def test_couplings_quality_c2ot_moons_tasks_quick():
    """C2OT's 8gaussians -> moons task, by class and with a continuous condition, with the W2 floor."""
    q = load_bench("couplings_quality")
    s = q.Settings(steps=3, n_train=80, n_test=80, n_eval=8, eval_seeds=1, hidden=16, depth=1, nfes=(1,),
                   adaptive=False)
    rows = q.run_conditional(["independent", "conditional_ot", "conditional_semidiscrete_ot:n_targets=16,tol=0.2"], s,
                             log=lambda _: None, task_name="moons")
    text = q.report_conditional(rows, s, "cmd", 1.0)
    assert "C2OT's task" in text and "W2 floor" in text and "| conditional_ot |" in text
    assert "| conditional_semidiscrete_ot:n_targets=16,tol=0.2 |" in text
    rows = q.run_conditional(["independent", "conditional_ot:condition=continuous,weight=10"], s,
                             log=lambda _: None, task_name="moons-x")
    text = q.report_conditional(rows, s, "cmd", 1.0)
    assert "x-coordinate" in text and "| conditional_ot:condition=continuous,weight=10 |" in text


def test_semidiscrete_convergence_quick(tmp_path, monkeypatch):
    bench = load_bench("semidiscrete_convergence")
    out = tmp_path / "conv.md"
    monkeypatch.setattr(sys, "argv", ["semidiscrete_convergence.py", "--quick", "--sets", "grid40",
                                      "--max-iter", "60", "--out", str(out)])
    bench.main()
    rows = [line for line in out.read_text().splitlines() if line.startswith("| grid40")]
    assert len(rows) == 2 and "| True |" in rows[0] and "| False |" in rows[1]


def test_semidiscrete_vs_ott_quick(tmp_path, monkeypatch):
    """The OTT comparison at a tiny size (OTT is skipped when it is not installed); every scored
    curve is dumped, and the table's times are read off those curves."""
    import json

    bench = load_bench("semidiscrete")
    out, dump = tmp_path / "sd.md", tmp_path / "curves.jsonl"
    monkeypatch.setattr(sys, "argv", ["semidiscrete.py", "--no-search", "--cases", "clustered:300:2", "--budget", "1",
                                      "--ott-lrs", "0.01", "--snaps", "3", "--out", str(out), "--dump", str(dump)])
    bench.main()
    text = out.read_text()
    assert "| chi2 level | rms | monge s |" in text
    curves = json.loads(dump.read_text().splitlines()[0])["curves"]
    monge = next(v for k, v in curves.items() if k.startswith("monge"))
    first = min(sec for sec, _, chi2, _ in monge if chi2 <= 0.3)  # 300 2D targets get there within 1 s
    row = next(line for line in text.splitlines() if line.startswith("| 0.3 |"))
    assert row.split("|")[3].strip() == f"{first:.1f}"


def test_inverse_bench_quick(tmp_path):
    """The inverse-problems bench with tiny settings; one W2 recomputed by hand (the solver again,
    POT's exact W2 against the same exact posterior samples)."""
    import ot

    from monge.inverse import gmm_posterior, pigdm
    from monge.paths import LinearPath

    bench = load_bench("inverse")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "inverse.md"
        text = bench.main(["--n", "40", "--nfes", "3", "--solvers", "pigdm", "pnp_flow", "--digits-steps", "5",
                           "--digits-n", "6", "--digits-nfes", "2", "--classifier-epochs", "1",
                           "--cache", str(tmp_path / "cache"), "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert out.read_text() == text
    assert "Best at <= 100 NFE" in text and "2x super-resolution" in text and "| pnp_flow | 2 |" in text
    assert (tmp_path / "inverse_digits.png").stat().st_size > 0 and "](inverse_digits.png)" in text
    s = bench.Settings(n=40, nfes=(3,), solvers=("pigdm",), digits=False)
    (row,) = bench.run_gmm(s, log=lambda m: None)[0]["rows"]
    prior, op, y, sigma, _ = bench.gmm_cases(0)["2D"]
    post = gmm_posterior(prior, op, y, sigma)
    x = pigdm(prior.field(), LinearPath(), op, y.expand(40, -1), sigma_y=sigma, nfe=3,
              generator=torch.Generator().manual_seed(3)).double().numpy()
    w2 = []
    for i in range(s.floor_seeds):
        exact = post.sample(40, torch.Generator().manual_seed(100 + 2 * i)).double().numpy()
        w2.append(float(ot.emd2([], [], ot.dist(x, exact))) ** 0.5)
    assert row["w2"] == pytest.approx(sorted(w2)[len(w2) // 2], abs=1e-9)


def test_few_step_quick(tmp_path, monkeypatch):
    """bench/few_step.py: every method trains at the equal wall-time budget and is scored at 1, 2, 4 NFE."""
    bench = load_bench("few_step")
    out = tmp_path / "few_step.md"
    monkeypatch.setattr(sys, "argv", ["few_step.py", "--quick", "--reflow", "--out", str(out)])
    bench.main()
    text = out.read_text()
    assert "mean_flow + exact_ot" in text and "shortcut + independent" in text and "W2 @4" in text
    assert "**Goal (best 1-NFE flow map within 1.2x" in text
    assert "2-RF + distill (1 step)" in text and "**Against reflow + distillation**" in text


def test_global_scope_quick(tmp_path):
    """bench/global_scope.py under 2 gloo processes: the reported pair costs of the first timed step
    recomputed by SciPy on the gathered batch (one assignment of 2b points for the global scope, one
    per rank's slice for the local scope, the drawn order for independent)."""
    import dataclasses

    import numpy as np
    from scipy.optimize import linear_sum_assignment

    bench = load_bench("global_scope")
    s = dataclasses.replace(bench.QUICK, batches=(24,), steps=2, dump=str(tmp_path / "dump"))
    res = bench.launch(s, tmp_path, timeout=240)
    assert res["world"] == 2 and [(r["case"], r["b"]) for r in res["results"]] == [("2D", 24), ("64D", 24)]

    def optimum(x0: torch.Tensor, x1: torch.Tensor) -> float:
        c = torch.cdist(x1.double().flatten(1), x0.double().flatten(1)).square().numpy()
        rows, cols = linear_sum_assignment(c)
        return float(c[rows, cols].sum())

    for result in res["results"]:
        batch = torch.load(tmp_path / "dump" / f"{result['case']}-24.pt")
        x0, x1 = batch["x0"], batch["x1"]
        assert x0.shape[0] == 48
        cost = {key: rec["cost"][0] for key, rec in result["rec"].items()}
        local = optimum(x0[:24], x1[:24]) + optimum(x0[24:], x1[24:])
        assert cost["exact_ot/global"] == pytest.approx(optimum(x0, x1), rel=1e-5)
        assert cost["exact_ot/local"] == pytest.approx(local, rel=1e-5)
        assert cost["independent/local"] == pytest.approx(float((x0.double() - x1.double()).square().sum()), rel=1e-6)
        assert cost["exact_ot/global"] <= cost["exact_ot/local"] * (1 + 1e-6)
        for rec in result["rec"].values():
            assert len(rec["step"]) == 2 and all(0 < p < t for p, t in zip(rec["pairing"], rec["step"], strict=True))
        assert all(abs(c - ref) <= 1e-6 * ref for c, ref in result["checks"])
    rows = [row for result in res["results"] for row in bench.summarise(result)]
    text = bench.report(rows, s, "cmd", 0.1, res["world"])
    assert text.count("| exact_ot | global | scipy |") == 2 and "## Notes" in text
    assert np.isclose(rows[2].extra["cost_ratio"], rows[2].cost / rows[1].cost)


def test_coupling_cost_bench_runs_and_measures_the_kept_noise():
    cost = load_bench("coupling_cost")
    rows = cost.time_steps(3, 32, rounds=2)
    by = {r["coupling"]: r for r in rows}
    assert set(by) == {label for label, _, _ in cost.TIMED}
    assert by["independent"]["x"] == 1.0 and all(r["s"] > 0 for r in rows)
    assert by["wcfm"]["err"] < 1e-4 and by["wcfm"]["iters"] >= 1 and by["exact_ot"]["iters"] is None
    g = torch.Generator().manual_seed(0)
    assert cost.gaussian_w2(torch.randn(4096, 3, generator=g)) < 0.1
    assert cost.gaussian_w2(torch.randn(4096, 3, generator=g) * 0.5) == pytest.approx(0.5 * 3**0.5, abs=0.05)
    data = torch.randn(2000, 16, generator=g)
    plain = cost.knn_marginal(data, 4, False, 1024, 256, g)
    fixed = cost.knn_marginal(data, 4, True, 1024, 256, g)
    assert plain["second"] < 0.95 and fixed["second"] == pytest.approx(1.0, abs=0.02)
    assert plain["gain"] > fixed["gain"] > 0.1


def test_images_bench_tiny(tmp_path):
    """bench/images.py end to end at tiny settings (pixel U-Net and latent MLP on digits): one JSON line
    per cell and space, finished cells skipped on a rerun, and a reported Fréchet recomputed by hand
    from the cell's checkpoint (one Euler step x + v(x, 0) of the EMA model on the cell's noise)."""
    import dataclasses

    from monge.metrics.frechet import classifier_frechet_distance
    from monge.run.load import load_model

    bench = load_bench("images")
    assemble = load_bench("assemble")
    s = dataclasses.replace(
        bench.QUICK, datasets=("digits",), methods=("independent", "sd_hard", "flow_map"), pixel_steps=2,
        latent_steps=4, segments=2, unet_channels=(8, 16), ae_channels=(8, 16), ae_steps=3, n_eval=32, n_curve=16,
        curve_nfe=2, nfes=(1,), adaptive_tol=1e-2, sd_max_time=1.0, classifier_epochs=1)
    threads = torch.get_num_threads()
    try:
        records = bench.run(s, tmp_path, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    cells = [r for r in records if r["kind"] == "cell"]
    assert sorted((r["space"], r["method"]) for r in cells) == sorted(
        (space, m) for space in ("pixel", "latent") for m in s.methods)
    assert sum(r["kind"] == "reference" for r in records) == 2
    for r in cells:
        assert [step for step, _ in r["curve"]] == ([1, 2] if r["space"] == "pixel" else [2, 4])
        assert [row["setting"] for row in r["rows"]] == (["mean_flow"] if r["method"] == "flow_map"
                                                         else ["euler", "adaptive"])
    sd = next(r for r in cells if r["method"] == "sd_hard" and r["space"] == "pixel")
    assert sd["fit"]["n_targets"] == 1438 and sd["prepare_seconds"] > 0

    lines = (tmp_path / "results.jsonl").read_text().count("\n")
    assert len(bench.run(s, tmp_path, log=lambda m: None)) == len(records)  # nothing retrained
    assert (tmp_path / "results.jsonl").read_text().count("\n") == lines

    ind = next(r for r in cells if r["method"] == "independent" and r["space"] == "pixel")
    model, _ = load_model(tmp_path / "runs" / "digits-pixel-independent-s0")
    ctx = bench.load_data("digits", s, tmp_path / "cache")
    x = bench.eval_noise((1, 16, 16), s.n_eval, 0)
    with torch.no_grad():
        x1 = (x + model.eval()(x, torch.zeros(len(x)))).clamp(-1, 1)
    fd = classifier_frechet_distance(x1, ctx.test.data, ctx.classifier)
    assert ind["rows"][0]["nfe"] == 1 and ind["rows"][0]["frechet"] == pytest.approx(fd, rel=1e-5)

    # bench/images_field.py on the same cells: samples of each, and the field error of the cells with an
    # exact field (independent, sd_hard) at every time, on the coupling's points and the net's own path
    field = load_bench("images_field")
    body = field.run(dataclasses.replace(s, methods=("independent", "sd_hard")), tmp_path,
                     field.Options(points=8, traj_nfe=4, sample_nfes=(1,)), log=lambda m: None)
    for method in ("independent", "sd_hard"):
        assert f"| {method}, Euler 1 |" in body and f"| {method}, dopri5 0.0001 (" in body
        for where in ("coupling", "own trajectory"):
            row = next(line for line in body.splitlines() if line.startswith(f"| {method}, {where} |"))
            assert row.count("(") == len(field.TIMES)
            if method == "independent" or where == "coupling":  # the coupling's own points are all reached
                assert "nan" not in row and "reached" not in row
    with pytest.raises(SystemExit, match="velocity cells only"):
        field.run(s, tmp_path, field.Options(points=8, traj_nfe=4, sample_nfes=(1,)))

    text = bench.report(records, s, "cmd")
    out = tmp_path / "images.md"
    out.write_text(text)
    headline, _ = assemble.read_headline(out)
    assert headline.met == "n/a" and headline.goal.startswith("quick run")
    assert "## digits, pixel space" in text and "## digits, latent space" in text
    assert "| semidiscrete_ot (hard) |" in text and "**Novelty**" in text


def test_images_bench_latent_unet_settings():
    """``--latent-model unet:C1,C2`` puts a U-Net of the latent shape in latent cells and enters the run
    id; the run id of default settings stays as recorded (the latent grid of images_latent.md)."""
    import dataclasses

    from monge.models import build_model
    from monge.models.unet import UNet

    bench = load_bench("images")
    grid = dataclasses.replace(bench.Settings(), latent_steps=8000)
    assert grid.run_id() == "11e626360670"  # the id in the results.jsonl of bench/results/images_latent.md
    s = bench.settings_from(bench.parser().parse_args(["--latent-model", "unet:8,16", "--latent-steps", "8000"]))
    assert (s.latent_model, s.latent_unet_channels) == ("unet", (8, 16)) and s.run_id() != grid.run_id()
    assert bench.latent_net(s) == "U-Net channels [8, 16]" and bench.latent_net(grid) == "MLP 3x512"
    with pytest.raises(SystemExit, match="choose mlp or unet"):
        bench.settings_from(bench.parser().parse_args(["--latent-model", "transformer"]))

    ctx = SimpleNamespace(name="digits", spec={"name": "digits", "size": 16})
    config = bench.make_config(ctx, "latent", "independent", 0, s, Path("unused"), 0.0)
    net = build_model(config.model.name, config.model.params, (4, 4, 4))
    assert isinstance(net, UNet) and net.channels == (8, 16)
    assert net(torch.zeros(2, 4, 4, 4), torch.zeros(2)).shape == (2, 4, 4, 4)


def test_images_bench_kl_autoencoder_settings() -> None:
    """``--ae-kl`` makes the bench's autoencoder a VAE: it enters the autoencoder id (so a plain and a
    KL autoencoder never share a cache entry or a run folder) and the run id; at its default both ids
    stay as recorded."""
    import dataclasses

    bench = load_bench("images")
    plain = bench.Settings()
    assert plain.autoencoder_id() == "b9228920b3db"  # the cache name of the recorded latent runs
    s = bench.settings_from(bench.parser().parse_args(["--ae-kl", "1e-3"]))
    assert s.ae_kl == 1e-3
    assert s.autoencoder_id() != plain.autoencoder_id() and s.run_id() != plain.run_id()
    assert dataclasses.replace(s, ae_kl=0.0).autoencoder_id() == plain.autoencoder_id()
    ctx = SimpleNamespace(name="textures", spec={"name": "textures", "size": 16})
    config = bench.autoencoder_config(ctx, s, Path("out"))
    assert config.model.params["kl"] == 1e-3 and config.name == f"textures-autoencoder-{s.autoencoder_id()}"
    plain_config = bench.autoencoder_config(ctx, plain, Path("out"))
    assert plain_config.name != config.name and "kl" not in plain_config.model.params


def test_images_bench_path_and_time_settings() -> None:
    """``--path NAME[:key=value,...]`` sets the flows' path (not the autoencoder's) and
    ``--time-sampling`` the velocity models' training times; at their defaults the run id stays as
    recorded, and a malformed value stops before any training."""
    bench = load_bench("images")
    assert bench.Settings(pixel_steps=3000, segments=6).run_id() == "4cd3e2374d37"  # images_pixel.md
    assert bench.path_config("linear") == {"name": "linear", "sigma": 0.0}
    s = bench.settings_from(bench.parser().parse_args(["--path", "stochastic_interpolant:a=0.1"]))
    assert s.run_id() != bench.Settings().run_id() and s.autoencoder_id() == bench.Settings().autoencoder_id()
    ctx = SimpleNamespace(name="digits", spec={"name": "digits", "size": 16})
    config = bench.make_config(ctx, "pixel", "independent", 0, s, Path("out"), 0.0)
    assert config.path.name == "stochastic_interpolant" and config.path.params == {"a": 0.1}
    for bad, words in (("linear:sigma", "not key=value"), ("linear:sigma=x", "not a number")):
        with pytest.raises(SystemExit, match=words):
            bench.settings_from(bench.parser().parse_args(["--path", bad]))
    # --time-sampling: the velocity cells' training times; a flow map draws its own
    s = bench.settings_from(bench.parser().parse_args(["--time-sampling", "logit_normal:loc=0.5"]))
    assert s.run_id() != bench.Settings().run_id()
    config = bench.make_config(ctx, "pixel", "sd_hard", 0, s, Path("out"), 0.0)
    assert config.train.time_sampling.name == "logit_normal" and config.train.time_sampling.params == {"loc": 0.5}
    assert bench.make_config(ctx, "pixel", "flow_map", 0, s, Path("out"), 0.0).train.time_sampling.name == "uniform"


def test_images_bench_shortcut_cells_take_powers_of_two():
    """A shortcut model samples only at its trained step counts: the bench's 10-NFE column gets 8
    steps and says so (the NFE returned), 4 stays 4."""

    class Jump(torch.nn.Module):  # u(x, t, r) = -x: any two-time net will do
        second_time = True

        def forward(self, x, t, y=None, r=None):
            return -x

    bench = load_bench("images")
    objective = SimpleNamespace(sampler_kind="shortcut", sampler_options=lambda: {"max_steps": 128})
    trainer = SimpleNamespace(objective=objective, target=None)
    noise = torch.randn(8, 2)
    assert [bench.draw(Jump(), trainer, noise, n, bench.Settings())[1] for n in (1, 4, 10)] == [1, 4, 8]


def test_images_bench_goal_compares_the_same_seed():
    """A deficit that every seed shows fails the goal even when a seed spread shared by both methods
    would hide it (textures, pixel: +7.0 and +7.6 adaptively); a tie on each seed passes."""
    bench = load_bench("images")

    def cell(seed, values):
        return {"seed": seed, "rows": [{"setting": "euler", "nfe": 4, "frechet": values[0]},
                                       {"setting": "adaptive", "nfe": 80, "frechet": values[1]}]}

    ind = [cell(0, (420.0, 9.8)), cell(1, (406.0, 4.1))]
    worse = {"independent": ind, "sd_entropic": [cell(0, (275.0, 16.9)), cell(1, (271.0, 11.7))]}
    assert bench.paired_differences(worse, "sd_entropic")["adaptive"] == pytest.approx([7.1, 7.6])
    ok, parts = bench.goal_check(worse, "sd_entropic")
    assert not ok and "across seeds: margin" in parts[1] and "same seed: no" in parts[1]
    tied = {"independent": ind, "sd_entropic": [cell(0, (275.0, 9.0)), cell(1, (271.0, 4.6))]}
    assert bench.goal_check(tied, "sd_entropic")[0]
    one_seed = {"independent": ind[:1], "sd_entropic": [cell(0, (275.0, 9.0))]}
    ok, parts = bench.goal_check(one_seed, "sd_entropic")
    assert ok and "same seed" not in parts[0]
