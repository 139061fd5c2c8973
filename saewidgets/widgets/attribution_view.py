"""AttributionView: which features push the model towards a chosen next token.

Takes an ``Attribution`` (``tokens``, ``target``, ``top(n) -> [{"feature", "attribution", "ablation",
"positions"}]``; positions as ints or ``{"position", ...}`` dicts) and optionally ``attribute_fn(target) ->
Attribution`` to recompute for a target the user types (``None`` when left empty: the model's own top token).
Clicking a bar sets ``feature`` (and calls ``on_feature``). ``prompt_editable=True`` shows the ``prompt`` as an
editable box (the Explorer's ``attribute_fn`` reads it); Stop drops a running attribution.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import traitlets as t

from ._base import ViewWidget
from ._jobs import SingleFlight
from .serializers import jsonable

if TYPE_CHECKING:
    from ..analysis import Attribution

AttributeFn = Callable[[str | None], "Attribution"]  # target token text, or None for the model's top token
DEFAULT_ROWS = 10


class AttributionView(ViewWidget):
    """The prompt, a target-token picker, and the top ``n`` features for that target as bars."""

    _view = "attribution_view"
    tokens = t.List(t.Unicode()).tag(sync=True)
    target = t.Unicode("").tag(sync=True)  # what the user typed (raw token text, e.g. " Paris")
    target_label = t.Unicode("").tag(sync=True)  # the attribution's own description of its target
    target_options = t.List(t.Unicode()).tag(sync=True)
    rows = t.List(t.Dict()).tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    prompt_editable = t.Bool(False).tag(sync=True)
    feature = t.Int(-1).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    error = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        attribution: Attribution | None = None,
        *,
        attribute_fn: AttributeFn | None = None,
        n: int = DEFAULT_ROWS,
        target_options: Sequence[str] | None = None,
        on_feature: Callable[[int], None] | None = None,
        background: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.attribute_fn = attribute_fn
        self.n = int(n)
        self.on_feature = on_feature
        self.background = background
        self._jobs = SingleFlight(
            on_busy=lambda b: setattr(self, "busy", b), on_error=lambda e: setattr(self, "error", e)
        )
        if target_options is not None:
            self.target_options = [str(x) for x in target_options]
        if attribution is not None:
            self.set_attribution(attribution)
        self.on_msg(self._on_frontend_msg)

    def set_attribution(self, attribution: Attribution) -> None:
        """Show ``attribution``: its prompt tokens, target and top ``n`` features."""
        rows = []
        for r in attribution.top(self.n):
            row = jsonable({k: v for k, v in dict(r).items() if k != "positions"})
            row["feature"] = int(row["feature"])
            row["positions"] = [int(p["position"] if isinstance(p, Mapping) else p) for p in (r.get("positions") or [])]
            rows.append(row)
        with self.hold_sync():
            self.tokens = [str(x) for x in attribution.tokens]
            self.target_label = str(attribution.target)
            self.rows = rows
            if not self.target_options:
                self.target_options = list(dict.fromkeys(self.tokens))

    def attribute(self, target: str | None = None, wait: bool = False) -> bool:
        """Recompute for ``target`` (raw token text; empty or None: the model's top token) through
        ``attribute_fn``; False if one is already running or none is set."""
        attribute_fn = self.attribute_fn
        if attribute_fn is None:
            self.error = "No attribute_fn: this view can only show the attribution it was given."
            return False
        target = target or None
        if target is not None:
            self.target = target
        started = self._jobs.start(
            lambda: attribute_fn(target), self.set_attribution, background=self.background and not wait
        )
        return started

    def stop(self) -> bool:
        """Stop the attribution in flight (its result is dropped)."""
        return self._jobs.stop()

    def _on_frontend_msg(self, widget: Any, content: dict[str, Any], buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("event") == "attribute":
            if "prompt" in content and self.prompt_editable:
                self.prompt = str(content["prompt"])
            self.attribute(str(content.get("target", self.target)))
        elif content.get("event") == "stop":
            self.stop()

    @t.observe("feature")
    def _feature_changed(self, change: dict[str, Any]) -> None:
        if self.on_feature is not None and change["new"] >= 0:
            self.on_feature(change["new"])

    def _fallback_html(self) -> str:
        items = "".join(f"<li>#{int(r['feature'])}: {html.escape(str(r.get('attribution')))}</li>" for r in self.rows)
        return (
            f"<p>{html.escape(''.join(self.tokens))}</p><p>target {html.escape(self.target_label)}</p><ol>{items}</ol>"
        )
