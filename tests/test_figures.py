"""The plotly figures: built from real training histories, metrics and statistics of tiny SAEs, FigureWidgets in a
notebook kernel and plain figures elsewhere."""

from __future__ import annotations

import nbformat
import numpy as np
import plotly.graph_objects as go
import pytest

from saewidgets.activations import harvest
from saewidgets.analysis import feature_stats
from saewidgets.figures import density_histogram, pareto_frontier, sparsity_frontier, training_curves
from saewidgets.models.tiny import _TRAINING_TEXT
from saewidgets.sae import evaluate_sae, load_sae, save_sae, train_sae


@pytest.fixture(scope="module")
def acts(tiny_gemma):
    return harvest(tiny_gemma, _TRAINING_TEXT, layer=1, progress=False)


@pytest.fixture(scope="module")
def runs(acts):
    """Three tiny SAEs of two architectures with their held-out (here: training) metrics."""
    out = []
    for arch, option in (("topk", {"k": 2}), ("topk", {"k": 8}), ("relu", {"l1": 1.0})):
        sae = train_sae(acts, arch=arch, n_features=32, n_steps=30, batch_size=64, progress=False, **option)
        out.append({"arch": arch, "setting": str(option), "sae": sae, "metrics": evaluate_sae(sae, acts)})
    return out


def test_training_curves_plot_the_history_step_by_step(runs):
    sae = runs[0]["sae"]
    fig = training_curves(sae)
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)  # no kernel here
    assert [t.y for t in fig.data][2] == tuple(h["fve"] for h in sae.history)
    assert fig.data[0].x == tuple(h["step"] for h in sae.history) and len(fig.data) == 4
    assert isinstance(training_curves(sae.history, ["l0"], widget=True), go.FigureWidget)


def test_training_curves_of_a_loaded_sae_say_why_there_is_nothing(runs, tmp_path):
    with pytest.raises(ValueError, match="no training history"):
        training_curves(load_sae(save_sae(runs[0]["sae"], tmp_path / "s")))
    with pytest.raises(ValueError, match=r"no \['lr'\]"):
        training_curves(runs[0]["sae"], ["lr"])


def test_pareto_frontier_keeps_only_points_nothing_beats():
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.65), (5, 0.2), (40, 0.9)]
    assert pareto_frontier(points) == [(5, 0.2), (10, 0.5), (20, 0.7), (40, 0.9)]


def test_sparsity_frontier_draws_one_line_per_architecture_and_the_frontier(runs):
    fig = sparsity_frontier(runs)
    names = [t.name for t in fig.data]
    assert names == ["topk", "relu", "frontier"]
    topk = fig.data[0]
    assert list(topk.x) == sorted(r["metrics"].l0 for r in runs if r["arch"] == "topk")
    expected = pareto_frontier((r["metrics"].l0, r["metrics"].fve) for r in runs)
    assert list(zip(fig.data[2].x, fig.data[2].y)) == expected
    assert fig.layout.xaxis.type == "log"
    pairs = sparsity_frontier([(r["arch"], r["metrics"].to_dict()) for r in runs])  # (arch, dict) pairs too
    assert [t.name for t in pairs.data] == names
    with pytest.raises(ValueError, match="CE numbers need"):
        sparsity_frontier(runs, y="ce_loss_recovered")  # evaluated without the model


def test_density_histogram_counts_every_live_feature_from_metrics_or_statistics(runs, acts, tiny_gemma):
    sae, metrics = runs[2]["sae"], runs[2]["metrics"]
    stats = feature_stats(tiny_gemma, sae, acts, top_k=2, progress=False)
    alive = int((np.asarray(stats.density) > 0).sum())
    from_stats = density_histogram(stats)
    assert sum(from_stats.data[0].y) == alive
    from_metrics = density_histogram(metrics)
    assert sum(from_metrics.data[0].y) == round(sae.cfg.n_features * (1 - metrics.dead_fraction))
    overlay = density_histogram({"topk k=2": runs[0]["metrics"], "relu": metrics})
    assert [t.name.split(" (")[0] for t in overlay.data] == ["topk k=2", "relu"]


def test_in_a_notebook_kernel_the_figures_are_figure_widgets(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from saewidgets.figures import training_curves\n"
            "fig = training_curves([{'step': 1, 'loss': 2.0, 'l0': 3.0, 'fve': 0.5, 'dead': 0.0}])\n"
            "print(type(fig).__name__)"
        )
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert nb.cells[0].outputs[0]["text"].strip() == "FigureWidget"
