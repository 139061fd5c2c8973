"""The static page's packed cards (`static_html.packed_cards`): every card comes back exactly as embedded, the
contexts the binary columns cannot hold exactly stay JSON, and repeated contexts are stored once."""

from __future__ import annotations

import json

import numpy as np

import synthetic_results as syn
from _packed_cards import group_json, group_slots, unpack_cards, unpack_group
from saewidgets.widgets._embed import decode_text
from saewidgets.widgets.static_html import _decimal, packed_cards


def as_json(obj):
    return json.loads(json.dumps(obj))


def test_every_card_round_trips_exactly_hostile_tokens_included():
    ex = syn.explorer(n_features=600, hostile=True, background=False)
    cards = {i: ex.static_card(i) for i in range(600)}
    assert unpack_cards(as_json(packed_cards(cards))) == {i: as_json(card) for i, card in cards.items()}


def test_values_at_every_scale_come_back_as_the_json_number():
    """Values from 1e-30 to 1e30 (4 significant digits): the columns hold those the browser can rebuild exactly
    (``m / 10**k``, k <= 22), the rest stay JSON; either way the number is the one the JSON text gave."""
    rng = np.random.default_rng(0)
    values = [float(f"{v:.4g}") for v in 10 ** rng.uniform(-30, 30, size=400)] + [0.0, 1.0, 3, 255, 1e22, 1e-22]
    card = {
        "feature": 0,
        "top": [{"acts": [0, 1, -2, 255], "center": 1, "value": v, "w": 0} for v in values],
        "quantiles": [],
    }
    packed = packed_cards({0: {**card, "top": [{**c, "tokens": ["a", "b", "c", "d"]} for c in card["top"]]}})
    stored = group_json(decode_text(packed["chunks"]["0"], compressed=True))["0"]["top"]
    assert 100 < sum(r == 0 for r in stored) < len(values)  # most in the columns, the extremes as JSON
    back = unpack_cards(as_json(packed))[0]["top"]
    assert [c["value"] for c in back] == values
    for v in values:
        decimal = _decimal(v)
        if decimal is not None:
            m, e = decimal
            assert (m / 10**-e if e < 0 else float(m) * float(10**e)) == v


def test_contexts_the_columns_cannot_hold_stay_json_and_repeats_are_stored_once():
    top = [
        {"tokens": ["a", "b"], "acts": [0, 5], "center": 1, "value": 2.5},
        {"tokens": ["a", "c"], "acts": [0.0, 0.5], "center": 1, "value": 0.5},  # float activations (no acts_unit)
        {"tokens": ["d"], "acts": [3], "center": 0, "value": -0.0},  # -0.0 is not m * 10**e
        {"tokens": ["e"], "acts": [3], "center": 0, "value": 1.0, "note": "extra key"},
        {"tokens": ["a", "b"], "acts": [0, 5], "center": 1, "value": 2.5, "count": 3},
    ]
    card = {"feature": 7, "top": top, "quantiles": [{"label": "x", "examples": [dict(top[0]), dict(top[0])]}]}
    packed = as_json(packed_cards({7: card}))
    back = unpack_cards(packed)[7]
    assert back == as_json(card)
    assert str(back["top"][2]["value"]) == "-0.0"
    raw = decode_text(packed["chunks"]["0"], compressed=True)
    group = group_json(raw)
    assert group["7"]["top"][0] == 0 and group["7"]["top"][4] == 0  # slots, resolved from the columns
    assert group["7"]["quantiles"][0]["examples"] == [0, 0]
    assert [type(r) for r in group["7"]["top"][1:4]] == [dict, dict, dict]  # kept as JSON
    rows_back, counts = group_slots(raw)
    assert rows_back == [0, 1, 1, 1] and counts == [0, 3, 0, 0]  # one table row, referenced four times
    assert len(unpack_group(raw)) == 1


def test_logit_and_neighbour_rows_become_columns_unless_a_row_cannot_be_held_exactly():
    rows = [{"token": "a", "value": 0.4289}, {"token": "b", "value": 0.3946}, {"token": "c", "value": 1e-20}]
    card = {
        "feature": 3,
        "top": [],
        "promoted": rows,
        "suppressed": [{"token": "d", "value": -0.0}],  # -0.0 is not m * 10**e: the list stays JSON
        "neighbours": [{"feature": 9, "cosine": 0.3092}, {"feature": 2, "cosine": 0.2271, "note": "extra key"}],
    }
    other = {"feature": 4, "neighbours": [{"feature": 3, "cosine": 0.5}], "promoted": []}
    # mantissas of 16 digits: a difference's zigzag would pass 2**53, where a JS number stops being exact
    wide = {"feature": 5, "neighbours": [{"feature": 1, "cosine": 0.9876543210987654}, {"feature": 2, "cosine": -0.9}]}
    packed = as_json(packed_cards({3: card, 4: other, 5: wide}))
    assert unpack_cards(packed) == {3: as_json(card), 4: as_json(other), 5: as_json(wide)}
    stored = group_json(decode_text(packed["chunks"]["0"], compressed=True))
    assert stored["3"]["promoted"] == 3 and stored["4"]["neighbours"] == 1 and stored["4"]["promoted"] == []
    assert type(stored["5"]["neighbours"]) is list
    assert stored["3"]["suppressed"] == [{"token": 3, "value": -0.0}] and type(stored["3"]["neighbours"]) is list


def _decimal_reference(value):
    """`_decimal` as first written, through `decimal.Decimal` (kept here to check the faster string version)."""
    import math
    from decimal import Decimal

    if type(value) is int:
        return (value, 0) if abs(value) < 2**52 else None
    if type(value) is not float or not math.isfinite(value) or (value == 0 and math.copysign(1, value) < 0):
        return None
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    m = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if not isinstance(exponent, int) or abs(exponent) > 22 or abs(m) >= 2**52:
        return None
    return m, exponent


def test_decimal_equals_the_decimal_module_on_every_scale_sign_and_precision():
    rng = np.random.default_rng(1)
    raw = (10 ** rng.uniform(-30, 30, size=3000) * rng.choice([-1, 1], size=3000)).tolist()
    values = raw + [float(f"{v:.4g}") for v in raw] + [float(f"{v:.1g}") for v in raw]
    values += [0.0, -0.0, 1.0, -1.0, 123456.0, 1234560.0, 0.1, 1e22, 1e23, 1e-22, 1e-23, 5e-324, 1.7976931348623157e308]
    values += [float("nan"), float("inf"), 3, -7, 2**52, 2**52 - 1, True, "1.5", None]
    assert [_decimal(v) for v in values] == [_decimal_reference(v) for v in values]


def _varints_reference(numbers):
    out = bytearray()
    for n in numbers:
        while n > 127:
            out.append((n & 127) | 128)
            n >>= 7
        out.append(n)
    return bytes(out)


def test_varints_are_unsigned_leb128_at_every_length():
    from saewidgets.widgets.static_html import _varints

    edges = [0, 1, 127, 128, 255, 300, 2**14 - 1, 2**14, 2**21, 2**35 + 5, 2**52, 2**56 - 1, 2**63, 2**64 - 1]
    rng = np.random.default_rng(2)
    numbers = edges + [int(v) for v in rng.integers(0, 2**62, size=500)] + [int(v) for v in rng.integers(0, 300, 500)]
    for column in (numbers, [], [5], edges):
        out = bytearray(b"head")
        _varints(out, column)
        assert bytes(out) == b"head" + _varints_reference(column)
    out = bytearray()
    _varints(out, (n for n in edges))  # a generator, as the packer passes its columns
    assert bytes(out) == _varints_reference(edges)


def test_packing_leaves_the_callers_cards_alone_and_reads_a_shared_context_in_both_places():
    shared = {"tokens": ["a", "b"], "acts": [0, 5], "center": 1, "value": 2.5}
    card = {
        "feature": 2,
        "top": [shared],
        "quantiles": [{"label": "x", "examples": [shared]}],
        "promoted": [{"token": "b", "value": 1.5}],
        "neighbours": [{"feature": 1, "cosine": 0.5}],
    }
    before = json.loads(json.dumps(card))
    back = unpack_cards(as_json(packed_cards({2: card})))[2]
    assert card == before, "packed_cards rewrote the caller's card"
    assert back == before
