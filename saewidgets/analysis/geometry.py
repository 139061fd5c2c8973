"""Feature geometry: a 2-D map of decoder directions (UMAP, cosine), cosine neighbours, and clusters to colour by.

Features whose decoder directions point the same way write similar things into the residual stream; the paper
draws these neighbourhoods with UMAP, here on an exact cosine neighbour graph of the directions. The defaults (5
neighbours, ``min_dist`` 0, no PCA) were chosen with `map_quality` on the quick demo SAE: they keep 3x more of each
feature's 10 cosine neighbours on the map than UMAP's usual 15 neighbours, ``min_dist`` 0.1 and PCA to 50 dimensions
did, at a higher trustworthiness (``benchmarks/README.md``, the ``map`` rows). Maps are deterministic for a given
``seed`` and cached on disk, keyed by ``sae.fingerprint()`` and the parameters. `map_quality` measures how well a map keeps each
feature's decoder-cosine neighbours near it (trustworthiness, neighbour recall, cluster agreement, each beside its
chance level), the measure the map's default parameters were chosen on (``benchmarks/README.md``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic_write import atomic_write_bytes
from .._cache import cache_dir as default_cache_dir
from ._common import check_feature
from .results import Neighbour

if TYPE_CHECKING:
    from ..sae import SAE

PCA_ABOVE = 2000  # features; below this UMAP runs on the raw directions
NEIGHBOUR_BLOCK = 128  # features whose neighbour lists one matrix product computes
CLUSTER_DIMS = 50  # PCA dimensions the colouring clusters (KMeans) are computed in
# Above this many features UMAP's neighbour graph comes from NN-descent (pynndescent, as umap-learn does from 4,096
# points) with `NN_DESCENT_NEIGHBOURS` candidates, the map's nearest kept: at 16,384 clustered directions it found
# 98.3% of the exact 5 nearest in 0.8 s, where the exact search took 4.3 s (benchmarks/README.md, the `umap` rows).
# Below it (the demo's maps) the graph is exact. Dashboards' neighbour lists are always exact.
NN_DESCENT_ABOVE = 8192
NN_DESCENT_NEIGHBOURS = 15
# Part of every cached map's key: raise it when the layout's computation changes (2: torch PCA, block-pair kNN,
# NN-descent above `NN_DESCENT_ABOVE`).
LAYOUT_REVISION = 2


@dataclass(eq=False)
class FeatureGeometry:
    """Where each feature sits on the map and which features are near it.

    Attributes:
        coords: ``[F, 2]`` float32 UMAP coordinates.
        clusters: ``[F]`` int32 cluster of each decoder direction (KMeans), for colouring.
        directions: ``[F, d]`` float32 unit decoder directions (for cosine neighbours).
        fingerprint: the SAE's fingerprint.
        params: the settings the map was made with.
    """

    coords: np.ndarray
    clusters: np.ndarray
    directions: np.ndarray = field(repr=False)
    fingerprint: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    _neighbour_blocks: dict[int, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def n_features(self) -> int:
        return len(self.coords)

    def neighbours(self, feature: int, n: int = 10) -> list[Neighbour]:
        """The ``n`` features whose decoder directions have the highest cosine with ``feature``'s (exact; ties go to
        the lower index).

        Computed for a block of `NEIGHBOUR_BLOCK` consecutive features at once (one matrix product instead of one
        matrix-vector product per feature) and kept: a page that lists every feature's neighbours does
        ``F / 128`` products, not ``F``."""
        i = check_feature(self.n_features, feature)
        n = min(int(n), self.n_features - 1)
        if n <= 0:
            return []
        block = i // NEIGHBOUR_BLOCK
        if self._neighbour_blocks.get(block, (None, 0))[1] < n:
            self._neighbour_blocks[block] = (self._block_neighbours(block, n), n)
        index, cosine = self._neighbour_blocks[block][0]
        row = i - block * NEIGHBOUR_BLOCK
        return [Neighbour(int(j), float(c)) for j, c in zip(index[row, :n], cosine[row, :n])]

    def _block_neighbours(self, block: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and cosines ``[rows, n]`` of the ``n`` nearest directions to each feature of ``block``."""
        lo = block * NEIGHBOUR_BLOCK
        hi = min(lo + NEIGHBOUR_BLOCK, self.n_features)
        cosine = self.directions[lo:hi] @ self.directions.T
        cosine[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        top = np.argpartition(-cosine, n - 1, axis=1)[:, :n]  # O(F) per row, then sort only the n kept
        index = np.empty_like(top)
        for r, kept in enumerate(top):
            index[r] = kept[np.lexsort((kept, -cosine[r, kept]))]
        return index, np.take_along_axis(cosine, index, axis=1)


def default_n_clusters(n_features: int) -> int:
    """A number of colours that stays readable: about sqrt(F)/4, between 2 and 30."""
    return int(min(30, max(2, round(math.sqrt(n_features) / 4))))


def feature_geometry(
    sae: SAE,
    n_neighbors: int = 5,
    seed: int = 0,
    n_clusters: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    min_dist: float = 0.0,
    pca_dims: int | None = None,
    metric: str = "cosine",
    init: str = "spectral",
) -> FeatureGeometry:
    """UMAP map, clusters and neighbour index of ``sae``'s decoder directions.

    Args:
        n_neighbors: UMAP's neighbourhood size (larger: more global structure, fewer exact neighbours kept).
        seed: fixes PCA, UMAP and KMeans (same seed, same map).
        n_clusters: KMeans clusters for colouring (default `default_n_clusters`).
        cache_dir: where maps are cached (default: the saewidgets cache's ``geometry`` folder).
        min_dist: UMAP's minimum distance between points.
        pca_dims: dimensions kept by PCA before UMAP when there are more than 2,000 features (None: no PCA; the
            neighbour graph is then exact on the directions themselves, seconds for 16k features).
        metric: how UMAP's neighbour graph measures the (PCA-reduced) directions: ``"cosine"`` or ``"euclidean"``.
        init: UMAP's initial layout: ``"spectral"``, ``"pca"`` or ``"random"``.
    """
    import torch

    with torch.no_grad():
        W = sae.W_dec.detach().float().cpu().numpy()
    n = len(W)
    if n < 4:  # UMAP's spectral layout needs more points than its 2 dimensions + 1
        raise ValueError(f"A feature map needs at least 4 features; this SAE has {n}. Lay out so few by hand.")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    if init not in ("spectral", "pca", "random"):
        raise ValueError(f"init must be 'spectral', 'pca' or 'random', got {init!r}.")
    n_clusters = default_n_clusters(n) if n_clusters is None else int(n_clusters)
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be between 1 and the {n} features, got {n_clusters}.")
    directions = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    params = {
        "n_neighbors": int(min(n_neighbors, n - 1)),
        "seed": int(seed),
        "n_clusters": n_clusters,
        "min_dist": float(min_dist),
        "pca_dims": int(pca_dims) if pca_dims and n > PCA_ABOVE else None,
        "metric": metric,
        "init": init,
    }
    fingerprint = sae.fingerprint()
    path = layout_cache_path(cache_dir, fingerprint, params)
    if path.exists():
        with np.load(path) as cached:
            return FeatureGeometry(
                cached["coords"], cached["clusters"], directions.astype(np.float32), fingerprint, params
            )
    coords, clusters = layout_and_clusters(directions, params)
    write_layout(path, coords=coords, clusters=clusters)
    return FeatureGeometry(coords, clusters, directions.astype(np.float32), fingerprint, params)


def layout_and_clusters(directions: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """UMAP coordinates and KMeans clusters of unit directions ``[F, d]``.

    The k-nearest-neighbour graph is computed exactly with blocked matrix products up to `NN_DESCENT_ABOVE`
    points and by NN-descent above, and handed to UMAP. KMeans runs on the points reduced by PCA to at most
    `CLUSTER_DIMS` dimensions.
    """
    import umap
    from sklearn.cluster import KMeans

    points = directions
    if params["pca_dims"] is not None and directions.shape[1] > params["pca_dims"]:
        points = _pca(directions, params["pca_dims"])
    metric = params.get("metric", "cosine")  # joint_geometry's params predate metric and init
    if len(points) > NN_DESCENT_ABOVE:
        knn = _nn_descent(points, params["n_neighbors"], metric, params["seed"])
    else:
        knn = _knn(points, params["n_neighbors"], metric)
    reducer = umap.UMAP(
        n_neighbors=params["n_neighbors"],
        min_dist=params["min_dist"],
        metric=metric,
        init=params.get("init", "spectral"),
        random_state=params["seed"],
        n_components=2,
        n_jobs=1,  # a seed forces one job anyway
        precomputed_knn=(*knn, None),
    )
    with warnings.catch_warnings():  # "no search index, so no transform()": we never transform new points
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        coords = reducer.fit_transform(points).astype(np.float32)
    if (
        points.shape[1] > CLUSTER_DIMS
    ):  # colours only: KMeans on 640-d directions took 16 s for 16k features, 0.4 s on 50
        points = _pca(directions, CLUSTER_DIMS)
    clusters = KMeans(params["n_clusters"], n_init=1, random_state=params["seed"]).fit_predict(points)
    return coords, clusters.astype(np.int32)


def _pca(points: np.ndarray, n_components: int) -> np.ndarray:
    """``points [F, d]`` centred and projected on their ``n_components`` leading principal axes.

    Exact, through the ``d x d`` covariance's eigenvectors (``eigh`` in float64): with F >> d this is ~10x faster
    than sklearn's randomized SVD of the ``[F, d]`` matrix. Each axis's sign is fixed (its largest-magnitude
    coordinate positive), so the result is deterministic. Computed with torch, like the neighbour search before
    it: numpy's BLAS threads, started after torch's, fought them for the cores (6 s instead of 0.4 s at 16k
    features on 2 cores)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(points)).double()
    centred = x - x.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    axes = vectors.flip(1)[:, :n_components]  # eigh sorts eigenvalues ascending
    axes = axes * torch.sign(axes[axes.abs().argmax(0), torch.arange(axes.shape[1])])
    return (centred @ axes).float().numpy()


def _knn(points: np.ndarray, k: int, metric: str = "cosine", block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``metric`` neighbours (each point first, at distance 0): indices and distances ``[F, k]``.

    Distances are symmetric, so each pair of blocks of points is computed once (the upper triangle of the
    ``F x F`` matrix: half the products of row by row) and serves both blocks' rows; each row keeps its ``k``
    nearest so far."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    n = len(x)
    best = torch.full((n, k), math.inf)
    best_index = torch.zeros((n, k), dtype=torch.long)

    def keep(rows: slice, distance: torch.Tensor, first_column: int) -> None:
        values, index = distance.topk(min(k, distance.shape[1]), dim=1, largest=False)
        values = torch.cat([best[rows], values], dim=1)
        index = torch.cat([best_index[rows], index + first_column], dim=1)
        kept, at = values.topk(k, dim=1, largest=False)
        best[rows], best_index[rows] = kept, index.gather(1, at)

    for a in range(0, n, block):
        for b in range(a, n, block):
            if metric == "cosine":
                distance = (1.0 - x[a : a + block] @ x[b : b + block].T).clamp(min=0.0)
            else:
                distance = torch.cdist(x[a : a + block], x[b : b + block])
            if a == b:
                distance.fill_diagonal_(-1.0)  # self first, even among duplicate directions
            keep(slice(a, a + block), distance, b)
            if a != b:
                keep(slice(b, b + block), distance.T, a)
    return best_index.numpy().astype(np.int64), best.clamp(min=0.0).numpy().astype(np.float32)


def _nn_descent(points: np.ndarray, k: int, metric: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate ``metric`` neighbours by NN-descent: the ``k`` nearest of `NN_DESCENT_NEIGHBOURS` candidates
    (a search for 15 finds nearly all of the true 5 nearest; a search for 5 finds two thirds)."""
    from pynndescent import NNDescent

    index = NNDescent(
        np.ascontiguousarray(points, dtype=np.float32),
        metric=metric,
        n_neighbors=max(k, NN_DESCENT_NEIGHBOURS),
        random_state=seed,
        n_jobs=1,
    )
    indices, distances = index.neighbor_graph
    return indices[:, :k].astype(np.int64), distances[:, :k].astype(np.float32)


def layout_cache_path(cache_dir: str | os.PathLike | None, fingerprint: str, params: dict[str, Any]) -> Path:
    """Where a map of the SAE ``fingerprint`` made with ``params`` is cached (keyed by UMAP's and sklearn's
    versions too)."""
    from importlib.metadata import version  # not `import umap`: 4 s of numba start-up on a cached run

    versions = {
        "umap": version("umap-learn"),
        "sklearn": version("scikit-learn"),
        "pynndescent": version("pynndescent"),
        "layout": LAYOUT_REVISION,
    }
    key = hashlib.sha256(json.dumps([fingerprint, params, versions], sort_keys=True).encode()).hexdigest()[:16]
    folder = default_cache_dir("geometry") if cache_dir is None else Path(cache_dir)
    return folder / f"geometry-{key}.npz"


def write_layout(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz through a temporary file and one ``os.replace``: readers never see half a map."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)  # numbers only: no pickled objects in a cache file
    atomic_write_bytes(path, buffer.getvalue())


@dataclass(frozen=True)
class MapQuality:
    """How well a 2-D map keeps decoder-cosine neighbourhoods, each figure beside what a random layout scores.

    Attributes:
        k: the neighbourhood size the figures are for.
        trustworthiness: sklearn's trustworthiness (Venna & Kaski) of the map against cosine distances between
            decoder directions: 1 when every point's ``k`` map neighbours are among its nearest by cosine, lower the
            further down the cosine ranking they are.
        trustworthiness_chance: its expected value for a random layout (about 0.5).
        recall: the mean fraction of a point's ``k`` map neighbours that are among its ``k`` cosine neighbours.
        recall_chance: ``k / (F - 1)``, a random layout's.
        cluster_agreement: the mean fraction of a point's ``k`` map neighbours in its own cluster (the clusters
            the map is coloured by); NaN without clusters.
        cluster_chance: the same for neighbours drawn at random: ``sum_c n_c (n_c - 1) / (F (F - 1))``.
    """

    k: int
    trustworthiness: float
    trustworthiness_chance: float
    recall: float
    recall_chance: float
    cluster_agreement: float
    cluster_chance: float

    def to_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.__dataclass_fields__}

    def __str__(self) -> str:
        return (
            f"MapQuality(k={self.k}: trustworthiness {self.trustworthiness:.3f} (chance "
            f"{self.trustworthiness_chance:.3f}), recall {self.recall:.1%} (chance {self.recall_chance:.1%}), "
            f"cluster agreement {self.cluster_agreement:.1%} (chance {self.cluster_chance:.1%}))"
        )


def map_quality(geometry: FeatureGeometry, k: int = 10, chunk: int = 1024) -> MapQuality:
    """Neighbour preservation of ``geometry``'s map: does a feature's map neighbourhood hold the features whose
    decoder directions point its way?

    Exact, in float64: cosine distances between the (unit) decoder directions are computed ``chunk`` rows at a time,
    so memory stays ``O(chunk x F)`` (sklearn's `trustworthiness` holds two ``F x F`` matrices; this gives the same
    value, ``tests/test_analysis.py`` checks it). Map neighbours are by Euclidean distance on the 2-D coordinates.
    """
    from sklearn.neighbors import NearestNeighbors

    n = geometry.n_features
    if not 1 <= k < n / 2:  # trustworthiness's normalisation needs k < n / 2
        raise ValueError(f"map_quality() needs 1 <= k < n_features / 2 ({n / 2:g}), got k={k}.")
    coords = np.asarray(geometry.coords, dtype=np.float64)
    directions = np.asarray(geometry.directions, dtype=np.float64)
    directions = directions / np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    on_map = NearestNeighbors(n_neighbors=k).fit(coords).kneighbors(return_distance=False)  # [n, k], self excluded
    penalty = 0.0
    shared = 0
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        distance = 1.0 - directions[rows] @ directions.T
        distance[rows - start, rows] = np.inf  # a point is not its own neighbour
        near = np.take_along_axis(distance, on_map[rows], axis=1)  # [rows, k]
        rank = np.stack([(distance < near[:, [j]]).sum(1) + 1 for j in range(k)], axis=1)  # 1: nearest by cosine
        penalty += float(np.maximum(rank - k, 0).sum())
        shared += int((rank <= k).sum())
    trust = 1.0 - penalty * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))
    trust_chance = 1.0 - (n - 1 - k) * (n - k) / ((n - 1) * (2.0 * n - 3.0 * k - 1.0))
    clusters = np.asarray(geometry.clusters)
    if len(clusters) == n:
        agreement = float((clusters[on_map] == clusters[:, None]).mean())
        sizes = np.bincount(clusters - clusters.min()).astype(np.float64)
        chance = float((sizes * (sizes - 1)).sum() / (n * (n - 1.0)))
    else:
        agreement = chance = math.nan
    return MapQuality(k, trust, trust_chance, shared / (n * k), k / (n - 1), agreement, chance)
