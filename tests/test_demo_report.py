import math

import numpy as np
import ot
import torch

from monge.data.sources import build_source
from monge.demo_report import MMD_NOTE, conclusion, explanations, w2_noise_floor
from monge.evaluate import EvalRow
from monge.plots import metric_curves


def _rows(w2s, adaptive, express=None):
    rows = [EvalRow("euler", k, w, 0.0, 0.0) for k, w in zip((1, 2, 4, 8), w2s, strict=True)]
    rows.append(EvalRow("dopri5", adaptive[0], adaptive[1], 0.0, 0.0))
    if express:
        rows += [EvalRow("expressway@0.5+euler", k, w, 0.0, 0.0) for k, w in zip((1, 2, 4, 8), express, strict=True)]
    return rows


def test_noise_floor_is_pot_on_the_same_draws():
    tgt = build_source("moons")
    mean, std = w2_noise_floor(tgt, 300, draws=3, seed=5)
    g = torch.Generator().manual_seed(5)
    ref = []
    for _ in range(3):
        a, b = tgt.sample(300, generator=g).double().numpy(), tgt.sample(300, generator=g).double().numpy()
        w = np.full(300, 1 / 300)
        ref.append(math.sqrt(ot.emd2(w, w, ot.dist(a, b))))
    assert math.isclose(mean, float(np.mean(ref)), rel_tol=1e-9)
    assert math.isclose(std, float(np.std(ref, ddof=1)), rel_tol=1e-9)
    assert w2_noise_floor(tgt, 1200, draws=3, seed=5)[0] < mean  # shrinks with the sample size


def test_conclusion_states_the_figures():
    rows = {
        "I-CFM": _rows([1.5, 1.0, 0.6, 0.33], (416, 0.227)),
        "OT-CFM": _rows([0.28, 0.26, 0.25, 0.25], (182, 0.245)),
    }
    text = conclusion(rows, (0.05, 0.005))
    assert "At 1 NFE (euler), OT-CFM reaches W2 0.280 against I-CFM's 1.500 (5.4x lower)" in text
    assert "OT-CFM reaches 0.245 at 182 NFE and I-CFM 0.227 at 416 NFE, a difference beyond the noise" in text
    assert "0.050 ± 0.005" in text and "still differ beyond the noise" in text
    same = conclusion(rows, (0.05, 0.01))  # gap 0.018 <= 2 x 0.01
    assert "within the noise" in same and "converges to about the same distribution" in same


def test_explanations_only_for_rows_that_look_wrong():
    ok = {"I-CFM": _rows([1.5, 1, 0.6, 0.3], (400, 0.30)), "OT-CFM": _rows([0.3, 0.3, 0.3, 0.3], (180, 0.29))}
    assert explanations(ok, (0.05, 0.01)) == []
    odd = {"I-CFM": _rows([1.5, 1, 0.6, 0.3], (400, 0.22)),
           "semidiscrete_ot": _rows([0.3, 0.3, 0.3, 0.3], (180, 0.25), express=[0.9, 0.9, 0.9, 0.9])}
    notes = explanations(odd, (0.05, 0.01))
    assert len(notes) == 2
    assert "expressway rows" in notes[0] and "W2 0.900 against 0.300" in notes[0]
    assert "I-CFM better than semidiscrete_ot with the adaptive solver" in notes[1] and "+0.030" in notes[1]
    assert "can be slightly negative" in MMD_NOTE


def test_expressway_rows_are_their_own_curve():
    curves = metric_curves(_rows([1, 2, 3, 4], (100, 0.5), express=[5, 6, 7, 8]))
    assert curves == [("euler", [1, 2, 4, 8], [1, 2, 3, 4]),
                      ("expressway@0.5+euler", [1, 2, 4, 8], [5, 6, 7, 8])]


def test_demo_panels_are_the_table_samples(tmp_path):
    from monge.demo import run_demo

    torch.set_num_threads(1)
    result = run_demo(tmp_path, couplings=("independent", "exact_ot"), steps=20, batch_size=32, samples=64,
                      progress=False)
    for label, rows in result.rows.items():
        assert result.panel_nfe[label] == next(r.nfe for r in rows if r.sampler == "dopri5")
    text = result.report.read_text()
    assert "**Conclusion.**" in text and "W2 noise floor at 64 points" in text and "MMD²: squared" in text
    for png in ("w2_vs_nfe.png", "samples.png", "trajectories.png"):
        assert (tmp_path / png).is_file() and f"]({png})" in text


def test_figures_keep_their_titles(tmp_path, monkeypatch):
    import monge.plots as plots

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    x = torch.randn(50, 2)
    plots.plot_samples({"A": {"euler, 1 NFE": x, "dopri5 (adaptive)": x}}, x, tmp_path / "s.png", {"A": "12 NFE"},
                       title="moons: 50 samples")
    plots.plot_trajectories({"A": torch.randn(5, 8, 2)}, tmp_path / "t.png", target=x, title="paths")
    assert [f._suptitle.get_text() for f in figures] == ["moons: 50 samples", "paths"]
    assert figures[0].axes[1].get_title() == "dopri5 (adaptive)\n(12 NFE)"
    assert "target" in [t.get_text() for t in figures[1].axes[0].get_legend().get_texts()]
