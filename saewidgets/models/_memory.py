"""Keeping a loaded model's process small: drop what built the tokenizer, hand freed heap back to the system.

The quick demo runs where memory is scarce (Binder: about 2 GB). Gemma 3 270M's float32 weights would take 1.07 GB
of it once the unembedding has been read; its tied embedding is kept compact (`q8_embedding`: 178 MB instead of
671 MB), which leaves ~400 MB of mapped float32 weights. Two more things a loaded model keeps for nothing:

- transformers 5 builds Gemma's Rust tokenizer from a Python vocabulary dict and merges list (262,144 tokens, 514,906
  merges: ~135 MB of Python objects) and keeps both as ``_vocab`` / ``_merges``, which nothing reads afterwards (the
  Rust tokenizer holds its own copy; ``get_vocab`` asks it).
- The allocator keeps the heap that parsing ``tokenizer.json`` and other short-lived work freed (~60-70 MB after the
  tokenizer); ``malloc_trim`` returns it.

And one thing the allocator does on its own: glibc serves blocks below its mmap threshold from the heap, and raises
that threshold (up to 32 MB) each time a larger block is freed. A steering search's blocks of vocabulary logits
(``[positions, 16384]`` float32, 1-30 MB each, in many sizes) then come from a heap that cannot reuse their holes
for the next size, so it grows: one fluency judgement of 8 continuations took 350 MB above its start and kept 300 MB
after it. `return_large_blocks` fixes the threshold instead (+70-100 MB and nothing kept, measured on the same call);
`LARGE_BLOCK_ENV` is the same setting for the environment of processes a tool starts (notebook kernels).

A fixed threshold has a price where blocks of the same few sizes come and go, as in a harvest's batches and SAE
training: each one is mapped and faulted in afresh instead of reused from the heap (the full demo's first run made
50 million page faults, ~120 s of system time). So ``saewidgets demo --quick`` (Binder's) fixes it only after
training, where the vocabulary stages begin; the full demo, with room to spare under its 3 GB, keeps glibc's own.
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


#: glibc's ``mallopt`` parameters for the mmap threshold and the trim threshold (malloc.h), and the latter's default.
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
_DEFAULT_TRIM = 128 * 1024
#: Blocks of at least this many bytes get their own mapping, returned to the system when freed.
LARGE_BLOCK = 4 * 2**20
#: `return_large_blocks` as glibc reads it from the environment when a process starts, for the processes a tool
#: launches (notebook kernels: ``saewidgets demo --lab``'s, and Binder's through ``binder/start``).
LARGE_BLOCK_ENV = {"MALLOC_MMAP_THRESHOLD_": str(LARGE_BLOCK)}


def return_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Have the allocator map every block of at least ``threshold`` bytes on its own (glibc's
    ``M_MMAP_THRESHOLD``), so freeing one gives its memory back at once, instead of raising the threshold as
    large blocks come and go and serving them from a heap that fragments (see the module docstring). For a whole
    process with a memory limit, e.g. ``saewidgets demo`` on Binder; it applies to the rest of the process.
    The heap's trim threshold goes back to glibc's default too: the dynamic threshold raises it to twice its own
    (up to 64 MB), and a heap that frees its top only past 64 MB peaked ~50 MB higher in the quick demo's steering.
    False where it cannot be set (not glibc)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
    )
