"""FeatureMap: the UMAP of every feature's decoder direction as a canvas scatter (16k+ points).

Takes ``coords`` float32 [F, 2] (``FeatureGeometry.coords``), optional ``clusters`` int32 [F] and ``density`` [F]
(``FeatureStats.density``). Selecting a feature (click, lasso, search) sets ``selected``; its neighbourhood
(``neighbours_fn(i, n)`` or ``geometry.neighbours``) is highlighted. Text search goes to ``search_fn(query)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import traitlets as t

from ._base import ViewWidget
from .serializers import array_to_bytes, as_array, bytes_to_array

if TYPE_CHECKING:
    from ..analysis import FeatureGeometry, FeatureStats

#: ``(feature, n) ->`` its nearest features, best first: ids, ``(id, cosine)`` pairs or rows with a ``"feature"``
#: (`FeatureGeometry.neighbours`' `Neighbour` rows).
NeighboursFn = Callable[[int, int], Sequence[Union[int, tuple[int, float], Mapping[str, Any]]]]
SearchFn = Callable[[str], Iterable[Any]]
DEFAULT_NEIGHBOURS = 10


def _feature_ids(results: Iterable[Any]) -> list[int]:
    """Feature ids from search results given as ints, (id, score) pairs or {"feature": id, ...} dicts."""
    return [hit[0] for hit in _hits(results)]


def _hits(results: Iterable[Any]) -> list[tuple[int, str]]:
    """(feature id, one-line description) of each search result, in rank order: `search_contexts` hits (or dicts
    with their keys) are described by the share of top contexts matching and an example context."""
    hits = []
    for r in results:
        label = ""
        if isinstance(r, Mapping):
            if r.get("fraction") is not None:
                label = f"{100 * float(r['fraction']):.0f}% of top contexts"
            if r.get("example"):
                label = f"{label} · {str(r['example']).strip()}" if label else str(r["example"]).strip()
            r = r.get("feature")
        elif isinstance(r, (tuple, list)):
            label = f"score {float(r[1]):.3g}" if len(r) > 1 else ""
            r = r[0]
        hits.append((int(r), " ".join(label.split())[:160]))
    return hits


class FeatureMap(ViewWidget):
    """Scatter of all features; ``selected`` (int, -1 for none) syncs both ways, ``lasso`` holds the last
    lasso selection, ``highlight`` the selected feature's neighbours."""

    _view = "feature_map"
    coords = t.Bytes(b"").tag(sync=True)
    n_features = t.Int(0).tag(sync=True)
    clusters = t.Bytes(b"").tag(sync=True)
    density = t.Bytes(b"").tag(sync=True)
    color_by = t.Enum(["cluster", "density"], default_value="cluster").tag(sync=True)
    selected = t.Int(-1).tag(sync=True)
    highlight = t.List(t.Int()).tag(sync=True)
    lasso = t.List(t.Int()).tag(sync=True)
    query = t.Unicode("").tag(sync=True)
    search_results = t.List(t.Int()).tag(sync=True)
    search_labels = t.List(t.Unicode()).tag(sync=True)  # one line describing each search result
    message = t.Unicode("").tag(sync=True)
    height = t.Int(420).tag(sync=True)
    # Named features shown as one-click links above the map: [{"label": str, "feature": int}].
    bookmarks = t.List(t.Dict()).tag(sync=True)
    # Each feature's label for the hover ("" for none), prefixed with its kind: "pattern: ..." or "LLM: ...".
    labels = t.List(t.Unicode()).tag(sync=True)

    def __init__(
        self,
        coords: Any = None,
        *,
        clusters: Any = None,
        density: Any = None,
        neighbours_fn: NeighboursFn | None = None,
        search_fn: SearchFn | None = None,
        n_neighbours: int = DEFAULT_NEIGHBOURS,
        selected: int = -1,
        color_by: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.neighbours_fn = neighbours_fn
        self.search_fn = search_fn
        self.n_neighbours = int(n_neighbours)
        if coords is not None:
            self.set_points(coords, clusters=clusters, density=density)
        if color_by is not None:
            self.color_by = color_by
        elif not self.clusters and self.density:
            self.color_by = "density"
        if selected >= 0:
            self.selected = int(selected)
        self.on_msg(self._on_frontend_msg)

    def _on_frontend_msg(self, widget: Any, content: dict[str, Any], buffers: Any) -> None:
        """The search box sends {"event": "search", "query": ...} on Enter."""
        if isinstance(content, dict) and content.get("event") == "search":
            query = str(content.get("query", ""))
            if query == self.query:
                self.search(query)
            else:
                self.query = query  # the observer runs the search

    @classmethod
    def from_geometry(cls, geometry: FeatureGeometry, stats: FeatureStats | None = None, **kwargs: Any) -> FeatureMap:
        """A map of a ``FeatureGeometry`` (coords, clusters, neighbours), coloured with ``stats.density``."""
        return cls(
            geometry.coords,
            clusters=getattr(geometry, "clusters", None),
            density=getattr(stats, "density", None) if stats is not None else None,
            neighbours_fn=getattr(geometry, "neighbours", None),
            **kwargs,
        )

    def set_points(self, coords: Any, *, clusters: Any = None, density: Any = None) -> None:
        """Replace the points: ``coords`` [F, 2]; ``clusters`` [F] ints (-1 = noise); ``density`` [F]."""
        xy = as_array(coords, np.float32, 2, "coords")
        if xy.shape[1] != 2:
            raise ValueError(f"coords: expected shape [F, 2], got {xy.shape}.")
        n = xy.shape[0]
        cl = as_array(clusters, np.int32, 1, "clusters") if clusters is not None else None
        dn = as_array(density, np.float32, 1, "density") if density is not None else None
        for name, arr in (("clusters", cl), ("density", dn)):
            if arr is not None and arr.shape[0] != n:
                raise ValueError(f"{name}: expected {n} values (one per feature), got {arr.shape[0]}.")
        with self.hold_sync():
            self.n_features = n
            self.coords = array_to_bytes(xy)
            self.clusters = array_to_bytes(cl, np.int32) if cl is not None else b""
            self.density = array_to_bytes(dn) if dn is not None else b""

    def set_labels(self, labels: dict[int, dict[str, str]]) -> None:
        """Show ``{feature: {"text", "kind"}}`` (``Labels.for_views()``) in the hover, cut to 100 characters."""
        kinds = {"llm": "LLM", "pattern": "pattern"}
        self.labels = [
            f"{kinds.get(labels[i]['kind'], labels[i]['kind'])}: {labels[i]['text'][:100]}" if i in labels else ""
            for i in range(self.n_features)
        ]

    def set_bookmarks(self, named: dict[str, int] | None) -> None:
        """Show ``{name: feature}`` (e.g. concepts found by search) as links that select the feature."""
        self.bookmarks = [
            {"label": str(k), "feature": int(v)} for k, v in (named or {}).items() if 0 <= int(v) < self.n_features
        ]

    @property
    def points(self) -> np.ndarray:
        """The coordinates shown, float32 ``[F, 2]``."""
        return bytes_to_array(self.coords, np.float32, (self.n_features, 2))

    def neighbours(self, i: int) -> list[int]:
        """Ids of the ``n_neighbours`` features nearest ``i`` (empty without a neighbours function)."""
        if self.neighbours_fn is None or i < 0:
            return []
        return _feature_ids(self.neighbours_fn(i, self.n_neighbours))

    @t.validate("selected")
    def _valid_selected(self, proposal: dict[str, Any]) -> int:
        i = int(proposal["value"])
        if i < -1 or (self.n_features and i >= self.n_features):
            raise t.TraitError(f"selected: feature ids run from 0 to {self.n_features - 1} (or -1); got {i}.")
        return i

    @t.observe("selected")
    def _selected_changed(self, change: dict[str, Any]) -> None:
        try:
            self.highlight = self.neighbours(change["new"])
        except Exception as err:
            self.highlight = []
            self.message = f"neighbours of #{change['new']} failed: {type(err).__name__}: {err}"

    @t.observe("query")
    def _query_changed(self, change: dict[str, Any]) -> None:
        self.search(change["new"])

    def search(self, query: str) -> list[int]:
        """Select by ``"123"``/``"#123"``, else run ``search_fn(query)``; highlights results, selects the first."""
        q = (query or "").strip()
        if not q:
            self.search_results, self.search_labels = [], []
            return []
        if q.lstrip("#").isdigit():
            hits = [(int(q.lstrip("#")), "")]
        elif self.search_fn is None:
            self.message = "Text search needs a search function (FeatureMap(search_fn=...)); search by id here."
            return []
        else:
            try:
                hits = _hits(self.search_fn(q))
            except Exception as err:
                self.message = f"search failed: {type(err).__name__}: {err}"
                return []
        hits = [(i, label) for i, label in hits if 0 <= i < self.n_features]
        ids = [i for i, _ in hits]
        with self.hold_sync():
            self.search_labels = [label for _, label in hits]
            self.search_results = ids
            self.message = "" if ids else f"No features match {q!r}."
            if ids:
                self.selected = ids[0]
        return ids

    def _fallback_html(self) -> str:
        return f"<p>Feature map of {self.n_features} features (interactive view needs JavaScript).</p>"
