"""Explorer: every view linked — map left, dashboard right, tabs for attribution, steering and heatmap.

Selecting a feature anywhere (map click/lasso/search, a neighbour link, an attribution bar, the steering or
heatmap picker) updates every view. The Explorer wires the views to the analysis functions
(``saewidgets.analysis``: ``feature_card``, ``steer``, ``attribute``, token activations, geometry); each callable can
be replaced by a keyword (``card_fn=``, ``steer_fn=``, ...) so the Explorer runs without a model in tests and on
precomputed data. ``to_html()`` / :func:`export_html` give the same layout as one offline HTML file in which
clicking the map shows the embedded dashboards, all client-side.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import ipywidgets as ipw
import numpy as np

from .attribution_view import AttributionView
from .dashboard import FeatureDashboard
from .feature_map import DEFAULT_NEIGHBOURS, FeatureMap
from .heatmap import TokenHeatmap
from .static_html import document, iframe, view_container, view_spec, write_atomic
from .steering_panel import SteeringPanel

# Static pages embed every feature's card up to this many features; beyond it, the densest ones (plus the
# selection and its neighbours). A card is ~2-15 kB of JSON (floats rounded to 4 significant digits).
STATIC_ALL_CARDS_UP_TO = 2048
STATIC_DEFAULT_CARDS = 1000
# The text/html fallback shown in notebooks without widget support embeds only the selection's neighbourhood.
FALLBACK_CARDS = 1 + DEFAULT_NEIGHBOURS
DEFAULT_PROMPT = "The Golden Gate Bridge is"


def _analysis() -> Any:
    """``saewidgets.analysis``, imported on first use (it pulls in torch and the model stack)."""
    import saewidgets.analysis as analysis

    return analysis


class Explorer(ipw.VBox):
    """All saewidgets views linked around one selected feature.

    Parameters: ``model`` (ModelHandle), ``sae`` (SAE), ``stats`` (FeatureStats), ``geometry``
    (FeatureGeometry; computed from the SAE's decoder if None), ``logit_effects`` (for the dashboards' logit
    tables). ``prompt`` seeds the attribution and steering tabs; ``text`` the heatmap tab. The keyword callables
    replace the analysis functions: ``card_fn(i)``, ``steer_fn(prompt, feature, multiple)``,
    ``attribute_fn(prompt, target or None)``, ``activations_fn(text, features)`` (-> TokenActivations),
    ``search_fn(query)`` (-> feature ids). ``highlights`` ``{name: feature}`` shows named features as links
    above the map.
    """

    def __init__(
        self,
        model: Any = None,
        sae: Any = None,
        stats: Any = None,
        geometry: Any = None,
        logit_effects: Any = None,
        *,
        prompt: str = DEFAULT_PROMPT,
        text: str = "",
        selected: int | None = None,
        n_neighbours: int = DEFAULT_NEIGHBOURS,
        card_fn: Callable[[int], dict] | None = None,
        steer_fn: Callable[[str, int, float], Any] | None = None,
        attribute_fn: Callable[[str, str], Any] | None = None,
        activations_fn: Callable[[str, list[int]], Any] | None = None,
        search_fn: Callable[[str], Iterable[Any]] | None = None,
        highlights: Mapping[str, int] | None = None,
        map_height: int = 460,
        background: bool = True,
    ) -> None:
        self.model, self.sae, self.stats, self.logit_effects = model, sae, stats, logit_effects
        self.geometry = geometry if geometry is not None else self._default_geometry()
        self.card_fn = card_fn or self._default_card_fn
        self.activations_fn = activations_fn or (self._default_activations_fn if model is not None else None)
        attribute_fn = attribute_fn or (self._default_attribute_fn if model is not None else None)
        steer_fn = steer_fn or (self._default_steer_fn if model is not None else None)
        search_fn = search_fn or self._default_search_fn()
        self.prompt = prompt
        self._syncing = False

        self.map = FeatureMap.from_geometry(self.geometry, stats, search_fn=search_fn, n_neighbours=n_neighbours,
                                            height=map_height)
        self.map.set_bookmarks(dict(highlights or {}))
        self.dashboard = FeatureDashboard(card_fn=self.card_fn)
        self.attribution = AttributionView(
            attribute_fn=(lambda target: attribute_fn(self.attribution_prompt.value, target)) if attribute_fn
            else None,
            background=background,
        )
        self.attribution_prompt = ipw.Text(value=prompt, description="prompt",
                                           layout=ipw.Layout(width="100%"))
        self.steering = SteeringPanel(steer_fn, prompt=prompt, background=background)
        self.heatmap = TokenHeatmap(title="")
        self.heatmap_text = ipw.Textarea(value=text, placeholder="Text to colour by the selected feature",
                                         layout=ipw.Layout(width="100%", height="70px"))
        self.heatmap_button = ipw.Button(description="Show", tooltip="Colour this text by the selected feature "
                                         "and its neighbours")
        self.heatmap_button.on_click(lambda _: self.refresh_heatmap())
        self.heatmap_error = ipw.HTML("")

        self.tabs = ipw.Tab(children=[
            ipw.VBox([self.attribution_prompt, self.attribution]),
            self.steering,
            ipw.VBox([self.heatmap_text, ipw.HBox([self.heatmap_button, self.heatmap_error]), self.heatmap]),
        ])
        for k, title in enumerate(["Attribution", "Steering", "Heatmap"]):
            self.tabs.set_title(k, title)
        self.tabs.observe(self._tab_changed, "selected_index")
        self.map.layout = ipw.Layout(width="44%", min_width="300px")
        self.dashboard.layout = ipw.Layout(width="56%", max_height="680px", overflow="auto")
        top = ipw.HBox([self.map, self.dashboard], layout=ipw.Layout(width="100%", align_items="flex-start"))
        super().__init__([top, self.tabs])
        self.add_class("saew-explorer")

        self.map.observe(lambda c: self.select(c["new"]), "selected")
        for view in (self.dashboard, self.attribution, self.steering, self.heatmap):
            view.observe(lambda c: self.select(c["new"]), "feature")
        first = selected if selected is not None else self._first_feature()
        if first is not None:
            self.select(first)

    # -- selection -------------------------------------------------------------------------------------------
    @property
    def selected(self) -> int:
        """The feature every view shows (-1 for none)."""
        return self.map.selected

    def select(self, feature: int) -> None:
        """Show ``feature`` in every view."""
        if self._syncing or feature is None or feature < 0:
            return
        self._syncing = True
        try:
            self.map.selected = int(feature)
            self.dashboard.feature = int(feature)
            self.steering.feature = int(feature)
            self.attribution.feature = int(feature)
            if int(feature) in self.heatmap.features:
                self.heatmap.feature = int(feature)
            elif self.tabs.selected_index == 2:
                self.refresh_heatmap()
        finally:
            self._syncing = False

    def show_steering(self, example: Any) -> None:
        """Show a saved steering result in the Steering tab (and the static page): a ``SteeringResult`` (its
        clamped feature from ``clamps``; pass a dict to give the multiple) or a dict with ``feature``,
        ``multiple``, ``prompts``, ``default``, ``steered``."""
        if isinstance(example, Mapping):
            feature, multiple = int(example["feature"]), float(example["multiple"])
            prompts = list(example.get("prompts") or [])
            result: Any = _Result(default=list(example["default"]), steered=list(example["steered"]))
        else:
            feature = int(next(iter(example.clamps)))
            multiple, prompts, result = self.steering.multiple, list(example.prompts), example
        with self.steering.hold_sync():
            self.steering.multiple = multiple
            if prompts:
                self.steering.prompt = prompts[0]
            self.steering.show_result(result, multiple=multiple, feature=feature)

    def _tab_changed(self, change: dict[str, Any]) -> None:
        if change["new"] == 2 and self.selected not in self.heatmap.features:
            self.refresh_heatmap()

    def refresh_heatmap(self) -> None:
        """Colour the heatmap text by the selected feature and its neighbours (one model pass)."""
        text = self.heatmap_text.value
        if not text.strip() or self.activations_fn is None or self.selected < 0:
            self.heatmap_error.value = "" if text.strip() else "<i>type some text first</i>"
            return
        features = [self.selected] + [f for f in self.map.neighbours(self.selected) if f != self.selected]
        try:
            self.heatmap.set_activations(self.activations_fn(text, features), feature=self.selected)
            self.heatmap_error.value = ""
        except Exception as err:
            self.heatmap_error.value = f"<span style='color:#c62828'>{html.escape(type(err).__name__)}: " \
                                       f"{html.escape(str(err))}</span>"

    def _first_feature(self) -> int | None:
        """The densest feature (a sensible first thing to look at), else 0."""
        density = getattr(self.stats, "density", None)
        if density is not None and len(density):
            return int(np.argmax(np.asarray(density)))
        return 0 if self.map.n_features else None

    # -- defaults wired to saewidgets.analysis ---------------------------------------------------------------
    def _default_geometry(self) -> Any:
        if self.sae is None:
            raise ValueError("Explorer needs a geometry (FeatureGeometry) or an SAE to compute one from.")
        return _analysis().feature_geometry(self.sae)

    def _default_card_fn(self, i: int) -> dict:
        return _analysis().feature_card(self.stats, i, self.logit_effects, self.geometry)

    def _default_steer_fn(self, prompt: str, feature: int, multiple: float) -> Any:
        return _analysis().steer(self.model, self.sae, prompt, {feature: multiple}, stats=self.stats)

    def _default_attribute_fn(self, prompt: str, target: str | None) -> Any:
        return _analysis().attribute(self.model, self.sae, prompt, target=target)

    def _default_activations_fn(self, text: str, features: list[int]) -> Any:
        return _analysis().token_activations(self.model, self.sae, text, features)

    def _default_search_fn(self) -> Callable[[str], Iterable[Any]] | None:
        if self.stats is None:
            return None
        return lambda query: _analysis().search_contexts(self.stats, query)

    # -- static export ---------------------------------------------------------------------------------------
    def static_cards(self, features: Iterable[int] | None = None, limit: int = STATIC_DEFAULT_CARDS) -> list[int]:
        """Which features a static page embeds cards for: ``features`` if given; all of them for maps up to
        STATIC_ALL_CARDS_UP_TO features; else the ``limit`` densest, always with the selection's neighbourhood."""
        n = self.map.n_features
        if features is not None:
            chosen = [int(f) for f in features]
        elif n <= STATIC_ALL_CARDS_UP_TO:
            chosen = list(range(n))
        else:
            density = getattr(self.stats, "density", None)
            order = np.argsort(-np.asarray(density)) if density is not None else np.arange(n)
            chosen = [int(f) for f in order[:limit]]
        if self.selected >= 0:
            chosen = [self.selected, *self.map.neighbours(self.selected), *chosen]
        return list(dict.fromkeys(f for f in chosen if 0 <= f < n))

    def to_html(self, features: Iterable[int] | None = None, title: str = "saewidgets explorer",
                limit: int = STATIC_DEFAULT_CARDS, highlights: Mapping[str, int] | None = None) -> str:
        """The Explorer as one self-contained HTML document (map, dashboards of the embedded features,
        attribution, steering and heatmap as last shown); clicking the map selects client-side.

        ``features``: which cards to embed (default: see :meth:`static_cards`); ``highlights``: ``{name:
        feature}`` links above the map (their cards are always embedded)."""
        if highlights is not None:
            self.map.set_bookmarks(dict(highlights))
        named = [b["feature"] for b in self.map.bookmarks]
        cards: dict[str, Any] = {}
        for f in dict.fromkeys([*named, *self.static_cards(features, limit)]):
            try:
                cards[str(f)] = self.dashboard_card(f)
            except Exception as err:
                cards[str(f)] = {"feature": f, "missing": f"card failed: {type(err).__name__}: {err}"}
        views = [("map", self.map), ("dashboard", self.dashboard), ("attribution", self.attribution),
                 ("steering", self.steering), ("heatmap", self.heatmap)]
        ids = {name: f"saew-{name}" for name, _ in views}
        mount = {name: view_container(ids[name], view._fallback_html()) for name, view in views}
        body = (
            "<div class=\"saew-explorer\"><div class=\"saew-explorer-top\">"
            f"<div class=\"saew-explorer-map\">{mount['map']}</div>"
            f"<div class=\"saew-explorer-dashboard\">{mount['dashboard']}</div></div>"
            "<div class=\"saew-tabs\"><div class=\"saew-tab-bar\">"
            "<button class=\"saew-tab-button saew-tab-active\">Attribution</button>"
            "<button class=\"saew-tab-button\">Steering</button>"
            "<button class=\"saew-tab-button\">Heatmap</button></div>"
            f"<div class=\"saew-tab-pane\">{mount['attribution']}</div>"
            f"<div class=\"saew-tab-pane\" style=\"display:none\">{mount['steering']}</div>"
            f"<div class=\"saew-tab-pane\" style=\"display:none\">{mount['heatmap']}</div>"
            "</div></div>"
        )
        data = {
            "views": [view_spec(view, name, ids[name]) for name, view in views],
            "cards": cards,
            "explorer": {**{name: name for name, _ in views}, "selected": self.selected},
        }
        return document(title, body, data)

    def dashboard_card(self, feature: int) -> dict:
        """The card of ``feature`` as a static page embeds it (JSON-safe, floats to 4 significant digits)."""
        from .serializers import jsonable, round_floats

        return round_floats(jsonable(dict(self.card_fn(int(feature)))))

    def save_html(self, path: str | Path, **kwargs: Any) -> Path:
        """Write :meth:`to_html` to ``path`` atomically."""
        return write_atomic(path, self.to_html(**kwargs))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            try:
                neighbourhood = [self.selected, *self.map.neighbours(self.selected)] if self.selected >= 0 else []
                bundle["text/html"] = iframe(self.to_html(features=neighbourhood[:FALLBACK_CARDS]), height=900)
            except Exception as err:
                bundle["text/html"] = f"<pre>static view unavailable: {html.escape(type(err).__name__)}</pre>"
        return bundle


class _Result:
    """A minimal SteeringResult for results saved as plain dicts."""

    def __init__(self, default: list[str], steered: list[str]) -> None:
        self.default, self.steered = default, steered


def export_html(path: str | Path, explorer: Explorer, **kwargs: Any) -> Path:
    """Write ``explorer.to_html(**kwargs)`` to ``path`` atomically (temp file + rename); returns the path."""
    return explorer.save_html(path, **kwargs)


