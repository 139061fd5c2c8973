"""The cards of a static page rebuilt in Python as ``static_host.js`` rebuilds them (tests only): compressed
base85 groups of JSON plus context columns (`saewidgets.widgets.static_html._packed_group`), windows and logit
tokens from the binary shared tables; activations left as the stored integers."""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

from saewidgets.widgets._embed import decode_text
from saewidgets.widgets.static_html import RECORD_FIELDS


def _inflate(text: str) -> bytes:
    return decode_text(text, compressed=True)


class _Reader:
    """Varints (unsigned and zigzag) and length-prefixed JSON, read in order."""

    def __init__(self, raw: bytes) -> None:
        self.raw, self.at = raw, 0

    def varint(self) -> int:
        n, shift = 0, 0
        while True:
            b = self.raw[self.at]
            self.at += 1
            n |= (b & 127) << shift
            shift += 7
            if not b & 128:
                return n

    def signed(self) -> int:
        z = self.varint()
        return -(z + 1) // 2 if z % 2 else z // 2

    def column(self, n: int, read: Any) -> list:
        return [read() for _ in range(n)]

    def deltas(self, n: int) -> list[int]:
        out, previous = [], 0
        for _ in range(n):
            previous += self.signed()
            out.append(previous)
        return out

    def json(self) -> Any:
        length = self.varint()
        value = json.loads(self.raw[self.at : self.at + length])
        self.at += length
        return value


def group_json(raw: bytes) -> dict[str, Any]:
    """One group's cards as stored: context slots (``0``) not yet resolved."""
    return _Reader(raw).json()


def group_slots(raw: bytes) -> tuple[list[int], list[int]]:
    """One group's slot columns: rows back (0 = the next new row) and counts (0 = none)."""
    r = _Reader(raw)
    r.json()
    n = r.varint()
    r.deltas(n)
    r.column(n, r.varint)
    r.column(2 * n, r.signed)
    sizes = r.column(n, r.varint)
    r.column(sum(sizes), r.signed)
    slots = r.varint()
    return r.column(slots, r.varint), r.column(slots, r.varint)


def unpack_group(raw: bytes) -> dict[str, Any]:
    """One group's cards with every context slot replaced by its own copy of the context."""
    r = _Reader(raw)
    cards = r.json()
    n = r.varint()
    windows = r.deltas(n)
    centers = r.column(n, r.varint)
    values = []
    for _ in range(n):
        m, e = r.signed(), r.signed()
        values.append(_as_browser(m, e))
    sizes = r.column(n, r.varint)
    acts = [r.column(size, r.signed) for size in sizes]
    slots = r.varint()
    back, counts = r.column(slots, r.varint), r.column(slots, r.varint)
    slot, nxt = 0, 0

    def context(item: Any) -> Any:
        nonlocal slot, nxt
        if not (type(item) is int and item == 0):
            return item  # a context the columns cannot hold, kept as JSON
        if back[slot]:
            k = nxt - back[slot]
        else:
            k, nxt = nxt, nxt + 1
        out = {"acts": list(acts[k]), "center": centers[k], "value": values[k], "w": windows[k]}
        if counts[slot]:
            out["count"] = counts[slot]
        slot += 1
        return out

    order = [cards[key] for key in sorted(cards, key=int)]
    for card in order:
        if card.get("top"):
            card["top"] = [context(item) for item in card["top"]]
        for band in card.get("quantiles") or []:
            if band.get("examples"):
                band["examples"] = [context(item) for item in band["examples"]]
    assert slot == slots, "slots left unread"
    for field, (index, value) in RECORD_FIELDS.items():
        n = r.varint()
        indices, exponents, mantissas = r.column(n, r.varint), r.column(n, r.signed), r.deltas(n)
        rows = iter(zip(indices, mantissas, exponents))
        for card in order:
            if type(card.get(field)) is int:
                card[field] = [{index: i, value: _as_browser(m, e)} for i, m, e in islice(rows, card[field])]
        assert next(rows, None) is None, f"{field} rows left unread"
    assert r.at == len(raw), "trailing bytes after the record columns"
    return cards


def _as_browser(m: int, e: int) -> float:
    """``m * 10**e`` as the browser's doubles compute it (``saewDecimal``)."""
    return m / 10**-e if e < 0 else float(m) * float(10**e)


def unpack_tables(raw: bytes) -> dict[str, Any]:
    r = _Reader(raw)
    strings = r.json()
    stream = r.column(r.varint(), r.varint)
    n = r.varint()
    starts, lengths = r.deltas(n), r.column(n, r.varint)
    assert r.at == len(raw), "trailing bytes after the tables"
    return {"strings": strings, "stream": stream, "windows": list(zip(starts, lengths))}


def unpack_cards(packed: dict) -> dict[int, dict]:
    """Every embedded card, keyed by feature id, as the views receive it (before ``acts_unit`` is applied)."""
    tables, cards = unpack_tables(_inflate(packed["tables"])), {}
    for chunk in packed["chunks"].values():
        for key, card in unpack_group(_inflate(chunk)).items():
            for item in [*(card.get("top") or []), *(e for b in card.get("quantiles") or [] for e in b["examples"])]:
                if "w" in item:
                    start, length = tables["windows"][item.pop("w")]
                    item["tokens"] = [tables["strings"][k] for k in tables["stream"][start : start + length]]
            for row in [*(card.get("promoted") or []), *(card.get("suppressed") or [])]:
                if isinstance(row["token"], int):
                    row["token"] = tables["strings"][row["token"]]
            cards[int(key)] = card
    assert sorted(cards) == packed["features"]
    return cards
