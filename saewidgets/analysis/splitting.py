"""Feature splitting across a family of SAEs: which features of a larger SAE refine which feature of a smaller one.

As the dictionary grows, one feature of a small SAE splits into several finer features of a larger one (Scaling
Monosemanticity's Golden Gate Bridge / San Francisco neighbourhood across 1M, 4M and 34M features). `match_features`
links each feature of every SAE to its nearest feature, by decoder cosine, in the next smaller SAE of the family:
its parent, when that cosine reaches ``min_cosine``. The links form a tree from the smallest SAE's features down.
`joint_geometry` lays every size's decoder directions out on one UMAP map, so children land near their parent.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import check_feature
from .geometry import PCA_ABOVE, layout_cache_path, layout_and_clusters, write_layout, default_n_clusters
from .results import Neighbour

if TYPE_CHECKING:
    from ..sae import SAE
    from ..sae.family import SAEFamily

#: Default cosine a child needs with its parent. Random directions in a 640-wide residual stream (Gemma 3 270M) meet
#: at |cos| < 0.2 almost surely, so 0.4 keeps chance matches out while admitting the usual split (0.5-0.9).
MIN_COSINE = 0.4


@dataclass(eq=False)
class FeatureTree:
    """Parent links between consecutive sizes of a family.

    Attributes:
        sizes: the family's sizes, smallest first.
        parents: ``parents[i]`` is ``[sizes[i + 1]]`` int32: each feature's parent among ``sizes[i]``'s
            features, -1 when no feature there reaches ``min_cosine``.
        cosines: ``cosines[i]``: each of those features' best decoder cosine with ``sizes[i]``'s features.
        min_cosine: the cosine a parent link needs.
    """

    sizes: list[int]
    parents: list[np.ndarray] = field(repr=False)
    cosines: list[np.ndarray] = field(repr=False)
    min_cosine: float = MIN_COSINE

    def _level(self, size: int) -> int:
        if size not in self.sizes:
            raise KeyError(f"this family has SAEs of {self.sizes} features, not {size}.")
        return self.sizes.index(size)

    def parent(self, size: int, feature: int) -> int | None:
        """``feature``'s parent in the next smaller SAE (None for the smallest SAE or when unmatched)."""
        level = self._level(size)
        feature = check_feature(size, feature)
        if level == 0:
            return None
        p = int(self.parents[level - 1][feature])
        return None if p < 0 else p

    def children(self, size: int, feature: int) -> list[Neighbour]:
        """The features of the next larger SAE whose parent is ``feature``, highest cosine first."""
        level = self._level(size)
        feature = check_feature(size, feature)
        if level == len(self.sizes) - 1:
            return []
        mine = np.flatnonzero(self.parents[level] == feature)
        cos = self.cosines[level][mine]
        order = np.lexsort((mine, -cos))
        return [Neighbour(int(mine[i]), float(cos[i])) for i in order]

    def descendants(self, size: int, feature: int) -> dict[int, list[int]]:
        """``{size: [features]}`` for ``size`` (just ``feature``) and every larger size: the subtree under it."""
        level = self._level(size)
        out = {size: [check_feature(size, feature)]}
        current = np.array(out[size])
        for i in range(level, len(self.sizes) - 1):
            current = np.flatnonzero(np.isin(self.parents[i], current))
            out[self.sizes[i + 1]] = current.tolist()
        return out

    def ancestors(self, size: int, feature: int) -> dict[int, int]:
        """``{size: feature}`` up the chain of parents, from ``feature`` to the smallest SAE it still links to."""
        out = {size: check_feature(size, feature)}
        level = self._level(size)
        while level > 0:
            p = self.parent(self.sizes[level], out[self.sizes[level]])
            if p is None:
                break
            level -= 1
            out[self.sizes[level]] = p
        return out

    def split_counts(self, size: int) -> np.ndarray:
        """``[size]`` int: how many children each feature of ``size`` has in the next larger SAE."""
        level = self._level(size)
        if level == len(self.sizes) - 1:
            return np.zeros(size, dtype=np.int64)
        linked = self.parents[level][self.parents[level] >= 0]
        return np.bincount(linked, minlength=size)


def unit_directions(sae: SAE) -> np.ndarray:
    """``[F, d]`` float32 decoder rows scaled to unit length."""
    import torch

    with torch.no_grad():
        W = sae.W_dec.detach().float().cpu().numpy()
    return (W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def match_features(family: SAEFamily, min_cosine: float = MIN_COSINE) -> FeatureTree:
    """Link each feature of every SAE in ``family`` (but the smallest) to its parent in the next smaller SAE: the
    feature there whose decoder direction has the highest cosine with its own, if that cosine is at least
    ``min_cosine``."""
    if len(family) < 2:
        raise ValueError(f"Matching features needs a family of 2+ sizes; this one has {family.sizes}.")
    if not -1.0 <= float(min_cosine) <= 1.0:
        raise ValueError(f"min_cosine={min_cosine!r} is not a cosine: pass a number in [-1, 1], e.g. 0.4.")
    directions = [unit_directions(sae) for sae in family.saes]
    parents, cosines = [], []
    for small, large in zip(directions[:-1], directions[1:]):
        best, best_cos = _nearest(large, small)
        parents.append(np.where(best_cos >= min_cosine, best, -1).astype(np.int32))
        cosines.append(best_cos)
    return FeatureTree(family.sizes, parents, cosines, float(min_cosine))


def _nearest(queries: np.ndarray, keys: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the key row of highest cosine (lowest index among ties) and that cosine."""
    index, value = np.empty(len(queries), np.int64), np.empty(len(queries), np.float32)
    for start in range(0, len(queries), chunk):
        cos = queries[start : start + chunk] @ keys.T
        index[start : start + chunk] = cos.argmax(1)
        value[start : start + chunk] = cos.max(1)
    return index, value


@dataclass(eq=False)
class JointGeometry:
    """One UMAP map of every size's decoder directions.

    Attributes:
        coords: ``[N, 2]`` float32, N the family's total features, size by size (smallest first).
        sizes: ``[N]`` int: the size of the SAE each point belongs to.
        features: ``[N]`` int: the point's feature index within its SAE.
        params: the settings the map was made with.
    """

    coords: np.ndarray
    sizes: np.ndarray
    features: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def point(self, size: int, feature: int) -> int:
        """The row of ``coords`` of ``feature`` of the ``size``-feature SAE."""
        start = int(np.flatnonzero(self.sizes == size)[0]) if (self.sizes == size).any() else -1
        if start < 0:
            raise KeyError(f"the map has SAEs of {sorted(set(self.sizes.tolist()))} features, not {size}.")
        return start + check_feature(size, feature)


def joint_geometry(
    family: SAEFamily,
    n_neighbors: int = 15,
    seed: int = 0,
    min_dist: float = 0.1,
    pca_dims: int = 50,
    cache_dir: str | os.PathLike | None = None,
) -> JointGeometry:
    """UMAP of the decoder directions of every SAE in ``family`` together (cosine metric, as `feature_geometry`),
    cached on disk by the SAEs' fingerprints and these settings."""
    directions = np.concatenate([unit_directions(sae) for sae in family.saes])
    sizes = np.repeat(family.sizes, family.sizes)
    features = np.concatenate([np.arange(n) for n in family.sizes])
    n = len(directions)
    params = {
        "n_neighbors": int(min(n_neighbors, n - 1)),
        "seed": int(seed),
        "n_clusters": default_n_clusters(n),
        "min_dist": float(min_dist),
        "pca_dims": int(pca_dims) if n > PCA_ABOVE else None,
    }
    fingerprint = "joint-" + hashlib.sha256("|".join(s.fingerprint() for s in family.saes).encode()).hexdigest()[:16]
    path = layout_cache_path(cache_dir, fingerprint, params)
    if path.exists():
        with np.load(path) as cached:
            coords = cached["coords"]
    else:
        coords, clusters = layout_and_clusters(directions, params)
        write_layout(path, coords=coords, clusters=clusters)
    return JointGeometry(coords, sizes, features, params)
