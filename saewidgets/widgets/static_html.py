"""Self-contained static HTML: every view (and the linked Explorer) as one file that opens offline.

All JS and CSS are inlined from ``widgets/static``; data is embedded as JSON inside
``<script type="application/json">`` with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\u003c`` etc., so
no token string can close the script element or inject markup. Views run through ``static_host.js``, which stands
in for the anywidget model; nothing is fetched from the network.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Iterable

from .._cache import atomic_write_bytes
from ._base import EXPORT_LINE, CSS_PATH, read_static

__all__ = ["script_json", "static_bundle_js", "document", "view_document", "iframe", "write_atomic"]

VIEWS = ("heatmap", "dashboard", "feature_map", "attribution_view", "steering_panel")
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj: Any) -> str:
    """JSON text safe to place inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` or line
    separators survive literally, so ``</script>`` in the data cannot end the element."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, esc in _JSON_ESCAPES.items():
        text = text.replace(raw, esc)
    return text


def static_bundle_js(views: Iterable[str] = VIEWS) -> str:
    """One classic script: the shared helpers, each view registered as ``SAEW.views[name]``, and the host."""
    parts = [read_static("static_host.js"), read_static("common.js")]
    for view in views:
        body = read_static(f"{view}.js").replace(EXPORT_LINE, f"SAEW.views[{json.dumps(view)}] = view;")
        parts.append(f"(function () {{\n{body}\n}})();")
    js = "\n".join(parts)
    if "</script" in js.lower() or "<!--" in js:
        raise RuntimeError("static JS must not contain '</script' or '<!--' (it is inlined into HTML)")
    return js


def document(title: str, body: str, data: dict[str, Any]) -> str:
    """A full HTML document: ``body`` (trusted markup built here, with every data string escaped) plus the
    embedded JSON ``data`` and the inlined scripts that boot the views from it."""
    css = CSS_PATH.read_text(encoding="utf-8")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        # No network: scripts and styles inline only, images only from data: URLs.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{css}\n</style>\n</head>\n"
        f"<body class=\"saew-page\">\n{body}\n"
        f"<script type=\"application/json\" id=\"saew-data\">{script_json(data)}</script>\n"
        f"<script>\n{static_bundle_js()}\n</script>\n"
        "<script>SAEW.boot();</script>\n</body>\n</html>\n"
    )


def view_container(element_id: str, fallback_html: str, cls: str = "") -> str:
    """The element a view mounts into, holding its script-free fallback until JS replaces it."""
    return (f"<div id=\"{html.escape(element_id)}\" class=\"saew-mount {html.escape(cls)}\">"
            f"<div class=\"saew-fallback\">{fallback_html}</div></div>")


def view_spec(widget: Any, name: str, element_id: str) -> dict[str, Any]:
    """The boot record of one view: where to mount, which JS view, and its state."""
    return {"id": element_id, "name": name, "view": widget._view, "state": widget.static_state()}


def view_document(widget: Any, title: str | None = None) -> str:
    """A static document holding one view."""
    element_id = "saew-view-0"
    body = view_container(element_id, widget._fallback_html())
    data = {"views": [view_spec(widget, "main", element_id)]}
    return document(title or f"saewidgets {type(widget).__name__}", body, data)


def iframe(doc: str, height: int = 520) -> str:
    """``doc`` inside an ``<iframe srcdoc>``: an isolated, self-contained ``text/html`` notebook output."""
    return (f"<iframe class=\"saew-static-frame\" srcdoc=\"{html.escape(doc, quote=True)}\" "
            f"style=\"width:100%;height:{int(height)}px;border:0\" "
            "sandbox=\"allow-scripts\"></iframe>")


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
