"""Static-page text (`saewidgets.widgets._embed`): base85 that needs no escaping in JSON or HTML, round trips."""

from __future__ import annotations

import json
import os

from saewidgets.widgets._embed import ALPHABET, decode_text, embed_text, embedded_bytes, embedded_json
from saewidgets.widgets.static_html import script_json


def test_alphabet_needs_no_escaping_in_a_script_element_or_json():
    assert len(set(ALPHABET)) == 85
    assert not set(ALPHABET) & set("<>&\"\\'\u2028\u2029 ")
    text = embed_text(bytes(range(256)) * 4)
    assert set(text) <= set(ALPHABET)
    assert script_json(text) == json.dumps(text)  # nothing escaped: one character per character


def test_every_length_round_trips_compressed_or_not():
    for k in [*range(13), 255, 1024, 4097]:
        raw = os.urandom(k)
        assert decode_text(embed_text(raw)) == raw
        assert decode_text(embed_text(raw, compress=True), compressed=True) == raw
        assert len(embed_text(raw)) == k // 4 * 5 + (k % 4 + 1 if k % 4 else 0)  # 5 characters per 4 bytes


def test_binary_values_are_compressed_only_where_it_pays():
    assert "gzip" not in embedded_bytes(os.urandom(4000))  # noise does not compress
    packed = embedded_bytes(bytes(4000))
    assert packed["gzip"] is True and decode_text(packed["__saew_bytes__"], compressed=True) == bytes(4000)
    labels = [f"pattern: feature {i}" for i in range(500)]
    assert json.loads(decode_text(embedded_json(labels)["__saew_json__"], compressed=True)) == labels
