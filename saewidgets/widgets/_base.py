"""The base class every saewidgets view shares: ESM/CSS loading, static state, static HTML, mime bundle.

Each view's JavaScript lives in ``static/<view>.js`` and the helpers all views share in ``static/common.js``.
An anywidget ESM is loaded as a single module (relative imports cannot resolve from a blob URL), so the ESM of a
view is ``common.js``, the views it composes (each registered in ``SAEW_VIEWS``) and its own file, put together
here from the files shipped in the package. The static HTML export inlines the same files.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import anywidget

from ._embed import embedded_bytes

STATIC_DIR = Path(__file__).parent / "static"
CSS_PATH = STATIC_DIR / "saewidgets.css"
EXPORT_LINE = "export default view;"
# Traits of ipywidgets/anywidget plumbing that a static page does not need.
_NOT_STATE = {"layout", "tabbable", "tooltip", "comm", "keys", "log"}


@lru_cache(maxsize=None)
def read_static(name: str) -> str:
    """Text of a file in ``widgets/static`` (cached; the files ship with the package)."""
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def view_source(view: str) -> str:
    """``static/<view>.js``, checked to end with ``export default view;``."""
    source = read_static(f"{view}.js")
    if EXPORT_LINE not in source:
        raise RuntimeError(f"static/{view}.js must end with '{EXPORT_LINE}'")
    return source


def registered_views(views: tuple[str, ...]) -> str:
    """Classic-script JS defining ``SAEW_VIEWS[name]`` for each view (each file in its own scope)."""
    parts = ["const SAEW_VIEWS = {};"]
    for view in views:
        body = view_source(view).replace(EXPORT_LINE, f"SAEW_VIEWS[{json.dumps(view)}] = view;")
        parts.append(f"(function () {{\n{body}\n}})();")
    return "\n".join(parts)


def view_esm(view: str, composes: tuple[str, ...] = ()) -> str:
    """The ESM of one view: shared helpers, the views it composes (``SAEW_VIEWS``) and ``static/<view>.js``."""
    return "\n".join([read_static("common.js"), registered_views(composes), view_source(view)])


def static_value(value: Any) -> Any:
    """A trait value as embedded in a static page: bytes become ``{"__saew_bytes__": ...}`` (see
    ``_embed.embedded_bytes``; decoded to a DataView by ``static_host.js``), everything else stays JSON."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return embedded_bytes(bytes(value))
    return value


class ViewWidget(anywidget.AnyWidget):
    """Base of all saewidgets views: a view named ``_view`` whose JS is ``static/<_view>.js``.

    Subclasses declare synced traits and, optionally, ``_fallback_html()``: escaped plain HTML shown where
    scripts cannot run.
    """

    _view: ClassVar[str] = ""
    # Views whose JS this view renders inside itself (the Explorer composes all the others).
    _composes: ClassVar[tuple[str, ...]] = ()
    _css = CSS_PATH
    # Height of the iframe used for the ``text/html`` fallback in notebooks without a widget manager.
    _fallback_height: ClassVar[int] = 520

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_view"):
            cls._esm = view_esm(cls._view, cls._composes)

    def __init__(self, **kwargs: Any) -> None:
        # ``embedded=True``: a view whose state another widget shows (the Explorer): it never opens a comm of
        # its own, so only the composing widget reaches the front-end (and the saved notebook).
        self._saew_embedded = bool(kwargs.pop("embedded", False))
        super().__init__(**kwargs)

    def open(self) -> None:
        """Open the comm to the front-end, unless this view is embedded in another widget."""
        if not getattr(self, "_saew_embedded", False):
            super().open()

    @classmethod
    def state_names(cls) -> list[str]:
        """Names of the synced traits the JS view reads (not the ipywidgets plumbing)."""
        return [
            name for name in cls.class_trait_names(sync=True) if not name.startswith("_") and name not in _NOT_STATE
        ]

    def static_state(self) -> dict[str, Any]:
        """Synced trait values the JS view reads (not the ipywidgets plumbing), ready for a static page."""
        return {name: static_value(getattr(self, name)) for name in self.state_names()}

    def _fallback_html(self) -> str:
        """Escaped, script-free HTML shown before (or instead of) the interactive view."""
        return "<p>This interactive view needs JavaScript.</p>"

    def to_html(self, title: str | None = None) -> str:
        """A complete, self-contained HTML document of this view (JS, CSS and data inlined; opens offline)."""
        from .static_html import view_document

        return view_document(self, title=title)

    def save_html(self, path: str | Path, title: str | None = None) -> Path:
        """Write :meth:`to_html` to ``path`` atomically; returns the path."""
        from .static_html import write_atomic

        return write_atomic(path, self.to_html(title=title))

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The widget view plus a ``text/html`` static fallback (an iframe) for frontends that cannot load
        custom widgets (nbviewer, some VS Code setups)."""
        from .static_html import iframe

        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, None)  # (data, metadata), or data alone
        data = dict(data or {})
        try:
            data["text/html"] = iframe(self.to_html(), height=self._fallback_height)
        except Exception as err:  # a fallback must never break display of the live widget
            data["text/html"] = f"<pre>static view unavailable: {type(err).__name__}</pre>"
        return data, dict(meta or {})
