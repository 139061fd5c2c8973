"""Harvesting residual-stream activations: batched nnsight traces that stop right after the layer of interest.

`harvest` turns documents into rows: one row per token, holding the residual stream after decoder block ``layer``
plus the token id, the document it came from and its position there (dashboards need the context around a row).
Rows are ordered by (document, position), so the context of a row is simply its neighbouring rows.

Long documents are split into windows of ``context_len`` tokens (each window starts with BOS when the model uses
one), never silently truncated. Windows are batched longest-first with left padding; padding is dropped through
the attention mask. Past a RAM budget, rows are written to a memory-mapped ``.npy`` file instead of memory.
"""

from __future__ import annotations

import json
import os
import uuid
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ._atomic_write import atomic_dir, check_writable_dir, finish_interrupted_save, process_alive
from ._checks import whole_number
from ._cache import cache_dir
from .cancel import CancelSignal, check_cancel
from .precision import Precision, autocast, check_precision, warn_if_emulated
from .progress import progress_bar
from .models.handle import LayerSpec, ModelHandle, check_text, residual_of

DEFAULT_CONTEXT_LEN = 128
DEFAULT_RAM_BUDGET = 4 * 2**30  # bytes of activations kept in memory before spilling to a memmap
_META = "activations.json"


@dataclass
class Activations:
    """Residual-stream activations of a set of tokens, one row per token, ordered by (document, position).

    Attributes:
        acts: ``[n_tokens, d_model]`` float32 residuals (a numpy array, possibly memory-mapped).
        token_ids: ``[n_tokens]`` int32 token ids.
        doc_ids: ``[n_tokens]`` int32 index of the document each token comes from.
        positions: ``[n_tokens]`` int32 position of the token in its document (BOS, when kept, is -1).
        model_name, layer, site: where the activations were read.
    """

    acts: np.ndarray
    token_ids: np.ndarray
    doc_ids: np.ndarray
    positions: np.ndarray
    model_name: str = ""
    layer: int = -1
    site: str = ""
    path: Path | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.acts)
        for name in ("token_ids", "doc_ids", "positions"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Activations.{name} has {len(getattr(self, name))} rows but acts has {n}.")

    def __len__(self) -> int:
        return len(self.acts)

    @property
    def d_model(self) -> int:
        return int(self.acts.shape[1])

    def torch(self, rows: slice | np.ndarray | None = None) -> torch.Tensor:
        """The activations (or the given rows) as a float32 tensor."""
        block = self.acts if rows is None else self.acts[rows]
        return torch.from_numpy(np.array(block, dtype=np.float32))  # a copy: memmaps are read-only

    def drop_resident_pages(self) -> None:
        """Let go of the pages of memory-mapped activations this process has read (a no-op for in-memory ones).

        Reading a mapped ``acts.npy`` (the train/held-out split, the statistics) leaves every page it touched
        counted in the process's resident memory for as long as the mapping lives: 366 MB for the full demo's
        harvest, kept through steering and the page, which never read it. The array gives back the same values
        afterwards: a later read maps the file's pages in again (from the page cache while the system keeps it)."""
        import mmap

        mapping = getattr(self.acts, "_mmap", None)  # numpy's memmap keeps its mmap.mmap here
        advise = getattr(mapping, "madvise", None)  # Python 3.8+ on Linux and macOS
        if advise is not None and hasattr(mmap, "MADV_DONTNEED"):
            advise(mmap.MADV_DONTNEED)

    def context(self, row: int, before: int = 10, after: int = 4) -> np.ndarray:
        """Row indices of the tokens around ``row`` within its document (at most ``before`` + 1 + ``after``)."""
        doc = self.doc_ids[row]
        lo, hi = max(0, row - before), min(len(self), row + after + 1)
        rows = np.arange(lo, hi)
        return rows[self.doc_ids[lo:hi] == doc]

    def subset(self, rows: np.ndarray | slice) -> "Activations":
        """A copy in memory of the given rows (keeps their order)."""
        return Activations(
            np.ascontiguousarray(self.acts[rows]),
            self.token_ids[rows].copy(),
            self.doc_ids[rows].copy(),
            self.positions[rows].copy(),
            self.model_name,
            self.layer,
            self.site,
        )

    def split(self, held_out_fraction: float = 0.1, seed: int = 0) -> tuple["Activations", "Activations"]:
        """(train, held_out) split by whole documents, so no document's tokens land on both sides."""
        if not 0 < held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}.")
        docs = np.unique(self.doc_ids)
        if len(docs) < 2:
            raise ValueError("Splitting by document needs at least two documents.")
        rng = np.random.default_rng(seed)
        n_held = max(1, int(round(len(docs) * held_out_fraction)))
        held_docs = rng.choice(docs, size=n_held, replace=False)
        held = np.isin(self.doc_ids, held_docs)
        return self.subset(np.flatnonzero(~held)), self.subset(np.flatnonzero(held))

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write to ``directory`` (``acts.npy`` + token bookkeeping + ``activations.json``), atomically.

        Only these files are written or replaced; anything else in the folder is kept. A non-empty folder that
        saewidgets did not write is refused unless ``overwrite=True``; see `saewidgets._atomic_write.atomic_dir`.
        """
        with atomic_dir(directory, overwrite=overwrite) as tmp:
            np.save(tmp / "acts.npy", self.acts)
            np.savez(tmp / "tokens.npz", token_ids=self.token_ids, doc_ids=self.doc_ids, positions=self.positions)
            meta = {
                "model_name": self.model_name,
                "layer": self.layer,
                "site": self.site,
                "n_tokens": len(self),
                "d_model": self.d_model,
            }
            (tmp / _META).write_text(json.dumps(meta, indent=1))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> "Activations":
        """Read activations written by `save`; with ``mmap`` the rows stay on disk until used."""
        directory = Path(directory)
        finish_interrupted_save(directory)
        meta_path = directory / _META
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{directory} holds no saved activations (no {_META}); write one with Activations.save()."
            )
        try:
            meta = json.loads(meta_path.read_text())
            acts = np.load(directory / "acts.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            with np.load(directory / "tokens.npz", allow_pickle=False) as tokens:
                book = {k: tokens[k] for k in ("token_ids", "doc_ids", "positions")}
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as err:  # JSONDecodeError is a ValueError
            raise ValueError(
                f"The saved activations in {directory} are corrupt or incomplete ({err}); harvest again."
            ) from err
        if acts.shape != (meta["n_tokens"], meta["d_model"]):
            raise ValueError(
                f"{directory / 'acts.npy'} has shape {acts.shape} but {meta_path.name} says "
                f"({meta['n_tokens']}, {meta['d_model']}): the folder is corrupt; harvest again."
            )
        return cls(acts, path=directory, model_name=meta["model_name"], layer=meta["layer"], site=meta["site"], **book)


@dataclass(frozen=True, eq=False)
class HarvestWindow:
    """One model input: a slice of a document's tokens, with BOS in front when the model uses one."""

    doc: int
    start: int  # position in the document of the first non-BOS token
    ids: np.ndarray  # int32 model input ids, BOS included
    n_rows: int  # rows this window contributes
    offset: int  # first output row


def as_texts(texts_or_corpus: Any) -> list[str]:
    """The texts to harvest from a list of strings, one string or a `Corpus`, each checked, with an error saying
    what to pass instead of anything else."""
    texts = getattr(texts_or_corpus, "texts", texts_or_corpus)
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, Mapping):  # iterating would harvest its keys
        raise TypeError(
            f"harvest() got a dict (keys {list(texts)[:3]}), not texts: pass a list of strings, e.g. "
            "[row['text'] for row in rows], or a Corpus."
        )
    if not isinstance(texts, Iterable):
        raise TypeError(f"harvest() takes a list of strings or a Corpus, not {type(texts_or_corpus).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError("harvest() got no texts: pass a non-empty list of strings, or saewidgets.demo_corpus().")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Text {i} is a {type(text).__name__}, not a str: harvest() reads strings only.")
        check_text(text, f"Text {i}")
    return texts


def _plan_windows(
    docs: Sequence[np.ndarray], bos: int | None, context_len: int, n_tokens: int | None, drop_bos: bool
) -> list[HarvestWindow]:
    """Cut documents (int32 token arrays) into windows in document order, stopping once ``n_tokens`` rows are
    planned. Token ids stay in numpy arrays: a few bytes per token of bookkeeping, not a Python int each."""
    prefix = np.array([bos] if bos is not None else [], dtype=np.int32)
    body = context_len - (1 if bos is not None else 0)
    keep_bos_row = bos is not None and not drop_bos
    windows: list[HarvestWindow] = []
    offset = 0
    for doc, ids in enumerate(docs):
        for start in range(0, len(ids), body):
            chunk = ids[start : start + body]
            n_rows = len(chunk) + keep_bos_row
            if n_tokens is not None and offset + n_rows > n_tokens:
                chunk = chunk[: n_tokens - offset - keep_bos_row]
                n_rows = n_tokens - offset
            if len(chunk) == 0:
                return windows
            windows.append(HarvestWindow(doc, start, np.concatenate((prefix, chunk)), n_rows, offset))
            offset += n_rows
            if n_tokens is not None and offset >= n_tokens:
                return windows
    return windows


def _allocate(
    n_rows: int, d_model: int, ram_budget: int, memmap_dir: str | os.PathLike | None
) -> tuple[np.ndarray, Path | None]:
    if n_rows * d_model * 4 <= ram_budget:
        return np.empty((n_rows, d_model), dtype=np.float32), None
    folder = check_writable_dir(memmap_dir, "memmap_dir") if memmap_dir is not None else cache_dir("spill")
    folder.mkdir(parents=True, exist_ok=True)
    _remove_orphan_spills(folder)
    path = folder / f"acts-{os.getpid()}-{uuid.uuid4().hex}.npy"
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, d_model)), path


def _remove_orphan_spills(folder: Path) -> None:
    """Delete spill files left by harvests whose process died (``kill -9`` skips the clean-up on exit)."""
    for path in folder.glob("acts-*-*.npy"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)


def harvest(
    model: ModelHandle,
    texts_or_corpus: Any,
    layer: LayerSpec = "middle",
    *,
    n_tokens: int | None = None,
    context_len: int = DEFAULT_CONTEXT_LEN,
    batch_size: int = 16,
    drop_bos: bool = True,
    ram_budget: int = DEFAULT_RAM_BUDGET,
    memmap_dir: str | os.PathLike | None = None,
    progress: bool = True,
    cancel: CancelSignal | None = None,
    split_special_tokens: bool = True,
    precision: Precision = "fp32",
) -> Activations:
    """Collect the residual stream after decoder block ``layer`` for every token of ``texts_or_corpus``.

    Args:
        model: a `ModelHandle` (see `saewidgets.load_model`).
        texts_or_corpus: a string, a list of strings, or a `saewidgets.corpus.Corpus`.
        layer: block index, negative index, or ``"middle"`` (the paper's choice).
        n_tokens: stop after this many rows (tokens); by default every token of every document.
        context_len: tokens per model input, BOS included; longer documents are split into several windows.
        batch_size: windows per trace.
        drop_bos: leave out BOS rows (their residuals are huge outliers that would dominate SAE training).
        ram_budget: bytes of activations kept in memory; a larger harvest goes to a memory-mapped file.
        memmap_dir: where such a file goes (default: the saewidgets cache's ``spill`` folder).
        progress: show a progress bar.
        cancel: a `threading.Event` (see `saewidgets.cancel`), checked before every batch; once set, the spill
            file is deleted and `saewidgets.cancel.Cancelled` raised.
        split_special_tokens: read special-token strings in the texts (``"<bos>"``, ``"<|endoftext|>"``) as the
            plain text they are (default: the texts are untrusted). False turns them into the special tokens,
            for texts that carry them on purpose (e.g. chat-formatted data).
        precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` to run the model's matrix products under
            ``torch.autocast`` (SAELens's ``autocast_lm``; see `saewidgets.precision`). On a CPU with native bf16
            (`saewidgets.precision.native_bf16`) bf16 harvests 2.1-2.4x faster than float32, with residuals within
            ~0.5% (relative norm) of float32's for Gemma 3 270M; elsewhere it is emulated and slower. The rows are
            stored as float32 either way. A local model only: NDIF runs a remote model in its own dtype.
    """
    layer = model.resolve_layer(layer)
    check_harvest_precision(model, precision)
    windows = plan_harvest(model, texts_or_corpus, context_len, n_tokens, batch_size, drop_bos, split_special_tokens)
    total = windows[-1].offset + windows[-1].n_rows
    acts, spill = _allocate(total, model.d_model, ram_budget, memmap_dir)
    token_ids = np.empty(total, dtype=np.int32)
    doc_ids = np.empty(total, dtype=np.int32)
    positions = np.empty(total, dtype=np.int32)
    try:
        with progress_bar(total, desc=f"harvest layer {layer}", unit="tok", disable=not progress) as bar:
            fill_rows(
                model,
                layer,
                windows,
                batch_size,
                (acts, token_ids, doc_ids, positions),
                base=0,
                bar=bar,
                cancel=cancel,
                precision=precision,
            )
    except BaseException:
        if spill is not None:
            del acts
            spill.unlink(missing_ok=True)
        raise
    result = Activations(acts, token_ids, doc_ids, positions, model.name, layer, model.site_name(layer), path=spill)
    if spill is not None:
        weakref.finalize(result, _remove_spill, spill)
    return result


def plan_harvest(
    model: ModelHandle,
    texts_or_corpus: Any,
    context_len: int,
    n_tokens: int | None,
    batch_size: int,
    drop_bos: bool,
    split_special_tokens: bool = True,
) -> list[HarvestWindow]:
    """Check harvest settings and cut the texts into windows; the rows they give are numbered in (doc, position) order.

    Shared by `harvest` and the disk-backed store (`saewidgets.store`), so both number rows identically.
    """
    texts = as_texts(texts_or_corpus)
    context_len = whole_number("context_len", context_len, 2)
    if context_len > model.max_context:
        raise ValueError(
            f"context_len={context_len} must be between 2 and the model's context, {model.max_context} tokens."
        )
    n_tokens = None if n_tokens is None else whole_number("n_tokens", n_tokens, 1)
    batch_size = whole_number("batch_size", batch_size, 1)

    docs = [
        np.asarray(model.encode(t, add_bos=False, split_special_tokens=split_special_tokens), dtype=np.int32)
        for t in texts
    ]
    windows = _plan_windows(docs, model.bos_id, context_len, n_tokens, drop_bos)
    total = windows[-1].offset + windows[-1].n_rows if windows else 0
    if total == 0:
        raise ValueError("The texts contain no tokens: every text is empty.")
    if n_tokens is not None and total < n_tokens:
        raise ValueError(
            f"n_tokens={n_tokens:,} is more than the {total:,} tokens these {len(texts)} texts hold: "
            f"pass n_tokens <= {total:,} or more text."
        )
    return windows


def check_harvest_precision(model: ModelHandle, precision: str) -> None:
    """Refuse a precision `harvest` does not know, or a 16-bit one for a model NDIF runs (its dtype is the server's);
    warn where bf16 would be emulated. Shared by `harvest` and `saewidgets.store.harvest_to_store`."""
    check_precision("precision", precision)
    if precision != "fp32" and model.remote is True:
        raise ValueError(
            f"precision={precision!r} applies to a model run here; NDIF runs a remote model in its own dtype. "
            "Pass precision='fp32' (the default) for a remote model."
        )
    warn_if_emulated(model.device, precision)


def fill_rows(
    model: ModelHandle,
    layer: int,
    windows: Sequence[HarvestWindow],
    batch_size: int,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    base: int,
    bar: Any,
    cancel: CancelSignal | None = None,
    precision: Precision = "fp32",
) -> None:
    """Trace ``windows`` in batches (longest first: least padding) and write their rows into ``out``.

    ``out`` is (acts, token_ids, doc_ids, positions); a window's rows go to ``w.offset - base`` onwards, so a
    caller holding only some windows (a store shard) passes its first row as ``base``. ``precision``: as `harvest`'s.
    """
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
    bos = model.bos_id
    batch_size = int(batch_size)  # checked by plan_harvest; 16.0 (from a JSON file) means 16
    for b in range(0, len(order), batch_size):
        check_cancel(cancel, "the harvest")
        batch = [windows[i] for i in order[b : b + batch_size]]
        hidden = _trace_batch(model, layer, [w.ids for w in batch], precision)
        for row, w in enumerate(batch):
            _store(w, hidden[row], bos, *out, base=base)
        bar.update(sum(w.n_rows for w in batch))


def _remove_spill(path: Path) -> None:
    path.unlink(missing_ok=True)


def _trace_batch(model: ModelHandle, layer: int, inputs: Sequence[np.ndarray], precision: str = "fp32") -> torch.Tensor:
    """Residuals after block ``layer`` for left-padded inputs, ``[batch, max_len, d_model]`` float32 on CPU.

    The trace stops right after the block, so the rest of the model (and its unembedding) never runs; its matrix
    products run in ``precision`` (autocast).
    """
    from nnsight import save  # `.save()` as a function: nnsight mounts the method at run time, unseen by mypy

    width = max(len(ids) for ids in inputs)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(inputs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, ids in enumerate(inputs):
        input_ids[row, width - len(ids) :] = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    block = model.block(layer)
    with model.lock, torch.no_grad(), autocast(model.device, precision):
        with model.nn.trace({"input_ids": input_ids, "attention_mask": mask}, **model.trace_kwargs) as tracer:
            hidden = save(residual_of(block.output))
            tracer.stop()
    hidden = hidden.detach().to("cpu", torch.float32)
    bad = ~torch.isfinite(hidden) & mask.bool()[..., None]
    if bad.any():
        row, pos, _ = bad.nonzero()[0].tolist()
        raise FloatingPointError(
            f"The model produced NaN/inf activations at layer {layer} (batch row {row}, position {pos - (width - len(inputs[row]))}). "
            "Check the model's dtype (float16 overflows; use float32 or bfloat16)."
        )
    return hidden


def _store(
    w: HarvestWindow,
    hidden: torch.Tensor,
    bos: int | None,
    acts: np.ndarray,
    token_ids: np.ndarray,
    doc_ids: np.ndarray,
    positions: np.ndarray,
    base: int = 0,
) -> None:
    """Copy one window's real-token rows (dropping padding, and BOS unless it is kept) into the output arrays."""
    real = hidden[hidden.shape[0] - len(w.ids) :]
    ids = np.asarray(w.ids, dtype=np.int32)
    pos = np.arange(w.start - (bos is not None), w.start + len(w.ids) - (bos is not None), dtype=np.int32)
    if bos is not None:
        pos[0] = -1
    keep = slice(len(w.ids) - w.n_rows, len(w.ids))  # the last n_rows tokens: BOS is first, so it goes when dropped
    rows = slice(w.offset - base, w.offset - base + w.n_rows)
    acts[rows] = real[keep].numpy()
    token_ids[rows] = ids[keep]
    doc_ids[rows] = w.doc
    positions[rows] = pos[keep]


def full_forward_residual(model: ModelHandle, text: str, layer: LayerSpec) -> torch.Tensor:
    """The residual after block ``layer`` for one text from a complete forward pass (no early stop).

    A reference for tests and benchmarks: `harvest` must give the same rows while skipping the rest of the model.
    """
    from nnsight import save  # `.save()` as a function: nnsight mounts the method at run time, unseen by mypy

    ids = torch.tensor([model.encode(text)])
    with model.lock, torch.no_grad():
        with model.nn.trace(ids, **model.trace_kwargs):
            hidden = save(residual_of(model.block(layer).output))
            save(model.nn.output)
    return hidden[0].detach().float()
