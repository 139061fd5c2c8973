"""Self-contained static HTML: every view (and the linked Explorer) as one file that opens offline.

All JS and CSS are inlined from ``widgets/static``; data is embedded as JSON inside
``<script type="application/json">`` with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\u003c`` etc., so
no token string can close the script element or inject markup. Views run through ``static_host.js``, which stands
in for the anywidget model; nothing is fetched from the network.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .._atomic_write import atomic_write_bytes
from ._base import CSS_PATH, read_static, registered_views
from ._embed import decoded, embed_text, embedded_json, is_embedded

__all__ = [
    "script_json",
    "static_bundle_js",
    "document",
    "view_document",
    "iframe",
    "write_atomic",
    "packed_cards",
    "offline_copy",
    "page_data",
]

VIEWS = ("heatmap", "dashboard", "feature_map", "attribution_view", "steering_panel", "explorer", "family_map")
# Cards are packed in groups of this many consecutive feature ids: one group is decompressed when one of its
# cards is first shown (~1 MB of JSON, ~10 ms), the rest stay compressed.
CARDS_PER_CHUNK = 256
# A static card's per-token activations are stored as integers in [-ACT_LEVELS, ACT_LEVELS] times the card's
# ``acts_unit`` (its largest context activation / ACT_LEVELS): enough for a colour and a 3-digit tooltip, and
# small integers compress far better than floats.
ACT_LEVELS = 255
# A view's state value whose JSON is longer than this is embedded compressed (the map's 4,096 labels: 355 KB of
# JSON, 93 KB compressed); smaller ones stay plain JSON, readable in the page source.
COMPRESS_STATE_ABOVE = 8192
_DATA_OPEN = '<script type="application/json" id="saew-data">'
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj: Any) -> str:
    """JSON text safe to place inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` or line
    separators survive literally, so ``</script>`` in the data cannot end the element."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, esc in _JSON_ESCAPES.items():
        text = text.replace(raw, esc)
    return text


def static_bundle_js(views: Iterable[str] = VIEWS) -> str:
    """One classic script: the shared helpers, each view registered in ``SAEW_VIEWS``, and the host."""
    js = "\n".join([read_static("common.js"), registered_views(tuple(views)), read_static("static_host.js")])
    if "</script" in js.lower() or "<!--" in js:
        raise RuntimeError("static JS must not contain '</script' or '<!--' (it is inlined into HTML)")
    return js


def document(title: str, body: str, data: dict[str, Any]) -> str:
    """A full HTML document: ``body`` (trusted markup built here, with every data string escaped) plus the
    embedded JSON ``data`` and the inlined scripts that boot the views from it."""
    css = CSS_PATH.read_text(encoding="utf-8")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # No network: scripts and styles inline only, images only from data: URLs.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{css}\n</style>\n</head>\n"
        f'<body class="saew-page">\n{body}\n'
        f"{_DATA_OPEN}{script_json(data)}</script>\n"
        f"<script>\n{static_bundle_js()}\n</script>\n"
        "<script>SAEW.boot();</script>\n</body>\n</html>\n"
    )


def view_container(element_id: str, fallback_html: str, cls: str = "") -> str:
    """The element a view mounts into, holding its script-free fallback until JS replaces it."""
    return (
        f'<div id="{html.escape(element_id)}" class="saew-mount {html.escape(cls)}">'
        f'<div class="saew-fallback">{fallback_html}</div></div>'
    )


def view_spec(widget: Any, name: str, element_id: str) -> dict[str, Any]:
    """The boot record of one view: where to mount, which JS view, and its state (large values compressed, see
    :func:`_compact`)."""
    state = {key: _compact(value) for key, value in widget.static_state().items()}
    return {"id": element_id, "name": name, "view": widget._view, "state": state}


def _compact(value: Any) -> Any:
    """A state value as the page embeds it: lists and objects whose JSON passes ``COMPRESS_STATE_ABOVE`` bytes
    gzip-compressed (``_embed.embedded_json``; the page inflates them before the views mount)."""
    if isinstance(value, (list, dict)) and not is_embedded(value):
        if len(_json_bytes(value)) > COMPRESS_STATE_ABOVE:
            return embedded_json(value)
    return value


def page_data(doc: str) -> dict[str, Any]:
    """The data a static page embeds, its view states as the views receive them (compressed JSON inflated,
    binary values as ``bytes``); cards stay packed (``cards``). For tools and tests reading a page back."""
    start = doc.index(_DATA_OPEN) + len(_DATA_OPEN)
    data = json.loads(doc[start : doc.index("</script>", start)])
    for spec in data.get("views") or []:
        spec["state"] = {key: decoded(value) for key, value in spec["state"].items()}
    return data


def view_document(widget: Any, title: str | None = None) -> str:
    """A static document holding one view."""
    element_id = "saew-view-0"
    body = view_container(element_id, widget._fallback_html())
    data = {"views": [view_spec(widget, "main", element_id)]}
    return document(title or f"saewidgets {type(widget).__name__}", body, data)


def quantized_card(card: dict[str, Any]) -> dict[str, Any]:
    """``card`` with every context's ``acts`` as integers and ``acts_unit`` to multiply them by (see
    ``ACT_LEVELS``); ``static_host.js`` restores the floats when the card is read."""
    contexts = [
        *(card.get("top") or []),
        *(ex for band in card.get("quantiles") or [] for ex in band.get("examples") or []),
    ]
    peak = max((abs(a) for item in contexts for a in item.get("acts") or [] if a is not None), default=0.0)
    if peak <= 0:
        return card
    unit = float(f"{peak / ACT_LEVELS:.6g}")
    for item in contexts:
        if item.get("acts") is not None:
            item["acts"] = [round(a / unit) if a is not None else 0 for a in item["acts"]]
    return {**card, "acts_unit": unit}


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _varints(out: bytearray, numbers: Iterable[int]) -> None:
    """Unsigned LEB128: 7 bits a byte, low bits first, high bit set on every byte but the last. Columns of a
    page's cards hold millions of numbers, so they are encoded with numpy, byte position by byte position."""
    values = np.fromiter(numbers, dtype=np.uint64)
    if not len(values):
        return
    # the bytes each number takes: one per 7 bits, at least one (ten for the largest uint64)
    length = np.ones(len(values), dtype=np.int64)
    for k in range(1, 10):
        length += values >= np.uint64(1 << (7 * k))
    width = int(length.max())
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    rows = ((values[:, None] >> shifts) & np.uint64(127)).astype(np.uint8)
    position = np.arange(width)
    rows[position < (length - 1)[:, None]] |= 128
    out += rows[position < length[:, None]].tobytes()


def _zigzag(n: int) -> int:
    """A signed int as an unsigned one, small magnitudes small (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...)."""
    return 2 * n if n >= 0 else -2 * n - 1


def _deltas(numbers: Iterable[int]) -> Iterable[int]:
    """Each number as the zigzag of its difference from the one before (the first from 0)."""
    previous = 0
    for n in numbers:
        yield _zigzag(n - previous)
        previous = n


_CONTEXT_KEYS = {"w", "acts", "center", "value"}
_MAX_SAFE = 2**52  # integers whose zigzag form a JS number still holds exactly


def _decimal(value: Any) -> tuple[int, int] | None:
    """``value`` as ``(m, e)`` with ``value == m * 10**e`` exactly in decimal (its JSON text), where the browser's
    ``m * 10**e`` (``m / 10**-e``) is the number ``JSON.parse`` gives for that text: a product or quotient of two
    exactly representable numbers is rounded once, like the parse. None when that does not hold (or for -0.0)."""
    if type(value) is int:
        return (value, 0) if abs(value) < _MAX_SAFE else None
    if type(value) is not float or not math.isfinite(value) or (value == 0 and math.copysign(1, value) < 0):
        return None
    # the shortest decimal text that round-trips ("0.1235", "1e-05", "1.5e+20"), as digits and a power of ten
    mantissa, _, power = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    m, exponent = int(whole + fraction), int(power or 0) - len(fraction)
    if m == 0:
        return 0, 0
    while m % 10 == 0:  # fewest digits: 123456.0 is (123456, 0), not (1234560, -1)
        m, exponent = m // 10, exponent + 1
    if abs(exponent) > 22 or abs(m) >= _MAX_SAFE:
        return None
    return m, exponent


def _packable(item: Mapping[str, Any]) -> bool:
    """A context the binary columns hold exactly: window, integer activations, centre and value, maybe a count."""
    keys = set(item)
    return (
        _CONTEXT_KEYS <= keys <= _CONTEXT_KEYS | {"count"}
        and all(type(item[k]) is int for k in ("w", "center"))
        and item["w"] >= 0
        and item["center"] >= 0
        and type(item["acts"]) is list
        and all(type(a) is int for a in item["acts"])
        and _decimal(item["value"]) is not None
        and (type(item.get("count", 1)) is int and item.get("count", 1) >= 1)
    )


# A card's lists of ``{index: int, value: number}`` rows (logit tables by token index, decoder neighbours), held
# as columns: which key is the index and which the value.
RECORD_FIELDS = {"promoted": ("token", "value"), "suppressed": ("token", "value"), "neighbours": ("feature", "cosine")}


def _record_columns(rows: Any, keys: tuple[str, str]) -> list[tuple[int, tuple[int, int]]] | None:
    """``rows`` as (index, (mantissa, exponent)) pairs, or None unless they are a non-empty list of rows with
    exactly ``keys``: a non-negative int index and a value ``_decimal`` holds, with a mantissa small enough that
    the zigzag of a difference of two stays exact in a JS number."""
    index, value = keys
    if type(rows) is not list or not rows:
        return None
    pairs = []
    for row in rows:
        if type(row) is not dict or set(row) != {index, value}:
            return None
        decimal = _decimal(row[value])
        if type(row[index]) is not int or not 0 <= row[index] < _MAX_SAFE:
            return None
        if decimal is None or abs(decimal[0]) >= _MAX_SAFE // 4:
            return None
        pairs.append((row[index], decimal))
    return pairs


def _packed_group(group: Mapping[int, dict[str, Any]]) -> str:
    """One group of cards as page text (base85 of gzip) of: a varint byte length, the cards' JSON, the columns of
    the group's distinct contexts, the columns of the cards' references to them, then the columns of each
    ``RECORD_FIELDS`` list.

    A card's contexts (top activations, band samples: most of its bytes) become slots (``0`` in the JSON) that
    refer to rows of the group's table of distinct contexts; a band sample that is also a top context is stored
    once. The context table is columns of varints: window references (zigzag deltas from the previous), centres,
    values (zigzag decimal mantissa and exponent: exactly the number the JSON held), activation counts and the
    integer activations (zigzag). The slots, taken card by card in ascending feature order (top contexts, then
    each band's examples), are two columns: the row (0 for the next new row, else how many rows back from it)
    and the context's ``count`` (0 when it has none). Contexts the columns cannot hold exactly stay JSON objects
    in the card. A ``RECORD_FIELDS`` list becomes its row count in the JSON and, per field over the group's
    cards, three columns: the indices, the values' decimal exponents and their mantissas as deltas (sorted logit
    tables and neighbour cosines change little from row to row); lists the columns cannot hold stay JSON."""
    table: dict[tuple, int] = {}
    windows: list[int] = []
    centers: list[int] = []
    values: list[tuple[int, int]] = []
    acts: list[list[int]] = []
    rows: list[int] = []
    counts: list[int] = []
    records: dict[str, list[tuple[int, tuple[int, int]]]] = {field: [] for field in RECORD_FIELDS}

    def slot(item: dict[str, Any]) -> Any:
        if not _packable(item):
            return item
        key = (item["w"], item["center"], repr(item["value"]), tuple(item["acts"]))  # 1 and 1.0 apart, as in JSON
        if key not in table:
            table[key] = len(table)
            windows.append(item["w"])
            centers.append(item["center"])
            values.append(_decimal(item["value"]))  # type: ignore[arg-type]
            acts.append(item["acts"])
            rows.append(0)
        else:
            rows.append(len(table) - table[key])
        counts.append(item.get("count", 0))
        return 0

    cards = {}
    for feature in sorted(group):
        card = dict(group[feature])
        if card.get("top"):
            card["top"] = [slot(item) for item in card["top"]]
        if card.get("quantiles"):
            card["quantiles"] = [
                {**band, "examples": [slot(item) for item in band["examples"]]} if band.get("examples") else band
                for band in card["quantiles"]
            ]
        for field, keys in RECORD_FIELDS.items():
            pairs = _record_columns(card.get(field), keys)
            if pairs is not None:
                records[field] += pairs
                card[field] = len(pairs)
        cards[str(feature)] = card
    text = _json_bytes(cards)
    out = bytearray()
    _varints(out, [len(text)])
    out += text
    _varints(out, [len(table)])
    _varints(out, _deltas(windows))
    _varints(out, centers)
    _varints(out, (z for m, e in values for z in (_zigzag(m), _zigzag(e))))
    _varints(out, (len(a) for a in acts))
    _varints(out, (_zigzag(a) for row in acts for a in row))
    _varints(out, [len(rows)])
    _varints(out, rows)
    _varints(out, counts)
    for field in RECORD_FIELDS:
        _varints(out, [len(records[field])])
        _varints(out, (i for i, _ in records[field]))
        _varints(out, (_zigzag(e) for _, (_, e) in records[field]))
        _varints(out, _deltas(m for _, (m, _) in records[field]))
    return embed_text(bytes(out), compress=True)


def _contexts(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        *(card.get("top") or []),
        *(ex for band in card.get("quantiles") or [] for ex in band.get("examples") or []),
    ]


class _Numbering(dict):
    """Numbers keys in order of first sight: ``numbering[key]`` is the key's number, a new key getting the next one
    (a lookup in C for keys seen before: a page's cards look up millions of tokens)."""

    def __missing__(self, key: Any) -> int:
        self[key] = number = len(self)
        return number


def _copy_to_rewrite(card: Mapping[str, Any]) -> dict[str, Any]:
    """``card`` with new dicts and lists wherever `packed_cards` rewrites it (contexts, logit rows), so the
    caller's cards are left as they were and a context shared by two lists is rewritten once in each."""
    copy = dict(card)
    if copy.get("top"):
        copy["top"] = [dict(item) for item in copy["top"]]
    if copy.get("quantiles"):
        copy["quantiles"] = [
            {**band, "examples": [dict(item) for item in band["examples"]]} if band.get("examples") else dict(band)
            for band in copy["quantiles"]
        ]
    for key in RECORD_FIELDS:
        if copy.get(key):
            copy[key] = [dict(row) for row in copy[key]]
    return copy


def _chained(windows: list[tuple[int, ...]]) -> tuple[list[int], list[list[int]]]:
    """Windows laid end to end where one continues another (the window at the next corpus position shares all but
    one token with it), as one token ``stream`` plus ``[start, length]`` of each window in it: neighbouring
    contexts cost one token each instead of a whole window."""
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    for k, w in enumerate(windows):
        if len(w) > 1:
            by_prefix.setdefault(w[:-1], []).append(k)
    has_previous = {k for w in windows if len(w) > 1 for k in by_prefix.get(w[1:], []) if windows[k] != w}
    stream: list[int] = []
    spans: list[list[int]] = [[0, 0]] * len(windows)
    placed = [False] * len(windows)
    for first in [k for k in range(len(windows)) if k not in has_previous] + list(range(len(windows))):
        if placed[first]:
            continue
        k = first
        spans[k], placed[k] = [len(stream), len(windows[k])], True
        stream.extend(windows[k])
        while True:
            w = windows[k]
            nxt = next((j for j in by_prefix.get(w[1:], []) if not placed[j]), None) if len(w) > 1 else None
            if nxt is None:
                break
            stream.append(windows[nxt][-1])
            spans[nxt], placed[nxt], k = [len(stream) - len(windows[nxt]), len(windows[nxt])], True, nxt
    return stream, spans


def packed_cards(cards: Mapping[int, Any], per_chunk: int = CARDS_PER_CHUNK) -> dict[str, Any]:
    """Feature cards for a static page, compact.

    Token windows recur across features (a token where 30 features fire is a top context of several), so every
    distinct token string is stored once and every distinct window once, as a span of a token ``stream`` that
    lays overlapping windows end to end (see :func:`_chained`), in ``tables``; a context keeps its window's index
    ``w``, and logit rows their token's index. Cards are grouped by ``feature // per_chunk``; each group is its
    cards' JSON with their contexts in binary columns (see :func:`_packed_group`). ``tables`` is binary too: the
    strings' JSON (most used first, so the common tokens have one-byte indices), the stream as varints, and the
    windows as columns of start deltas and lengths. The groups and the tables are gzip-compressed page text
    (``_embed``); ``static_host.js`` inflates the tables and a group the first time one of the group's cards is
    shown, and rebuilds the cards exactly."""
    strings = _Numbering()
    windows = _Numbering()
    groups: dict[int, dict[int, Any]] = {}
    logit_rows: list[dict[str, Any]] = []
    for feature, card in cards.items():
        card = _copy_to_rewrite(card)
        for item in _contexts(card):
            item["w"] = windows[tuple(map(strings.__getitem__, map(str, item.pop("tokens", None) or [])))]
        for key in ("promoted", "suppressed"):
            for row in card.get(key) or []:
                row["token"] = strings[str(row["token"])]
                logit_rows.append(row)
        groups.setdefault(int(feature) // per_chunk, {})[int(feature)] = card
    stream, spans = _chained(list(windows))
    uses = [0] * len(strings)
    for k in [*stream, *(row["token"] for row in logit_rows)]:
        uses[k] += 1
    by_use = sorted(range(len(strings)), key=lambda k: -uses[k])
    rank = {k: r for r, k in enumerate(by_use)}
    for row in logit_rows:
        row["token"] = rank[row["token"]]
    names = list(strings)
    text = _json_bytes([names[k] for k in by_use])
    tables = bytearray()
    _varints(tables, [len(text)])
    tables += text
    _varints(tables, [len(stream)])
    _varints(tables, (rank[k] for k in stream))
    _varints(tables, [len(spans)])
    _varints(tables, _deltas(start for start, _ in spans))
    _varints(tables, (length for _, length in spans))
    return {
        "per_chunk": per_chunk,
        "features": sorted(int(f) for f in cards),
        "tables": embed_text(bytes(tables), compress=True),
        "chunks": {str(key): _packed_group(group) for key, group in sorted(groups.items())},
    }


def offline_copy(frame_html: str, fallback_id: str) -> str:
    """The ``text/html`` output a displayed Explorer leaves in the notebook: its static page (an iframe), tagged
    with the widget's ``fallback_id``. While the live widget shows, its JS hides this copy; when the notebook is
    reopened without a kernel, JupyterLab/Notebook 7 show this copy and the style below hides the widget
    output's "model not found" line next to it (trusted notebooks; CSS ``:has``)."""
    fid = html.escape(fallback_id, quote=True)
    style = (
        "<style>.jp-OutputArea-child:has(.saew-offline-copy) + .jp-OutputArea-child "
        ".jupyter-widgets.jp-OutputArea-output:not(:has(*)){display:none}"
        ".jp-OutputArea-child:has(.saew-offline-copy):has(+ .jp-OutputArea-child .saew-explorer-live)"
        "{display:none}</style>"
    )
    return (
        f'<div class="saew-offline-copy" data-saew-for="{fid}">{style}'
        '<div class="saew-offline-note" style="font:12px sans-serif;color:#777;margin:2px 0">'
        "Saved copy of the Explorer (no kernel): the selection and its neighbours are embedded; run the "
        f"cell to explore every feature.</div>{frame_html}</div>"
    )


def iframe(doc: str, height: int = 520) -> str:
    """``doc`` inside an ``<iframe srcdoc>``: an isolated, self-contained ``text/html`` notebook output."""
    return (
        f'<iframe class="saew-static-frame" srcdoc="{html.escape(doc, quote=True)}" '
        f'style="width:100%;height:{int(height)}px;border:0" '
        'sandbox="allow-scripts"></iframe>'
    )


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
