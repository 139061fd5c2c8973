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
