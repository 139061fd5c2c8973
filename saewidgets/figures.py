"""Plotly figures of an SAE's training and quality: the charts people would rather look at than read.

- `training_curves` — loss, L0, variance explained and dead fraction over the steps of ``sae.history``;
- `sparsity_frontier` — L0 against variance explained (or CE loss recovered) for several SAEs, one line per
  architecture, with the frontier no SAE beats;
- `density_histogram` — how often each feature fires (log10 density), from `SAEMetrics` or `FeatureStats`;
- `scaling_laws` — loss against training FLOPs for every run of a sweep, the compute-optimal frontier and the
  fitted power laws, and the compute-optimal number of features and steps (a `ScalingFit`).

Each returns a ``plotly.graph_objects.FigureWidget`` inside a notebook kernel (live in JupyterLab, Notebook 7,
VS Code, Colab) and a plain ``go.Figure`` elsewhere (``widget=`` forces either). Layering: this module reads
results (``history`` lists, `SAEMetrics`, `FeatureStats`, `ScalingFit`) and imports no widget or analysis code; analysis code
never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["training_curves", "sparsity_frontier", "density_histogram", "pareto_frontier", "scaling_laws"]

#: One colour per architecture, the same in every figure.
ARCH_COLOURS = {"topk": "#1f77b4", "batchtopk": "#17becf", "relu": "#d62728", "jumprelu": "#2ca02c"}
_CURVES = {
    "loss": "training loss",
    "l0": "L0 (active features / token)",
    "fve": "variance explained (batch)",
    "dead": "dead fraction",
}
_FRONTIER_Y = {"fve": "fraction of variance explained", "ce_loss_recovered": "CE loss recovered"}


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _finish(fig: go.Figure, widget: bool | None) -> go.Figure:
    """``fig`` as a FigureWidget in a notebook kernel (or when ``widget`` is True), else as it is."""
    if widget is None:
        widget = _in_kernel()
    return go.FigureWidget(fig) if widget else fig


def _as_dict(metrics: Any) -> dict[str, Any]:
    return asdict(metrics) if is_dataclass(metrics) and not isinstance(metrics, type) else dict(metrics)


def training_curves(
    sae_or_history: Any,
    metrics: Sequence[str] = ("loss", "l0", "fve", "dead"),
    *,
    title: str | None = None,
    widget: bool | None = None,
) -> go.Figure:
    """One panel per quantity of ``sae.history`` (``[{step, loss, l0, fve, dead, ...}]``, as `train_sae` logs it),
    against the training step. Pass the trained SAE or its history list."""
    history = getattr(sae_or_history, "history", None) if hasattr(sae_or_history, "cfg") else sae_or_history
    if not history:
        raise ValueError(
            "no training history: pass an SAE returned by train_sae (loaded SAEs keep none) or its sae.history list"
        )
    missing = [m for m in metrics if m not in history[0]]
    if missing:
        raise ValueError(f"the history has no {missing}; it holds {sorted(history[0])}")
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[_CURVES.get(m, m) for m in metrics])
    steps = [row["step"] for row in history]
    for col, name in enumerate(metrics, start=1):
        fig.add_scatter(
            x=steps,
            y=[row[name] for row in history],
            name=_CURVES.get(name, name),
            mode="lines",
            showlegend=False,
            row=1,
            col=col,
            hovertemplate=f"step %{{x}}<br>{name} %{{y:.4g}}<extra></extra>",
        )
        fig.update_xaxes(title_text="step", row=1, col=col)
        if name in ("fve", "dead"):
            fig.update_yaxes(range=[0, 1], row=1, col=col)
    cfg = getattr(getattr(sae_or_history, "cfg", None), "architecture", None)
    fig.update_layout(
        title=title or (f"Training a {cfg} SAE" if cfg else "Training"),
        height=320,
        template="plotly_white",
        margin=dict(t=70),
    )
    return _finish(fig, widget)


def pareto_frontier(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (l0, y) points no other point beats with both fewer active features and a higher y, by increasing L0."""
    frontier: list[tuple[float, float]] = []
    for l0, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((l0, y))
    return frontier


def _runs(runs: Any) -> list[dict[str, Any]]:
    """``[{"arch", "label", "l0", "fve", ...}]`` from dicts with "arch" and "metrics" (and maybe "setting" or
    "label"), or ``(arch, metrics)`` pairs, or a mapping arch -> list of metrics."""
    if isinstance(runs, Mapping):
        runs = [(arch, m) for arch, ms in runs.items() for m in ms]
    out = []
    for i, run in enumerate(runs):
        if isinstance(run, Mapping):
            if "arch" not in run or "metrics" not in run:
                raise ValueError(f"run {i} has keys {sorted(run)}; each run needs 'arch' and 'metrics'")
            arch, metrics, label = run["arch"], run["metrics"], run.get("label", run.get("setting", ""))
        else:
            arch, metrics = run
            label = ""
        out.append({"arch": str(arch), "label": str(label), **_as_dict(metrics)})
    if not out:
        raise ValueError("no runs to plot: pass at least one (arch, SAEMetrics)")
    return out


def sparsity_frontier(runs: Any, y: str = "fve", *, title: str | None = None, widget: bool | None = None) -> go.Figure:
    """L0 (log scale) against ``y`` (``"fve"`` or ``"ce_loss_recovered"``) for SAEs of several architectures.

    ``runs``: dicts ``{"arch", "metrics", "setting"?}`` (``metrics`` an `SAEMetrics` or its dict), ``(arch,
    metrics)`` pairs, or ``{arch: [metrics, ...]}``. Each architecture is one line through its runs by increasing
    L0; the dashed line is the frontier across all of them (better SAEs sit up and to the left).
    """
    if y not in _FRONTIER_Y:
        raise ValueError(f"y={y!r} is not one of {sorted(_FRONTIER_Y)}")
    rows = [r for r in _runs(runs) if r.get(y) is not None and not math.isnan(r[y])]
    if not rows:
        raise ValueError(f"none of the runs has a {y} value (CE numbers need evaluate_sae(..., model=, texts=))")
    fig = go.Figure()
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = sorted((r for r in rows if r["arch"] == arch), key=lambda r: r["l0"])
        colour = ARCH_COLOURS.get(arch)
        fig.add_scatter(
            x=[r["l0"] for r in mine],
            y=[r[y] for r in mine],
            name=arch,
            mode="lines+markers",
            text=[r["label"] for r in mine],
            marker=dict(size=10, color=colour),
            line=dict(color=colour),
            hovertemplate=f"{arch} %{{text}}<br>L0 %{{x:.1f}}<br>{y} %{{y:.3f}}<extra></extra>",
        )
    frontier = pareto_frontier((r["l0"], r[y]) for r in rows)
    fig.add_scatter(
        x=[p[0] for p in frontier],
        y=[p[1] for p in frontier],
        name="frontier",
        mode="lines",
        line=dict(color="black", dash="dash", width=1),
        hoverinfo="skip",
    )
    fig.update_layout(
        title=title or "Sparsity vs reconstruction (held-out tokens)",
        height=400,
        xaxis_title="L0 (active features per token, log scale)",
        xaxis_type="log",
        yaxis_title=_FRONTIER_Y[y],
        yaxis_tickformat=".0%",
        template="plotly_white",
    )
    return _finish(fig, widget)


def _density_bins(source: Any, n_bins: int) -> tuple[list[float], list[float], float]:
    """(bin centres, counts, dead fraction) of log10 firing density, from `SAEMetrics` (its stored histogram) or
    anything with a per-feature ``density`` (`FeatureStats`)."""
    if hasattr(source, "density") and not isinstance(source, Mapping):
        import numpy as np

        density = np.asarray(source.density, dtype=np.float64)
        alive = density[density > 0]
        dead = 1 - len(alive) / max(len(density), 1)
        if not len(alive):
            return [], [], dead
        counts, edges = np.histogram(np.log10(alive), bins=n_bins)
    else:
        metrics = _as_dict(source)
        hist, dead = metrics["density_histogram"], metrics["dead_fraction"]
        counts, edges = hist["counts"], hist["edges"]
        if not len(counts):
            return [], [], dead
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    return centres, [float(c) for c in counts], float(dead)


def density_histogram(
    source: Any, *, n_bins: int = 40, title: str | None = None, widget: bool | None = None
) -> go.Figure:
    """How many features fire how often: a histogram of log10(firing density) over the features that fire (dead
    ones are counted in the legend). ``source``: an `SAEMetrics`, a `FeatureStats`, or ``{label: either}`` to
    overlay several SAEs."""
    sources = source if isinstance(source, Mapping) and "density_histogram" not in source else {"": source}
    fig = go.Figure()
    for label, one in sources.items():
        centres, counts, dead = _density_bins(one, n_bins)
        colour = ARCH_COLOURS.get(str(label).split()[0]) if label else None
        fig.add_scatter(
            x=centres,
            y=counts,
            mode="lines",
            line=dict(shape="hvh", color=colour),
            name=f"{label} (dead {dead:.0%})".strip(),
            showlegend=True,
            hovertemplate="density 10^%{x:.2f}<br>%{y:.0f} features<extra></extra>",
        )
    fig.update_layout(
        title=title or "How often each feature fires",
        height=360,
        template="plotly_white",
        xaxis_title="log10 firing density (fraction of tokens)",
        yaxis_title="features",
    )
    return _finish(fig, widget)


def _law_label(name: str, law: Any) -> str:
    lo, hi = law.exponent_interval
    return f"{name} ~ C^{law.exponent:.3f} [{lo:.3f}, {hi:.3f}]"


def scaling_laws(fit: Any, *, title: str | None = None, widget: bool | None = None) -> go.Figure:
    """Two log-log panels of a `ScalingFit` (`saewidgets.analysis.scaling.fit_scaling_laws`).

    Left: every run's loss against its training FLOPs, one colour per dictionary size (a line through its step
    counts), the compute-optimal runs ringed and the fitted ``loss ~ C^-alpha``. Right: the compute-optimal runs'
    features and steps against FLOPs with their fitted power laws. Legends give each exponent and its interval.
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["loss vs training compute", "compute-optimal features and steps"],
        horizontal_spacing=0.12,
    )
    sizes = sorted({run["n_features"] for run in fit.runs})
    for i, size in enumerate(sizes):
        mine = sorted((r for r in fit.runs if r["n_features"] == size), key=lambda r: r["flops"])
        fig.add_scatter(
            x=[r["flops"] for r in mine],
            y=[r["loss"] for r in mine],
            mode="lines+markers",
            name=f"{size:,} features",
            legendgroup="runs",
            marker=dict(size=8, color=_size_colour(i, len(sizes))),
            line=dict(color=_size_colour(i, len(sizes)), width=1),
            text=[f"{r['n_steps']:,} steps" for r in mine],
            hovertemplate=f"{size:,} features, %{{text}}<br>%{{x:.3g}} FLOPs<br>loss %{{y:.4f}}<extra></extra>",
            row=1,
            col=1,
        )
    frontier = fit.frontier
    flops = [r["flops"] for r in frontier]
    fig.add_scatter(
        x=flops,
        y=[r["loss"] for r in frontier],
        mode="markers",
        name="compute-optimal",
        marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
        hoverinfo="skip",
        row=1,
        col=1,
    )
    span = [min(flops) / 1.5, max(flops) * 1.5]
    ends = [span[0] * (span[1] / span[0]) ** t for t in (0.0, 1.0)]
    fig.add_scatter(
        x=ends,
        y=[float(fit.loss(x)) for x in ends],
        mode="lines",
        name=_law_label("loss", fit.loss),
        line=dict(color="black", dash="dash"),
        row=1,
        col=1,
    )
    for name, law, colour in (("features", fit.n_features, "#1f77b4"), ("steps", fit.n_steps, "#d62728")):
        key = "n_features" if name == "features" else "n_steps"
        fig.add_scatter(
            x=flops,
            y=[r[key] for r in frontier],
            mode="markers",
            name=f"optimal {name}",
            marker=dict(size=9, color=colour),
            hovertemplate=f"%{{x:.3g}} FLOPs<br>{name} %{{y:,.0f}}<extra></extra>",
            row=1,
            col=2,
        )
        fig.add_scatter(
            x=ends,
            y=[float(law(x)) for x in ends],
            mode="lines",
            name=_law_label(name, law),
            line=dict(color=colour, dash="dash"),
            row=1,
            col=2,
        )
    fig.update_xaxes(type="log", title_text="training FLOPs")
    fig.update_yaxes(type="log", title_text="loss (1 - variance explained)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="features / steps", row=1, col=2)
    fig.update_layout(
        title=title or f"Scaling laws from {len(fit.runs)} runs ({len(frontier)} compute-optimal)",
        height=420,
        template="plotly_white",
    )
    return _finish(fig, widget)


def _size_colour(i: int, n: int) -> str:
    """The ``i``-th of ``n`` dictionary sizes on a viridis ramp (small: dark blue, large: yellow)."""
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [i / max(1, n - 1) * 0.9])[0]
