"""Keeping a loaded model's process small: drop what built the tokenizer, hand freed heap back to the system.

The quick demo runs where memory is scarce (Binder: about 2 GB). Gemma 3 270M's float32 weights would take 1.07 GB
of it once the unembedding has been read; its tied embedding is kept compact (`q8_embedding`: 178 MB instead of
671 MB), which leaves ~400 MB of mapped float32 weights. Two more things a loaded model keeps for nothing:

- transformers 5 builds Gemma's Rust tokenizer from a Python vocabulary dict and merges list (262,144 tokens, 514,906
  merges: ~135 MB of Python objects) and keeps both as ``_vocab`` / ``_merges``, which nothing reads afterwards (the
  Rust tokenizer holds its own copy; ``get_vocab`` asks it).
- The allocator keeps the heap that parsing ``tokenizer.json`` and other short-lived work freed (~60-70 MB after the
  tokenizer); ``malloc_trim`` returns it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache
from typing import Any

#: Tokenizer classes whose ``_vocab`` and ``_merges`` are read only while they are constructed (transformers 5).
_BUILT_FROM_SOURCES = ("GemmaTokenizer",)


def drop_tokenizer_sources(tokenizer: Any) -> None:
    """Forget the vocabulary dict and merges list a Gemma tokenizer was built from; tokenization is unchanged."""
    if type(tokenizer).__name__ not in _BUILT_FROM_SOURCES or not hasattr(tokenizer, "_tokenizer"):
        return
    if isinstance(getattr(tokenizer, "_vocab", None), dict):
        tokenizer._vocab = {}
    if isinstance(getattr(tokenizer, "_merges", None), list):
        tokenizer._merges = []
    release_freed_memory()


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Collect garbage and return the heap it freed to the operating system (glibc's ``malloc_trim``; elsewhere
    only the collection)."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
