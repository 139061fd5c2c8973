"""Binary data as static-page text: base85 (5 characters per 4 bytes, against base64's 4 per 3) in an alphabet
that needs no escaping inside JSON or a ``<script>`` element, optionally gzip-compressed.

The alphabet is Python's ``base64.b85encode`` alphabet with ``<``, ``>`` and ``&`` (which ``script_json`` would
write as six-character ``\\u003c`` escapes) swapped for ``,``, ``.`` and ``:``; ``static_host.js`` decodes it
(``saewBytes``) and inflates the compressed values with the browser's ``DecompressionStream``.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

__all__ = ["ALPHABET", "embed_text", "embedded_bytes", "embedded_json", "decode_text", "is_embedded", "decoded"]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%:()*+-;,=.?@^_`{|}~"
BYTES_KEY, JSON_KEY = "__saew_bytes__", "__saew_json__"  # the wrappers' keys, read by static_host.js too
_TO_PAGE = bytes.maketrans(b"<>&", b",.:")
_FROM_PAGE = str.maketrans(",.:", "<>&")
# Compress a binary value only where it pays: float arrays barely shrink, and inflating costs a round trip.
_WORTH_COMPRESSING = 0.9


def embed_text(raw: bytes, compress: bool = False) -> str:
    """``raw`` (gzip-compressed first if ``compress``) as page-safe base85 text."""
    if compress:
        raw = gzip.compress(raw, compresslevel=9, mtime=0)
    return base64.b85encode(raw).translate(_TO_PAGE).decode("ascii")


def decode_text(text: str, compressed: bool = False) -> bytes:
    """The bytes :func:`embed_text` encoded (for tests and tools reading a page back)."""
    raw = base64.b85decode(text.translate(_FROM_PAGE))
    return gzip.decompress(raw) if compressed else raw


def embedded_bytes(raw: bytes) -> dict[str, Any]:
    """A binary trait as a static page embeds it, handed to views as a ``DataView``: ``{"__saew_bytes__": text}``,
    with ``"gzip": true`` where compressing saves more than a tenth."""
    packed = gzip.compress(raw, compresslevel=9, mtime=0)
    if len(packed) < _WORTH_COMPRESSING * len(raw):
        return {BYTES_KEY: embed_text(packed), "gzip": True}
    return {BYTES_KEY: embed_text(raw)}


def embedded_json(obj: Any) -> dict[str, Any]:
    """A large JSON value (a list of 4,096 labels) gzip-compressed: ``{"__saew_json__": text}``; the page
    inflates it before the views mount, so they receive the value itself."""
    raw = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return {JSON_KEY: embed_text(raw, compress=True)}


def is_embedded(value: Any) -> bool:
    """Whether ``value`` is one of this module's wrappers (already page text)."""
    return isinstance(value, dict) and (BYTES_KEY in value or JSON_KEY in value)


def decoded(value: Any) -> Any:
    """A wrapper back to what the views receive (JSON inflated, binary as ``bytes``); anything else as it is."""
    if isinstance(value, dict) and JSON_KEY in value:
        return json.loads(decode_text(value[JSON_KEY], compressed=True))
    if isinstance(value, dict) and BYTES_KEY in value:
        return decode_text(value[BYTES_KEY], compressed=bool(value.get("gzip")))
    return value
