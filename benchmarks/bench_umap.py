"""Feature-map seconds: `saewidgets.feature_geometry` (cosine kNN: exact up to 8,192 features, NN-descent above;
UMAP; KMeans on a PCA-50 copy) against
``umap.UMAP(metric="cosine")`` with umap-learn's defaults on the raw 640-d decoder directions.

Directions are synthetic but clustered like a real dictionary's (feature families around 64 centres); each
timed call of ours uses a fresh cache folder, so nothing is read back. numba compiles in an untimed warm-up."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch

from .fixtures import random_sae
from .timing import Row, interleaved, median


def clustered_sae(n_features: int, seed: int = 0) -> Any:
    """A TopK SAE whose unit decoder rows scatter around 64 random centres."""
    g = np.random.default_rng(seed)
    centres = g.standard_normal((64, 640))
    rows = centres[g.integers(0, 64, n_features)] + 1.2 * g.standard_normal((n_features, 640))
    sae = random_sae(n_features, seed=seed)
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(rows / np.linalg.norm(rows, axis=1, keepdims=True)).float())
    return sae


def contenders(sae: Any) -> dict[str, Any]:
    from saewidgets import feature_geometry

    directions = sae.W_dec.numpy()

    def ours() -> None:
        with tempfile.TemporaryDirectory() as cache:
            feature_geometry(sae, cache_dir=cache)

    def reference() -> None:
        import umap

        umap.UMAP(metric="cosine", random_state=0).fit_transform(directions)

    return {"umap-learn": reference, "ours": ours}


def run(quick: bool = False) -> list[Row]:
    sizes, repeats = ((2048,), 1) if quick else ((4096, 16_384), 3)
    interleaved(contenders(clustered_sae(600)), repeats=0)  # warm-up: numba compilation, imports
    runs = f"median of {repeats} interleaved runs after an untimed one" if repeats > 1 else "one run each"
    rows = []
    for n in sizes:
        # an untimed round at each size: numba compiles NN-descent where it first runs (umap-learn's from 4,096
        # points, ours above 8,192), ~1 min that no timed run should pay
        times = interleaved(contenders(clustered_sae(n)), repeats, warmup=not quick)
        rows.append(
            Row(
                "umap",
                f"feature map of {n:,} features",
                "s",
                median(times["ours"]),
                median(times["umap-learn"]),
                "umap.UMAP(metric='cosine') defaults on 640-d directions",
                "lower",
                None,
                f"clustered synthetic directions, seed 0, {runs}",
                times,
            )
        )
    return rows
