"""Feature-map structure: how well `feature_geometry`'s map keeps decoder-cosine neighbourhoods (`map_quality`), on
the demo SAEs, for the current parameters and a small sweep around them.

A quality benchmark, not a speed one. Each row is one map of one SAE: ``ours`` is its neighbour recall at k = 10
(the fraction of a feature's 10 map neighbours that are among its 10 nearest decoder directions by cosine), the
reference is what a random layout scores (``10 / (F - 1)``); the notes carry trustworthiness (against its chance
level, ~0.5), cluster agreement (against chance) and the seconds the map took.

Parameters are chosen on the quick demo SAE (2,048 features): one setting changed at a time from the old defaults
(`BEFORE`), then a second round combining the changes that raised both figures; the choice is the best recall among
settings whose trustworthiness is at least the old defaults'. The full demo SAE (4,096 features) is measured with
the old and the current defaults, to see whether the choice carries over. Both SAEs are read from the saewidgets
cache (``saewidgets demo --quick`` and ``saewidgets demo`` make them); a missing one stops the benchmark with the
command that makes it.
``--quick`` runs the old defaults and the first three settings on the quick SAE only.
"""

from __future__ import annotations

import inspect
import tempfile
import time
from typing import Any

from .timing import Row

K = 10
#: `feature_geometry`'s defaults before this benchmark chose new ones: the sweep's starting point.
BEFORE: dict[str, Any] = {"n_neighbors": 15, "min_dist": 0.1, "pca_dims": 50, "metric": "cosine", "init": "spectral"}
#: One change at a time from `BEFORE`, then combinations.
SWEEP: tuple[dict[str, Any], ...] = (
    {"n_neighbors": 5},
    {"n_neighbors": 30},
    {"n_neighbors": 50},
    {"min_dist": 0.0},
    {"min_dist": 0.5},
    {"pca_dims": 20},
    {"pca_dims": 100},
    {"pca_dims": None},
    {"metric": "euclidean"},
    {"init": "pca"},
    {"init": "random"},
    # Second round, after the first: the changes that raised both recall and trustworthiness, combined.
    {"n_neighbors": 5, "min_dist": 0.0},
    {"n_neighbors": 10, "min_dist": 0.0},
    {"min_dist": 0.0, "pca_dims": None},
    {"n_neighbors": 5, "min_dist": 0.0, "pca_dims": None},
    {"n_neighbors": 5, "min_dist": 0.0, "pca_dims": 100},
)


def defaults() -> dict[str, Any]:
    """`feature_geometry`'s current defaults for the swept settings."""
    from saewidgets import feature_geometry

    return {n: p.default for n, p in inspect.signature(feature_geometry).parameters.items() if n in BEFORE}


def demo_sae(settings: Any) -> Any:
    from saewidgets._cache import cache_dir
    from saewidgets.sae import load_sae

    folder = cache_dir("demo", settings.key()) / "sae"
    if not folder.exists():
        raise FileNotFoundError(
            f"no cached demo SAE at {folder}: run saewidgets demo{'' if settings.n_features > 2048 else ' --quick'}"
        )
    return load_sae(folder)


def measure(sae: Any, params: dict[str, Any]) -> tuple[Any, float]:
    """`map_quality` of a fresh map (a new cache folder) with ``params``, and the seconds the map took."""
    from saewidgets.analysis import feature_geometry, map_quality

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        geometry = feature_geometry(sae, cache_dir=cache, **params)
        seconds = time.perf_counter() - start
    return map_quality(geometry, k=K), seconds


def row(name: str, sae: Any, changed: dict[str, Any], base: dict[str, Any]) -> tuple[Row, Any]:
    quality, seconds = measure(sae, {**base, **changed})
    setting = ", ".join(f"{k}={v!r}" for k, v in changed.items()) or "the old defaults"
    notes = (
        f"{setting} ({', '.join(f'{k}={v!r}' for k, v in {**base, **changed}.items())}); trustworthiness@{K} "
        f"{quality.trustworthiness:.4f} (chance {quality.trustworthiness_chance:.4f}); cluster agreement "
        f"{quality.cluster_agreement:.1%} (chance {quality.cluster_chance:.1%}); map {seconds:.1f} s"
    )
    figure = f"{name}: neighbour recall@{K}, {setting}"
    samples = {"quality": [quality.recall, quality.trustworthiness, quality.cluster_agreement], "seconds": [seconds]}
    return (
        Row(
            "map",
            figure,
            "recall",
            quality.recall,
            quality.recall_chance,
            "random layout",
            "higher",
            None,
            notes,
            samples,
        ),
        quality,
    )


def run(quick: bool = False) -> list[Row]:
    from saewidgets.demo import FULL, QUICK

    rows: list[Row] = []
    quick_sae = demo_sae(QUICK)
    name = "quick demo SAE (2,048 features)"
    measured = [row(name, quick_sae, {}, BEFORE)]
    for changed in SWEEP if not quick else SWEEP[:3]:
        measured.append(row(name, quick_sae, changed, BEFORE))
    rows += [r for r, _ in measured]
    # The choice, on the quick SAE: the best recall among the settings whose trustworthiness is at least the
    # old defaults'. The current defaults should be it; the full SAE is measured with both.
    floor = measured[0][1].trustworthiness
    best = max(
        (i for i in range(len(measured)) if measured[i][1].trustworthiness >= floor),
        key=lambda i: (measured[i][1].recall, measured[i][1].trustworthiness),
    )
    chosen = {**BEFORE, **({}, *SWEEP)[best]}
    if chosen != defaults():
        print(f"[map] the sweep chose {chosen}, but feature_geometry's defaults are {defaults()}", flush=True)
    if not quick:
        full_sae = demo_sae(FULL)
        rows.append(row("full demo SAE (4,096 features)", full_sae, {}, BEFORE)[0])
        current = {k: v for k, v in defaults().items() if v != BEFORE[k]}
        if current:
            rows.append(row("full demo SAE (4,096 features)", full_sae, current, BEFORE)[0])
    return rows
