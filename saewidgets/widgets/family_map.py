"""FamilyMap: feature splitting across a family of SAEs, as Scaling Monosemanticity draws it.

One UMAP of every size's decoder directions (`saewidgets.analysis.splitting.joint_geometry`), coloured by SAE size;
the parent links of `match_features` tell, for a selected feature, which features of the larger SAEs refine it.
Selecting a feature (click, or ``selected = (size, feature)``) rings its parents and descendants on the map and
shows its dashboard beside its children's. Cards come from ``card_fns[size](feature)`` as features are selected
(live), or from those embedded with `embed_subtree` (static pages: ``to_html()`` / ``save_html()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import traitlets as t

from ._base import ViewWidget
from .dashboard import CardFn, display_card
from .serializers import array_to_bytes

if TYPE_CHECKING:
    from ..analysis import FeatureStats, FeatureTree, JointGeometry
    from ..sae.family import SAEFamily

DEFAULT_MAX_CHILDREN = 4


class FamilyMap(ViewWidget):
    """The family's joint map with linked dashboards; ``selected`` is ``[size, feature]`` (``[]`` for none)."""

    _view = "family_map"
    _composes = ("feature_map", "dashboard")
    _fallback_height = 900
    coords = t.Bytes(b"").tag(sync=True)
    levels = t.Bytes(b"").tag(sync=True)
    sizes = t.List(t.Int()).tag(sync=True)
    parents = t.List(t.List(t.Int())).tag(sync=True)
    cosines = t.List(t.List(t.Float())).tag(sync=True)
    selected = t.List(t.Int()).tag(sync=True)
    cards = t.Dict().tag(sync=True)
    max_children = t.Int(DEFAULT_MAX_CHILDREN).tag(sync=True)
    height = t.Int(460).tag(sync=True)
    message = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        geometry: JointGeometry,
        tree: FeatureTree,
        *,
        card_fns: Mapping[int, CardFn] | None = None,
        selected: tuple[int, int] | None = None,
        max_children: int = DEFAULT_MAX_CHILDREN,
        **kwargs: Any,
    ) -> None:
        """``geometry``: a `JointGeometry`; ``tree``: the `FeatureTree` of the same family; ``card_fns``:
        ``{size: card_fn}`` giving each SAE's feature cards (`feature_card`), e.g. from each size's stats."""
        super().__init__(**kwargs)
        sizes = [int(s) for s in tree.sizes]
        if sorted(set(np.asarray(geometry.sizes).tolist())) != sizes:
            raise ValueError(
                f"The map holds SAEs of {sorted(set(np.asarray(geometry.sizes).tolist()))} features but the tree "
                f"{sizes}: make both from the same family."
            )
        self.tree, self.card_fns = tree, dict(card_fns or {})
        with self.hold_sync():
            self.sizes = sizes
            self.coords = array_to_bytes(np.asarray(geometry.coords, dtype=np.float32))
            self.levels = array_to_bytes(np.searchsorted(sizes, geometry.sizes).astype(np.int32), np.int32)
            self.parents = [p.astype(int).tolist() for p in tree.parents]
            self.cosines = [np.round(c.astype(float), 3).tolist() for c in tree.cosines]
            self.max_children = int(max_children)
        if selected is not None:
            self.selected = [int(selected[0]), int(selected[1])]

    @classmethod
    def from_family(cls, family: SAEFamily, stats: Mapping[int, FeatureStats], **kwargs: Any) -> FamilyMap:
        """The view of a `SAEFamily`: its joint map and feature tree, and dashboards from ``stats`` (``{size:
        FeatureStats}`` of each SAE on the same tokens). ``kwargs`` go to `FamilyMap` (``selected=``, ...)."""
        from ..analysis import feature_card, joint_geometry, match_features

        missing = [s for s in family.sizes if s not in stats]
        if missing:
            raise ValueError(
                f"stats has no statistics for the {missing}-feature SAEs; pass {{size: feature_stats(...)}}."
            )
        card_fns = {size: (lambda i, s=stats[size]: feature_card(s, i)) for size in family.sizes}
        return cls(joint_geometry(family), match_features(family), card_fns=card_fns, **kwargs)

    @t.validate("selected")
    def _valid_selected(self, proposal: dict[str, Any]) -> list[int]:
        value = list(proposal["value"])
        if not value:
            return []
        if len(value) != 2 or value[0] not in self.sizes or not 0 <= value[1] < value[0]:
            raise t.TraitError(f"selected: pass (size, feature) with size in {self.sizes} and 0 <= feature < size.")
        return [int(value[0]), int(value[1])]

    @t.observe("selected")
    def _selected_changed(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.load_cards(*change["new"])

    def shown(self, size: int, feature: int) -> list[tuple[int, int]]:
        """The (size, feature) whose cards the view shows for this selection: it and its first children."""
        kids = self.tree.children(size, feature)[: self.max_children]
        if not kids:
            return [(size, feature)]
        child_size = self.sizes[self.sizes.index(size) + 1]
        return [(size, feature), *((child_size, c["feature"]) for c in kids)]

    def load_cards(self, size: int, feature: int) -> None:
        """Fetch the cards of ``feature`` and its shown children that the view does not hold yet."""
        new = {}
        try:
            for s, f in self.shown(size, feature):
                if f"{s}/{f}" not in self.cards and s in self.card_fns:
                    new[f"{s}/{f}"] = display_card(self.card_fns[s](f))
        except Exception as err:  # shown in the view
            self.message = f"could not load a card: {type(err).__name__}: {err}"
        if new:
            self.cards = {**self.cards, **new}

    def embed_subtree(self, size: int, feature: int) -> None:
        """Hold the cards of ``feature`` and of every descendant the view can show (for a static page, where no
        kernel fetches them): each level's shown children, down the family."""
        todo = [(size, feature)]
        while todo:
            s, f = todo.pop()
            self.load_cards(s, f)
            todo.extend(pair for pair in self.shown(s, f)[1:])

    def _fallback_html(self) -> str:
        sizes = ", ".join(f"{s:,}" for s in self.sizes)
        return f"<p>Feature-splitting map of SAEs of {sizes} features (interactive view needs JavaScript).</p>"
