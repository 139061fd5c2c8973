"""The cards of a static page rebuilt in Python as ``static_host.js`` rebuilds them (tests only): base64 gzip
groups of JSON plus context columns (`saewidgets.widgets.static_html._packed_group`), windows and logit tokens from
the shared tables; activations left as the stored integers."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any


def _inflate(b64: str) -> bytes:
    return gzip.decompress(base64.b64decode(b64))


def group_json(raw: bytes) -> dict[str, Any]:
    """One group's cards as stored: context references (an index, or ``[index, count]``) not yet resolved."""
    return unpack_group(raw, resolve=False)


def unpack_group(raw: bytes, resolve: bool = True) -> dict[str, Any]:
    """One group's cards with every context reference replaced by its own copy of the context."""
    at = 0

    def varint() -> int:
        nonlocal at
        n, shift = 0, 0
        while True:
            b = raw[at]
            at += 1
            n |= (b & 127) << shift
            shift += 7
            if not b & 128:
                return n

    def signed() -> int:
        z = varint()
        return -(z + 1) // 2 if z % 2 else z // 2

    length = varint()
    cards = json.loads(raw[at : at + length])
    if not resolve:
        return cards
    at += length
    n = varint()
    windows, previous = [], 0
    for _ in range(n):
        previous += signed()
        windows.append(previous)
    centers = [varint() for _ in range(n)]
    values = []
    for _ in range(n):
        m, e = signed(), signed()
        values.append(m / 10**-e if e < 0 else float(m) * float(10**e))  # as the browser's doubles compute it
    sizes = [varint() for _ in range(n)]
    acts = [[signed() for _ in range(size)] for size in sizes]
    assert at == len(raw), "trailing bytes after the context columns"

    def context(ref: Any) -> Any:
        if isinstance(ref, int):
            return {"acts": list(acts[ref]), "center": centers[ref], "value": values[ref], "w": windows[ref]}
        if isinstance(ref, list):
            return {**context(ref[0]), "count": ref[1]}
        return ref

    for card in cards.values():
        if card.get("top"):
            card["top"] = [context(r) for r in card["top"]]
        for band in card.get("quantiles") or []:
            if band.get("examples"):
                band["examples"] = [context(r) for r in band["examples"]]
    return cards


def unpack_cards(packed: dict) -> dict[int, dict]:
    """Every embedded card, keyed by feature id, as the views receive it (before ``acts_unit`` is applied)."""
    tables, cards = json.loads(_inflate(packed["tables"])), {}
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
