"""Scoring explanations the way delphi does (Paulo et al. 2024), and the paper's specificity plot.

Held-out examples: `held_out_examples` encodes activations the explainer never saw (e.g. the demo's held-out
documents) and samples, per feature, contexts where it fires, spread over its activation bands (bands are fractions
of the maximum in the statistics, fixed before any held-out example is looked at), and contexts where it does not
fire at all. A window the statistics hold for that feature (so one an explanation prompt may have shown) is
skipped, so no scored example was shown to the explainer.

Two scores, each asked of a language-model explainer through its ``judge``:
  - detection: given the explanation, does this (unmarked) text have the feature? Activating texts should get 1,
    non-activating texts 0.
  - fuzzing: given the explanation, are the tokens marked ``<<like this>>`` what the feature fires on? Activating
    texts marked where the feature fires should get 1; non-activating texts with as many tokens marked at random 0.
Each is reported as balanced accuracy (mean of the hit rate on activating and the rejection rate on
non-activating examples; 0.5 is chance). An example the model gave no usable answer for counts as wrong.

Specificity (the paper's plot): for each activation band, and for "not active", the share of examples the judge
called relevant.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...activation_source import ActivationSource
from ...models.handle import ModelHandle
from .._common import check_features, encode_rows
from ..stats import FeatureStats
from .labels import Labels
from .llm import LanguageModelExplainer
from .prompts import TASKS
from .records import marked_text, plain_text

if TYPE_CHECKING:
    from ...sae import SAE

NOT_ACTIVE = -1  # the band of a non-activating example


@dataclass
class ScoringExamples:
    """Held-out contexts of one feature (card items; activating ones also carry their ``band``)."""

    feature: int
    activating: list[dict[str, Any]]
    non_activating: list[dict[str, Any]]
    band_labels: list[str] = field(default_factory=list)


def held_out_examples(
    model: ModelHandle,
    sae: SAE,
    activations: ActivationSource,
    stats: FeatureStats,
    features: list[int],
    *,
    n_activating: int = 10,
    n_non_activating: int = 10,
    seed: int = 0,
    chunk: int = 4096,
) -> dict[int, ScoringExamples]:
    """Activating (spread over bands, highest band first) and non-activating held-out contexts per feature.

    Args:
        activations: `Activations` the explanations were not made from (e.g. ``demo.held_out``), at the SAE's layer.
        stats: the SAE's statistics: their bands and context size; windows they hold are skipped.
        n_activating, n_non_activating: contexts per feature (fewer when the held-out tokens have fewer).
    """
    stats.check_matches(sae)
    features = check_features(stats.n_features, features)
    if not features:
        raise ValueError("held_out_examples() got an empty feature list.")
    if len(activations) == 0:
        raise ValueError("There are no held-out activations to draw examples from.")
    cols = torch.tensor(features)
    f = torch.cat(
        [encode_rows(sae, activations.torch(slice(s, s + chunk)))[:, cols] for s in range(0, len(activations), chunk)]
    ).numpy()
    before, after = stats.context
    rng = np.random.default_rng(seed)
    nb = stats.n_bands
    labels = [stats.band_label(b) for b in range(nb)]
    windows: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for j, i in enumerate(features):
        shown = _shown_windows(stats, i)
        column, max_act = f[:, j], float(stats.max_act[i]) or 1.0
        fired = np.flatnonzero(column > 0)
        band_of = np.minimum((column[fired] / max_act * nb).astype(int), nb - 1)
        by_band = [list(rng.permutation(fired[band_of == b])) for b in reversed(range(nb))]
        activating: list[dict[str, Any]] = []
        while len(activating) < n_activating and any(by_band):
            for rows in by_band:
                if rows and len(activating) < n_activating:
                    row = int(rows.pop())
                    e = _window(activations, column, row, before, after)
                    if tuple(e["tokens"]) not in shown:
                        e["band"] = min(int(column[row] / max_act * nb), nb - 1)
                        activating.append(e)
        quiet: list[dict[str, Any]] = []
        for row in rng.permutation(len(column))[: 50 * n_non_activating]:
            if len(quiet) == n_non_activating:
                break
            e = _window(activations, column, int(row), before, after)
            if not any(e["acts"]) and tuple(e["tokens"]) not in shown:
                e["band"] = NOT_ACTIVE
                quiet.append(e)
        windows[i] = (activating, quiet)
    ids = sorted({t for a, q in windows.values() for e in a + q for t in e["tokens"]})
    text = dict(zip(ids, model.tokens_to_str(ids)))
    for activating, quiet in windows.values():
        for e in activating + quiet:
            e["tokens"] = [text[t] for t in e["tokens"]]
    return {i: ScoringExamples(i, activating, quiet, labels) for i, (activating, quiet) in windows.items()}


def _shown_windows(stats: FeatureStats, i: int) -> set[tuple[int, ...]]:
    """Token-id windows the statistics hold for feature ``i``: every context an explanation prompt can show."""
    top = stats.top_tokens[i][stats.top_values[i] > 0]
    bands = stats.band_tokens[i][~torch.isnan(stats.band_values[i])]
    return {tuple(t for t in window if t >= 0) for window in torch.cat([top, bands]).tolist()}


def _window(activations: ActivationSource, column: np.ndarray, row: int, before: int, after: int) -> dict[str, Any]:
    rows = activations.context(row, before, after)
    return {
        "tokens": [int(t) for t in activations.token_ids[rows]],
        "acts": [float(a) for a in column[rows]],
        "center": int(np.flatnonzero(rows == row)[0]),
        "value": float(column[row]),
    }


@dataclass
class Scores:
    """Every judgement made while scoring: ``rows`` of ``{"feature", "task", "truth", "prediction", "band"}``
    (``prediction`` None where the model gave no usable answer; ``band`` `NOT_ACTIVE` for non-activating)."""

    rows: list[dict[str, Any]]
    band_labels: list[str]
    explainer: str

    def summary(self) -> list[dict[str, Any]]:
        """Per feature and task: ``balanced_accuracy``, ``accuracy``, ``n``, ``unanswered``."""
        keys = sorted({(r["feature"], r["task"]) for r in self.rows})
        return [
            {"feature": f, "task": t, **_metrics([r for r in self.rows if (r["feature"], r["task"]) == (f, t)])}
            for f, t in keys
        ]

    def balanced_accuracy(self, task: str = "detection") -> float:
        """Over every feature's examples pooled; 0.5 is chance."""
        return _metrics([r for r in self.rows if r["task"] == task])["balanced_accuracy"]

    def specificity(self, task: str = "detection") -> list[dict[str, Any]]:
        """``[{"band", "label", "relevant", "n"}]``: share of examples judged relevant, not active first."""
        out = []
        for band, label in [(NOT_ACTIVE, "not active"), *enumerate(self.band_labels)]:
            rows = [r for r in self.rows if r["task"] == task and r["band"] == band]
            relevant = sum(r["prediction"] == 1 for r in rows) / len(rows) if rows else float("nan")
            out.append({"band": band, "label": label, "relevant": relevant, "n": len(rows)})
        return out

    def specificity_figure(self, task: str = "detection") -> Any:
        """The paper's specificity plot as a plotly figure: share judged relevant per activation band."""
        import plotly.graph_objects as go

        bars = self.specificity(task)
        fig = go.Figure(
            go.Bar(
                x=[b["label"] for b in bars],
                y=[b["relevant"] for b in bars],
                text=[f"n={b['n']}" for b in bars],
                textposition="outside",
                hovertemplate="%{x}: %{y:.0%} judged relevant (%{text})<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"Specificity ({task}, judged by {self.explainer})",
            xaxis_title="activation band (fraction of max)",
            yaxis_title="share judged relevant",
            yaxis_range=[0, 1.1],
            template="plotly_white",
            height=360,
        )
        return fig

    def __repr__(self) -> str:
        tasks = sorted({r["task"] for r in self.rows})
        scores = ", ".join(f"{t} {self.balanced_accuracy(t):.2f}" for t in tasks)
        return (
            f"Scores({len({r['feature'] for r in self.rows})} features by {self.explainer}: {scores} balanced accuracy)"
        )


def _metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    pos = [r for r in rows if r["truth"] == 1]
    neg = [r for r in rows if r["truth"] == 0]
    hit = sum(r["prediction"] == 1 for r in pos) / len(pos) if pos else float("nan")
    reject = sum(r["prediction"] == 0 for r in neg) / len(neg) if neg else float("nan")
    right = sum(r["prediction"] == r["truth"] for r in rows)
    return {
        "balanced_accuracy": (hit + reject) / 2,
        "accuracy": right / len(rows) if rows else float("nan"),
        "n": len(rows),
        "unanswered": sum(r["prediction"] is None for r in rows),
    }


def score_explanations(
    explainer: LanguageModelExplainer,
    labels: Labels,
    examples: dict[int, ScoringExamples],
    tasks: tuple[str, ...] = TASKS,
    seed: int = 0,
    progress: bool = True,
) -> Scores:
    """Detection and fuzzing scores of ``labels``' explanations on held-out ``examples`` (see the module docstring),
    judged by ``explainer`` (chat endpoint or local model)."""
    if not isinstance(explainer, LanguageModelExplainer):
        raise TypeError(
            f"Scoring needs a language model to judge examples (ChatExplainer or LocalExplainer), "
            f"got {type(explainer).__name__}."
        )
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be some of {TASKS}, got {tasks}.")
    missing = [i for i in examples if i not in labels]
    if missing:
        raise KeyError(f"Features {missing} have held-out examples but no explanation to score.")
    if not examples:
        raise ValueError("score_explanations() got no features to score.")
    rng = np.random.default_rng(seed)
    jobs = []
    for i, ex in examples.items():
        for task in tasks:
            items = _items(task, ex, rng)
            rng.shuffle(items)
            jobs.append((i, task, items))

    def run(job):
        i, task, items = job
        predictions = explainer.judge(task, labels[i].text, [text for text, _, _ in items])
        return [
            {"feature": i, "task": task, "truth": truth, "prediction": p, "band": band}
            for (_, truth, band), p in zip(items, predictions)
        ]

    with ThreadPoolExecutor(max_workers=max(1, explainer.max_concurrency)) as pool:
        done = list(
            tqdm(
                pool.map(run, jobs),
                total=len(jobs),
                desc=f"score ({explainer.name})",
                unit="task",
                disable=not progress,
            )
        )
    band_labels = next(iter(examples.values())).band_labels
    return Scores([r for rows in done for r in rows], band_labels, repr(explainer))


def _items(task: str, ex: ScoringExamples, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """``(text, truth, band)`` per example: plain text for detection; for fuzzing, activating texts marked where the
    feature fires and non-activating texts with as many tokens (of a random activating example) marked at random."""
    if task == "detection":
        return [(plain_text(e), 1, e["band"]) for e in ex.activating] + [
            (plain_text(e), 0, NOT_ACTIVE) for e in ex.non_activating
        ]
    counts = [max(1, sum(a > 0 for a in e["acts"])) for e in ex.activating] or [1]
    wrong = []
    for e in ex.non_activating:
        m = min(int(rng.choice(counts)), len(e["tokens"]))
        chosen = set(rng.choice(len(e["tokens"]), size=m, replace=False).tolist())
        wrong.append((marked_text(e, [k in chosen for k in range(len(e["tokens"]))]), 0, NOT_ACTIVE))
    return [(marked_text(e), 1, e["band"]) for e in ex.activating] + wrong
