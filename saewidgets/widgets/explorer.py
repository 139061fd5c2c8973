"""Explorer: every view linked in ONE anywidget — map left, dashboard right, tabs for attribution, steering and heatmap.

Selecting a feature anywhere (map click/lasso/search, a neighbour link, an attribution bar, the steering or
heatmap picker) updates every view. The Explorer wires the views to the analysis functions
(``saewidgets.analysis``: ``feature_card``, ``steer``, ``attribute``, token activations, geometry); each callable can
be replaced by a keyword (``card_fn=``, ``steer_fn=``, ...) so the Explorer runs without a model in tests and on
precomputed data.

One widget, one ES module: the views (``ex.map``, ``ex.dashboard``, ``ex.attribution``, ``ex.steering``,
``ex.heatmap``) keep their Python API and logic but open no comm of their own; their synced traits are mirrored
into the Explorer's traits as ``<view>_<trait>`` and ``static/explorer.js`` renders each view's JS against its
slice of the Explorer's model. So the Explorer renders wherever anywidget does (JupyterLab, Notebook 7, VS Code,
Colab, marimo's ``mo.ui.anywidget``). ``to_html()`` / :func:`export_html` run the same JS in one offline HTML file
in which selecting a feature shows its embedded (compressed) dashboard, all client-side; a displayed Explorer
also leaves such a page (its neighbourhood only) in the notebook, shown when the notebook is reopened without a
kernel.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import anywidget
import numpy as np
import traitlets as t

from ._base import ViewWidget
from ._jobs import SingleFlight, cancel_kwargs
from .attribution_view import AttributionView
from .dashboard import FeatureDashboard, display_card
from .feature_map import DEFAULT_NEIGHBOURS, FeatureMap
from .heatmap import TokenHeatmap
from .static_html import (
    document,
    iframe,
    offline_copy,
    packed_cards,
    quantized_card,
    view_container,
    view_spec,
    write_atomic,
)
from .steering_panel import SteeringPanel

if TYPE_CHECKING:
    from ..analysis import (
        Attribution,
        FeatureGeometry,
        FeatureStats,
        LogitEffects,
        SteeringExample,
        SteeringResult,
        SteeringVector,
        TokenActivations,
    )
    from ..analysis.explain import Labels
    from ..models import ModelHandle
    from ..sae import SAE

# Static pages embed every feature's card up to this many features; beyond it, the densest ones (plus the
# selection and its neighbours). Cards are de-duplicated, rounded to 4 significant digits and gzip-compressed.
STATIC_ALL_CARDS_UP_TO = 16384
STATIC_DEFAULT_CARDS = 4096
# The copy left in a notebook for viewing without a kernel embeds only the selection's neighbourhood.
FALLBACK_CARDS = 1 + DEFAULT_NEIGHBOURS
DEFAULT_PROMPT = "The Golden Gate Bridge is"
DEFAULT_TEXT = (
    "On a foggy morning we walked across the Golden Gate Bridge from San Francisco, then took the "
    "ferry past Alcatraz. Later we flew to Paris and climbed the Eiffel Tower."
)
TABS = ("attribution", "steering", "heatmap")
# The views the Explorer composes: its attribute name (and trait prefix) -> view class.
CHILDREN: dict[str, type[ViewWidget]] = {
    "map": FeatureMap,
    "dashboard": FeatureDashboard,
    "attribution": AttributionView,
    "steering": SteeringPanel,
    "heatmap": TokenHeatmap,
}


def _analysis() -> Any:
    """``saewidgets.analysis``, imported on first use (it pulls in torch and the model stack)."""
    import saewidgets.analysis as analysis

    return analysis


def _mirrored_traits() -> dict[str, t.TraitType]:
    """One synced trait per view trait, named ``<view>_<trait>``; the view object stays the source of truth
    (it validates), so the mirrors accept any value."""
    return {
        f"{prefix}_{name}": t.Any(None, allow_none=True).tag(sync=True)
        for prefix, cls in CHILDREN.items()
        for name in cls.state_names()
    }


_ExplorerState = type(
    "_ExplorerState",
    (ViewWidget,),
    {"__doc__": "The Explorer's synced state: every composed view's traits, mirrored.", **_mirrored_traits()},
)


class Explorer(_ExplorerState):  # type: ignore[misc, valid-type]  # a base class built at run time by type()
    """All saewidgets views linked around one selected feature, as one widget.

    Parameters: ``model`` (ModelHandle), ``sae`` (SAE), ``stats`` (FeatureStats), ``geometry``
    (FeatureGeometry; computed from the SAE's decoder if None), ``logit_effects`` (for the dashboards' logit
    tables). ``prompt`` seeds the attribution and steering tabs; ``text`` the heatmap tab. The keyword callables
    replace the analysis functions: ``card_fn(i)``, ``steer_fn(prompt, feature, multiple)``,
    ``attribute_fn(prompt, target or None)``, ``activations_fn(text, features)`` (-> TokenActivations),
    ``search_fn(query)`` (-> feature ids). ``highlights`` ``{name: feature}`` shows named features as links
    above the map. ``labels`` (``saewidgets.analysis.explain.Labels``) puts each feature's explanation in the
    dashboard header and the map's hover, and makes the map's search look in labels first. ``steering_vector``
    (e.g. DiffMean, ``steering_vector(acts, docs)``) or ``vector_fn(prompt, alpha)`` adds vector steering beside
    the feature's in the Steering tab.
    """

    _view = "explorer"
    _composes = ("heatmap", "dashboard", "feature_map", "attribution_view", "steering_panel")
    _fallback_height = 900
    tab = t.Enum(TABS, default_value="attribution").tag(sync=True)
    heatmap_text = t.Unicode("").tag(sync=True)
    heatmap_error = t.Unicode("").tag(sync=True)
    heatmap_busy = t.Bool(False).tag(sync=True)
    # Ties the offline copy left in the notebook to this widget, so the live view can hide it.
    fallback_id = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        model: ModelHandle | None = None,
        sae: SAE | None = None,
        stats: FeatureStats | None = None,
        geometry: FeatureGeometry | None = None,
        logit_effects: LogitEffects | None = None,
        *,
        prompt: str = DEFAULT_PROMPT,
        text: str = DEFAULT_TEXT,
        selected: int | None = None,
        n_neighbours: int = DEFAULT_NEIGHBOURS,
        card_fn: Callable[[int], Mapping[str, Any]] | None = None,
        steer_fn: Callable[[str, int, float], SteeringResult] | None = None,
        attribute_fn: Callable[[str, str | None], Attribution] | None = None,
        activations_fn: Callable[[str, list[int]], TokenActivations] | None = None,
        search_fn: Callable[[str], Iterable[Any]] | None = None,
        highlights: Mapping[str, int] | None = None,
        labels: Labels | None = None,
        steering_vector: SteeringVector | None = None,
        vector_fn: Callable[[str, float], SteeringResult] | None = None,
        map_height: int = 440,
        background: bool = True,
    ) -> None:
        super().__init__()
        self.model, self.sae, self.stats, self.logit_effects = model, sae, stats, logit_effects
        self.labels = labels
        self.geometry = geometry if geometry is not None else self._default_geometry()
        self.card_fn = card_fn or self._default_card_fn
        self.activations_fn = activations_fn or (self._default_activations_fn if model is not None else None)
        attribute_fn = attribute_fn or (self._default_attribute_fn if model is not None else None)
        steer_fn = steer_fn or (self._default_steer_fn if model is not None else None)
        search_fn = search_fn or self._default_search_fn()
        self.prompt = prompt
        self.background = background
        self._syncing = False
        self._heatmap_jobs = SingleFlight(
            on_busy=lambda b: setattr(self, "heatmap_busy", b), on_error=lambda e: setattr(self, "heatmap_error", e)
        )

        self.map = FeatureMap.from_geometry(
            self.geometry, stats, search_fn=search_fn, n_neighbours=n_neighbours, height=map_height, embedded=True
        )
        self.map.set_bookmarks(dict(highlights or {}))
        if labels is not None:
            self.map.set_labels(labels.for_views())
        self.dashboard = FeatureDashboard(card_fn=self.card_fn, embedded=True)
        self.attribution = AttributionView(
            attribute_fn=(lambda target: attribute_fn(self.attribution.prompt, target)) if attribute_fn else None,
            background=background,
            embedded=True,
            prompt=prompt,
            prompt_editable=attribute_fn is not None,
        )
        self.steering_vector = steering_vector
        if vector_fn is None and steering_vector is not None and model is not None:
            vector_fn = self._default_vector_fn
        self.steering = SteeringPanel(
            steer_fn, prompt=prompt, background=background, embedded=True, vector_fn=vector_fn
        )
        self.heatmap = TokenHeatmap(title="", embedded=True)
        self.heatmap_text = text
        self.fallback_id = uuid.uuid4().hex
        self._mirror_all()

        self.map.observe(lambda c: self.select(c["new"]), "selected")
        for view in (self.dashboard, self.attribution, self.steering, self.heatmap):
            view.observe(lambda c: self.select(c["new"]), "feature")
        self.on_msg(self._on_frontend_msg)
        first = selected if selected is not None else self._first_feature()
        if first is not None:
            self.select(first)

    # -- one model for all views -----------------------------------------------------------------------------
    def _mirror_all(self) -> None:
        """Copy every view's state into the Explorer's traits, and keep both in step from now on."""
        self._child_of: dict[str, tuple[ViewWidget, str]] = {}
        with self.hold_sync():
            for prefix in CHILDREN:
                child = getattr(self, prefix)
                names = child.state_names()
                for name in names:
                    self._child_of[f"{prefix}_{name}"] = (child, name)
                    setattr(self, f"{prefix}_{name}", getattr(child, name))
                child.observe(lambda c, p=prefix: setattr(self, f"{p}_{c['name']}", c["new"]), names=names)
        self.observe(self._to_child, names=list(self._child_of))

    def _to_child(self, change: dict[str, Any]) -> None:
        """A view trait changed in the front-end: set it on the view (which validates and reacts)."""
        child, name = self._child_of[change["name"]]
        try:
            setattr(child, name, change["new"])
        except t.TraitError as err:
            setattr(self, change["name"], getattr(child, name))  # show the view's value again
            if isinstance(child, FeatureMap):
                child.message = str(err)

    def _on_frontend_msg(self, widget: Any, content: dict[str, Any], buffers: Any) -> None:
        """Messages from explorer.js: a view's own message (``{"view": prefix, "msg": ...}``), the liveness
        handshake, and the heatmap tab's Show/Stop."""
        if not isinstance(content, dict):
            return
        view = content.get("view")
        if view in CHILDREN:
            child = getattr(self, view)
            handler = getattr(child, "_on_frontend_msg", None)
            if handler is not None:
                handler(child, content.get("msg") or {}, buffers)
        elif content.get("event") == "hello":
            self.send({"event": "live"})
        elif content.get("event") == "heatmap":
            if "text" in content:
                self.heatmap_text = str(content["text"])
            self._refresh_heatmap_after_current()
        elif content.get("event") == "heatmap_stop":
            self._heatmap_jobs.stop()

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
            elif self.tab == "heatmap":
                self._refresh_heatmap_after_current()
        finally:
            self._syncing = False

    def show_steering(self, example: SteeringExample) -> None:
        """Show a saved steering run in the Steering tab (and the static page). A `steer` result becomes one with
        ``SteeringExample.from_result(result, multiple)``."""
        with self.steering.hold_sync():
            self.steering.multiple = example.multiple
            if example.prompts:
                self.steering.prompt = example.prompts[0]
            self.steering.show_result(example, multiple=example.multiple, feature=example.feature)

    @t.observe("tab")
    def _tab_changed(self, change: dict[str, Any]) -> None:
        if change["new"] == "heatmap" and self.selected not in self.heatmap.features:
            self._refresh_heatmap_after_current()

    def _refresh_heatmap_after_current(self) -> None:
        """`refresh_heatmap` for what is asked now, after the heatmap job in flight (if any): the one this tab
        starts when it opens must not swallow a Show clicked before the browser heard it was busy."""
        self._heatmap_jobs.run_after(lambda: self.refresh_heatmap(wait=not self.background))

    def refresh_heatmap(self, wait: bool = True) -> bool:
        """Colour the heatmap text by the selected feature and its neighbours (one model pass), each on its own
        maximum over the corpus. ``wait=False`` runs it in the background (Stop can drop it). False when
        nothing was started (no text, no activations function, or one already running)."""
        text, activations_fn = self.heatmap_text, self.activations_fn
        if not text.strip() or activations_fn is None or self.selected < 0:
            self.heatmap_error = "" if text.strip() else "type some text first"
            return False
        features = [self.selected] + [f for f in self.map.neighbours(self.selected) if f != self.selected]
        selected = self.selected
        max_act = getattr(self.stats, "max_act", None)
        scales = [float(max_act[f]) for f in features] if max_act is not None else None
        return self._heatmap_jobs.start(
            lambda: activations_fn(text, features),
            lambda acts: self.heatmap.set_activations(acts, feature=selected, scales=scales),
            background=not wait,
        )

    def wait(self, timeout: float | None = None) -> None:
        """Block until the steering, attribution and heatmap jobs in flight (if any) finish."""
        for jobs in (self.steering._jobs, self.attribution._jobs, self._heatmap_jobs):
            jobs.join(timeout)

    def _first_feature(self) -> int | None:
        """The densest feature (a sensible first thing to look at), else 0."""
        density = getattr(self.stats, "density", None)
        if density is not None and len(density):
            return int(np.argmax(np.asarray(density)))
        return 0 if self.map.n_features else None

    # -- defaults wired to saewidgets.analysis ---------------------------------------------------------------
    def _default_geometry(self) -> FeatureGeometry:
        if self.sae is None:
            raise ValueError("Explorer needs a geometry (FeatureGeometry) or an SAE to compute one from.")
        return _analysis().feature_geometry(self.sae)

    def _default_card_fn(self, i: int) -> Mapping[str, Any]:
        return _analysis().feature_card(self.stats, i, self.logit_effects, self.geometry, self.labels)

    def _default_steer_fn(self, prompt: str, feature: int, multiple: float) -> SteeringResult:
        if self.stats is not None and float(self.stats.max_act[self.stats.check_feature(feature)]) <= 0:
            # steer() would refuse too, but its advice (units='activation') is for Python, not for the slider
            raise ValueError(
                f"Feature {feature} never fired in the statistics corpus (max activation 0), so the slider's "
                "multiple of its max means nothing: select a feature that fired (density above 0)."
            )
        steer = _analysis().steer
        return steer(self.model, self.sae, prompt, {feature: multiple}, stats=self.stats, **cancel_kwargs(steer))

    def _default_vector_fn(self, prompt: str, alpha: float) -> SteeringResult:
        steer_vector = _analysis().steer_vector
        return steer_vector(self.model, prompt, self.steering_vector, alpha, **cancel_kwargs(steer_vector))

    def _default_attribute_fn(self, prompt: str, target: str | None) -> Attribution:
        attribute = _analysis().attribute
        return attribute(self.model, self.sae, prompt, target=target, **cancel_kwargs(attribute))

    def _default_activations_fn(self, text: str, features: list[int]) -> TokenActivations:
        token_activations = _analysis().token_activations
        return token_activations(self.model, self.sae, text, features, **cancel_kwargs(token_activations))

    def _default_search_fn(self) -> Callable[[str], Iterable[Any]] | None:
        if self.stats is None:
            return None
        if self.labels is None:
            return lambda query: _analysis().search_contexts(self.stats, query)
        from ..analysis.explain import search_labels

        def search(query: str) -> list[Mapping[str, Any]]:
            labels = self.labels
            hits: list[Mapping[str, Any]] = [
                {"feature": h.feature, "example": f"{h.kind} label: {h.text}"}
                for h in (search_labels(labels, query) if labels is not None else [])
            ]
            seen = {h["feature"] for h in hits}
            return hits + [h for h in _analysis().search_contexts(self.stats, query) if h["feature"] not in seen]

        return search

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

    def to_html(
        self,
        features: Iterable[int] | None = None,
        title: str = "saewidgets explorer",
        limit: int = STATIC_DEFAULT_CARDS,
        highlights: Mapping[str, int] | None = None,
    ) -> str:
        """The Explorer as one self-contained HTML document (map, dashboards of the embedded features,
        attribution, steering and heatmap as last shown); selecting a feature works client-side.

        ``features``: which cards to embed (default: see :meth:`static_cards`); ``highlights``: ``{name:
        feature}`` links above the map (their cards are always embedded)."""
        if highlights is not None:
            self.map.set_bookmarks(dict(highlights))
        named = [b["feature"] for b in self.map.bookmarks]
        cards: dict[int, Any] = {}
        for f in dict.fromkeys([*named, *self.static_cards(features, limit)]):
            try:
                cards[f] = self.static_card(f)
            except Exception as err:
                cards[f] = {"feature": f, "missing": f"card failed: {type(err).__name__}: {err}"}
        element_id = "saew-explorer-0"
        body = view_container(element_id, self._fallback_html())
        data = {"views": [view_spec(self, "explorer", element_id)], "cards": packed_cards(cards)}
        return document(title, body, data)

    def static_card(self, feature: int) -> dict:
        """The card of ``feature`` as a static page embeds it: de-duplicated, floats to 4 significant digits,
        token activations quantized (see ``static_html.quantized_card``)."""
        return quantized_card(display_card(self.card_fn(int(feature)), digits=4))

    def save_html(self, path: str | Path, **kwargs: Any) -> Path:
        """Write :meth:`to_html` to ``path`` atomically."""
        return write_atomic(path, self.to_html(**kwargs))

    def _fallback_html(self) -> str:
        return (
            f"<p>saewidgets Explorer of {self.map.n_features} features (the interactive view needs "
            "JavaScript).</p>" + self.dashboard._fallback_html()
        )

    def offline_html(self) -> str:
        """What a notebook keeps for viewing without a kernel: this Explorer as a static page of the selection's
        neighbourhood, in an iframe tagged with ``fallback_id`` (the live view hides it)."""
        neighbourhood = [self.selected, *self.map.neighbours(self.selected)] if self.selected >= 0 else []
        page = self.to_html(features=neighbourhood[:FALLBACK_CARDS])
        return offline_copy(iframe(page, height=self._fallback_height), self.fallback_id)

    def _ipython_display_(self, **kwargs: Any) -> None:
        """Two outputs: the offline copy (``text/html``; shown when the notebook is reopened without a kernel,
        hidden by the live view, which finds it by ``fallback_id`` in hosts that render outputs in one document:
        JupyterLab, Notebook 7, VS Code) and the live widget."""
        from IPython.display import display

        # Colab renders each output in its own frame, where the live view cannot hide the copy: no copy there.
        if "google.colab" not in sys.modules:
            try:
                display({"text/html": self.offline_html(), "text/plain": ""}, raw=True)
            except Exception as err:  # the offline copy must never stop the live widget from showing
                display({"text/plain": f"(offline copy unavailable: {type(err).__name__}: {err})"}, raw=True)
        bundle = anywidget.AnyWidget._repr_mimebundle_(self, **kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, None)
        display(data, metadata=meta, raw=True)

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """For front-ends that ask for one bundle: the widget view plus the offline copy as ``text/html``."""
        bundle = anywidget.AnyWidget._repr_mimebundle_(self, **kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, None)
        data = dict(data or {})
        try:
            data["text/html"] = self.offline_html()
        except Exception as err:  # a fallback must never break display of the live widget
            data["text/html"] = f"<pre>static view unavailable: {type(err).__name__}</pre>"
        return data, dict(meta or {})


def export_html(path: str | Path, explorer: Explorer, **kwargs: Any) -> Path:
    """Write ``explorer.to_html(**kwargs)`` to ``path`` atomically (temp file + rename); returns the path."""
    return explorer.save_html(path, **kwargs)
