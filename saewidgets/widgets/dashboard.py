"""FeatureDashboard: the paper's feature view (statistics, top contexts, quantile samples, histogram, logits,
neighbours) for one feature card from ``saewidgets.analysis.feature_card``."""

from __future__ import annotations

import html
from typing import Any, Callable, Mapping

import traitlets as t

from ._base import ViewWidget
from .serializers import jsonable

CardFn = Callable[[int], Mapping[str, Any]]


def dedupe_contexts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Contexts with identical tokens and activating position shown once, in their first (strongest) place,
    with ``count`` = how many times they occurred (a corpus repeats boilerplate; 15 equal rows say nothing)."""
    seen: dict[tuple, dict[str, Any]] = {}
    for item in items:
        key = (tuple(item.get("tokens") or ()), item.get("center"))
        if key in seen:
            seen[key]["count"] = seen[key].get("count", 1) + 1
        else:
            seen[key] = dict(item)
    return list(seen.values())


def display_card(card: Mapping[str, Any], digits: int | None = None) -> dict[str, Any]:
    """A feature card as the dashboard shows it: JSON-safe, top contexts and quantile samples de-duplicated;
    ``digits``: floats rounded to that many significant digits (a static page's cards)."""
    to_dict = getattr(card, "to_dict", None)  # a FeatureCard: its rows become dicts in one pass
    clean = jsonable(to_dict() if callable(to_dict) else dict(card), digits)
    if clean.get("top"):
        clean["top"] = dedupe_contexts(clean["top"])
    for band in clean.get("quantiles") or []:
        if band.get("examples"):
            band["examples"] = dedupe_contexts(band["examples"])
    return clean


class FeatureDashboard(ViewWidget):
    """One feature's dashboard. Clicking a neighbour sets ``feature``; with ``card_fn`` the dashboard then
    fetches and shows that feature's card (``card_fn(i) -> card dict``), so it is navigable on its own."""

    _view = "dashboard"
    card = t.Dict().tag(sync=True)
    feature = t.Int(-1).tag(sync=True)
    loading = t.Bool(False).tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    _fallback_height = 640

    def __init__(
        self,
        card: Mapping[str, Any] | None = None,
        *,
        card_fn: CardFn | None = None,
        feature: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.card_fn = card_fn
        if card is not None:
            self.show_card(card)
        elif feature is not None:
            self.feature = int(feature)

    def show_card(self, card: Mapping[str, Any]) -> None:
        """Display ``card`` (a feature-card dict) and set ``feature`` to its id."""
        clean = display_card(card)
        with self.hold_sync():
            self.error = ""
            self.card = clean
            self.feature = int(clean.get("feature", -1))

    @t.observe("feature")
    def _feature_changed(self, change: dict[str, Any]) -> None:
        i = change["new"]
        if self.card_fn is None or i < 0 or self.card.get("feature") == i:
            return
        self.loading = True
        try:
            self.show_card(self.card_fn(i))
        except Exception as err:  # shown in the view
            self.error = f"Could not load feature #{i}: {type(err).__name__}: {err}"
        finally:
            self.loading = False

    def _fallback_html(self) -> str:
        c = self.card or {}
        if not c:
            return "<p>No feature selected.</p>"
        rows = "".join(
            f"<li>{html.escape(''.join(map(str, item.get('tokens', []))))}</li>" for item in c.get("top", [])[:10]
        )
        label = c.get("label") or {}
        label_html = (
            f"<p><i>{html.escape(str(label.get('kind')))} label:</i> {html.escape(str(label.get('text')))}</p>"
            if label.get("text")
            else ""
        )
        return (
            f"<h3>Feature #{int(c.get('feature', -1))}</h3>{label_html}"
            f"<p>density {html.escape(str(c.get('density')))}, max activation "
            f"{html.escape(str(c.get('max_act')))}</p><ol>{rows}</ol>"
        )
