"""A disk-backed activation store for corpora larger than RAM: sharded memory-mapped ``.npy`` files and a manifest.

Layout of a store folder::

    manifest.json            what was harvested (model, site, layer, d_model, dtype, corpus fingerprint, settings)
                             and the committed shards with their row counts; rewritten atomically
    shards/00000/acts.npy    [rows, d_model] residuals of shard 0 (memory-mapped when read)
    shards/00000/index.npy   [rows, 3] int32: token id, document, position
    ...

`harvest_to_store` cuts the corpus into the same windows as `saewidgets.harvest` and groups consecutive windows
into shards of about ``shard_tokens`` rows, so a store's rows are exactly the rows of an in-memory harvest, in the
same (document, position) order. A shard is written in a temporary folder, flushed and fsynced, then renamed into
place (that rename is its commit) and only then listed in the manifest. A harvest that is interrupted (an
exception, Ctrl-C, SIGKILL) resumes by skipping committed shards and redoing the one in flight: no duplicate or
missing rows. Under ``torch.distributed`` each rank harvests every ``world_size``-th shard into the same folder.

`ActivationStore` reads a store: it duck-types as `saewidgets.activations.Activations` (``acts``, ``token_ids``,
``doc_ids``, ``positions``, ``torch()``, ``context()``), so `feature_stats` reads it directly, and `batches` streams
shuffled training batches through a bounded shuffle buffer (random shard order, random rows within the buffer).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor  # the class attribute `torch` (a method) hides the module in annotations there
from ._atomic_write import atomic_write_bytes, check_writable_dir, fsync_path
from ._checks import whole_number
from .cancel import CancelSignal
from .activations import (
    DEFAULT_CONTEXT_LEN,
    Activations,
    HarvestWindow,
    as_texts,
    check_harvest_precision,
    fill_rows,
    plan_harvest,
)
from .corpus import corpus_for_tokens, is_stream
from .models.handle import LayerSpec, ModelHandle
from .precision import Precision
from .progress import progress_bar

STORE_FORMAT = "saewidgets.store/1"
MANIFEST = "manifest.json"
DEFAULT_SHARD_TOKENS = 2**18  # rows per shard: 640 MB of float32 at Gemma 3 270M's d_model=640
_DTYPES = ("float32", "float16")
# Manifest fields that must agree before a harvest may resume into an existing store.
_RESUME_KEYS = ("model", "site", "layer", "d_model", "dtype", "corpus_fingerprint", "settings", "n_rows", "n_shards")


class ShardedRows:
    """Memory-mapped arrays of equal trailing shape read as one array concatenated along the rows.

    Supports what `Activations` users do with ``acts`` / ``token_ids``: ``len``, ``shape``, ``dtype``, ``ndim``,
    an int, a slice, an integer array (any order, repeats allowed) or a boolean mask as index, and ``np.asarray``.
    Every index but an int returns an in-memory numpy copy of just the rows asked for.
    """

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        if not parts:
            raise ValueError("ShardedRows needs at least one array.")
        self.parts = list(parts)
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])])
        self.shape = (int(self.starts[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedRows(shape={self.shape}, dtype={self.dtype}, shards={len(self.parts)})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):  # rows first, then the rest of the index on the gathered rows
            rows = self[key[0]]
            return rows[key[1:]] if isinstance(key[0], (int, np.integer)) else rows[(slice(None),) + tuple(key[1:])]
        if isinstance(key, (int, np.integer)):
            row = int(key) + len(self) if key < 0 else int(key)
            if not 0 <= row < len(self):
                raise IndexError(f"row {key} is out of range for {len(self)} rows.")
            shard = int(np.searchsorted(self.starts, row, side="right")) - 1
            return self.parts[shard][row - self.starts[shard]]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._range(start, stop)
            key = np.arange(start, stop, step)
        rows = np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return self._gather(rows.astype(np.int64))

    def _range(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for shard, part in enumerate(self.parts):
            lo, hi = max(start, self.starts[shard]), min(stop, self.starts[shard + 1])
            if lo < hi:
                pieces.append(part[lo - self.starts[shard] : hi - self.starts[shard]])
        if not pieces:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        return np.concatenate(pieces)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row indices must be in [-{len(self)}, {len(self)}).")
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            local = rows[where] - self.starts[shard]
            order = np.argsort(local, kind="stable")  # read each shard in file order: fast on memory maps
            out[where[order]] = self.parts[shard][local[order]]
        return out


@dataclass(frozen=True)
class _Shard:
    """Consecutive windows whose rows form one shard file."""

    number: int
    windows: tuple[HarvestWindow, ...]

    @property
    def name(self) -> str:
        return f"{self.number:05d}"

    @property
    def first_row(self) -> int:
        return self.windows[0].offset

    @property
    def n_rows(self) -> int:
        return sum(w.n_rows for w in self.windows)


def _group_shards(windows: Sequence[HarvestWindow], shard_tokens: int) -> list[_Shard]:
    """Consecutive windows grouped into shards that close once they hold at least ``shard_tokens`` rows."""
    shards: list[_Shard] = []
    current: list[HarvestWindow] = []
    rows = 0
    for w in windows:
        current.append(w)
        rows += w.n_rows
        if rows >= shard_tokens:
            shards.append(_Shard(len(shards), tuple(current)))
            current, rows = [], 0
    if current:
        shards.append(_Shard(len(shards), tuple(current)))
    return shards


def corpus_fingerprint(texts: Sequence[str]) -> str:
    """sha256 of the texts (lengths included, so splitting a text differently changes it), first 16 hex digits."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:16]


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _dist_rank_world()[1] > 1:
        torch.distributed.barrier()


def harvest_to_store(
    model: ModelHandle,
    texts_or_corpus: Any,
    directory: str | os.PathLike,
    layer: LayerSpec = "middle",
    *,
    n_tokens: int | None = None,
    context_len: int = DEFAULT_CONTEXT_LEN,
    batch_size: int = 16,
    drop_bos: bool = True,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    dtype: str = "float32",
    resume: bool = True,
    progress: bool = True,
    text_field: str = "text",
    split_special_tokens: bool = True,
    cancel: CancelSignal | None = None,
    precision: Precision = "fp32",
) -> "ActivationStore":
    """Harvest the residual stream after block ``layer`` into a disk-backed store in ``directory``.

    Takes the arguments of `saewidgets.harvest` (same windows, same rows, same order), plus:

    ``texts_or_corpus`` may also be a stream, such as a Hugging Face dataset loaded with ``streaming=True`` (``pip
    install 'saewidgets[datasets]'``) or a generator of strings or dict rows: then ``n_tokens`` is required, and
    only the leading documents that hold ``n_tokens`` tokens are read (the dataset is never loaded whole).

    Args:
        directory: the store folder (created; a store already there is resumed, see ``resume``).
        shard_tokens: rows per shard file (shards end at window boundaries, so they may hold a few more).
        dtype: ``"float32"`` or ``"float16"`` (half the disk; ~3 significant digits).
        resume: continue an interrupted harvest with the same model, corpus and settings, skipping committed
            shards. False deletes what the folder holds and starts over.
        text_field: for a stream of dict rows, the field that holds the text.
        cancel: a `threading.Event` (see `saewidgets.cancel`), checked before every batch; once set, the shard in
            flight is deleted and `saewidgets.cancel.Cancelled` raised. The shards already committed stay listed
            in the manifest, so calling again resumes: the same rows as an uninterrupted harvest.
        precision: as `saewidgets.harvest`'s (bf16 autocast of the model's products); recorded in the manifest, so
            a store is never resumed in another precision than it was begun in.

    Under ``torch.distributed`` (e.g. torchrun) every rank must call this with the same arguments: rank r
    harvests shards r, r + world_size, ...; all ranks return the finished store.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported: use one of {', '.join(_DTYPES)}.")
    shard_tokens = whole_number("shard_tokens", shard_tokens, 1)
    check_writable_dir(directory, "directory")  # before the harvest, not at its first shard
    layer = model.resolve_layer(layer)
    check_harvest_precision(model, precision)
    if is_stream(texts_or_corpus):
        if n_tokens is None:
            raise ValueError(
                "harvest_to_store() got a stream (e.g. a dataset loaded with streaming=True), which may "
                "never end: pass n_tokens=... to say how many tokens to harvest from it."
            )
        texts_or_corpus = corpus_for_tokens(
            texts_or_corpus,
            n_tokens,
            lambda t: len(model.encode(t, add_bos=False, split_special_tokens=split_special_tokens)),
            text_field=text_field,
        )
    texts = as_texts(texts_or_corpus)
    windows = plan_harvest(model, texts, context_len, n_tokens, batch_size, drop_bos, split_special_tokens)
    shards = _group_shards(windows, shard_tokens)
    header = {
        "format": STORE_FORMAT,
        "model": model.name,
        "site": model.site_name(layer),
        "layer": layer,
        "d_model": model.d_model,
        "dtype": dtype,
        "corpus_fingerprint": corpus_fingerprint(texts),
        "settings": {
            "context_len": context_len,
            "drop_bos": drop_bos,
            "n_tokens": n_tokens,
            "shard_tokens": shard_tokens,
            "split_special_tokens": split_special_tokens,
            # recorded only when not fp32, so that the stores begun before it was a setting still resume
            **({"precision": precision} if precision != "fp32" else {}),
        },
        "n_rows": windows[-1].offset + windows[-1].n_rows,
        "n_shards": len(shards),
        "n_documents": len(texts),
    }
    directory = Path(directory)
    rank, world = _dist_rank_world()
    if rank == 0:
        _prepare(directory, header, resume)
        _write_manifest(directory, header, shards)
    _barrier()
    mine = [s for s in shards[rank::world] if not _committed(directory, s)]
    with progress_bar(
        sum(s.n_rows for s in mine),
        desc=f"harvest layer {layer} -> {directory.name}",
        unit="tok",
        disable=not progress,
    ) as bar:
        for shard in mine:
            _write_shard(model, layer, directory, shard, np.dtype(dtype), batch_size, bar, cancel, precision)
            if rank == 0:
                _write_manifest(directory, header, shards)
    _barrier()
    if rank == 0:
        _write_manifest(directory, header, shards)
    _barrier()
    return ActivationStore(directory)


def _prepare(directory: Path, header: dict[str, Any], resume: bool) -> None:
    """Make ``directory`` ready for ``header``'s harvest: new, resumable, or (``resume=False``) emptied."""
    manifest = directory / MANIFEST
    if manifest.exists() and resume:
        old = _read_manifest(directory)
        diff = {k: (old.get(k), header[k]) for k in _RESUME_KEYS if old.get(k) != header[k]}
        if diff:
            listed = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{directory} holds a store harvested differently ({listed}). Pass the same model, corpus and "
                "settings to resume, another directory, or resume=False to start over."
            )
    elif manifest.exists():
        shutil.rmtree(directory / "shards", ignore_errors=True)
    elif directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty and holds no activation store ({MANIFEST}): pass a new folder.")
    (directory / "shards").mkdir(parents=True, exist_ok=True)
    for leftover in (directory / "shards").glob(".*.tmp*"):  # shards in flight when a harvest died
        shutil.rmtree(leftover, ignore_errors=True)


def _committed(directory: Path, shard: _Shard) -> bool:
    """Whether the shard's folder was renamed into place (which happens only after its files were fsynced)."""
    return (directory / "shards" / shard.name / "acts.npy").exists()


def _write_shard(
    model: ModelHandle,
    layer: int,
    directory: Path,
    shard: _Shard,
    dtype: np.dtype,
    batch_size: int,
    bar: Any,
    cancel: CancelSignal | None,
    precision: Precision,
) -> None:
    """Harvest one shard into a temporary folder, fsync it, and commit it with one rename."""
    final = directory / "shards" / shard.name
    tmp = directory / "shards" / f".{shard.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        acts = np.lib.format.open_memmap(tmp / "acts.npy", mode="w+", dtype=dtype, shape=(shard.n_rows, model.d_model))
        index = np.lib.format.open_memmap(tmp / "index.npy", mode="w+", dtype=np.int32, shape=(shard.n_rows, 3))
        fill_rows(
            model,
            layer,
            shard.windows,
            batch_size,
            (acts, index[:, 0], index[:, 1], index[:, 2]),
            base=shard.first_row,
            bar=bar,
            cancel=cancel,
            precision=precision,
        )
        _check_fits(acts, dtype, model, layer)
        for array in (acts, index):
            array.flush()
        del acts, index
        for name in ("acts.npy", "index.npy"):
            fsync_path(tmp / name)
        os.replace(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_fits(acts: np.ndarray, dtype: np.dtype, model: ModelHandle, layer: int) -> None:
    """Refuse a shard whose residuals overflowed the storage dtype (float16 turns values above 65,504 into inf)."""
    if dtype == np.float32:
        return  # the harvest already refused non-finite float32 residuals
    overflowed = np.isinf(acts)
    n = int(overflowed.sum())
    if n:
        row, column = (int(i) for i in np.argwhere(overflowed)[0])
        raise ValueError(
            f"dtype={dtype.name!r} cannot hold {model.name}'s residuals at layer {layer}: {n:,} of {acts.size:,} "
            f"values in this shard exceed {float(np.finfo(dtype).max):,.0f} (the first at row {row:,}, column "
            f"{column}) and would be stored as inf. Use dtype='float32' (the default)."
        )


def _write_manifest(directory: Path, header: dict[str, Any], shards: Sequence[_Shard]) -> None:
    """Rewrite the manifest atomically, listing the shards whose folders are committed."""
    listed = [
        {"name": s.name, "rows": s.n_rows, "first_row": s.first_row, "n_windows": len(s.windows)}
        for s in shards
        if _committed(directory, s)
    ]
    manifest = {**header, "shards": listed, "complete": len(listed) == header["n_shards"]}
    atomic_write_bytes(directory / MANIFEST, json.dumps(manifest, indent=1).encode())


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} is not an activation store (no {MANIFEST}); make one with harvest_to_store()."
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the store is damaged; harvest again.") from err
    if manifest.get("format") != STORE_FORMAT:
        raise ValueError(f"{path} is not a saewidgets activation store manifest (expected format {STORE_FORMAT}).")
    return manifest


class ActivationStore:
    """Activations on disk, read through memory maps; duck-types as `saewidgets.activations.Activations`.

    Attributes:
        acts: ``[n_tokens, d_model]`` rows (a `ShardedRows`; indexing returns numpy arrays).
        token_ids, doc_ids, positions: ``[n_tokens]`` int32 bookkeeping, ordered by (document, position).
        model_name, layer, site, dtype: from the manifest.
        manifest: the parsed ``manifest.json``.
    """

    def __init__(self, directory: str | os.PathLike, *, allow_incomplete: bool = False) -> None:
        self.path = Path(directory)
        self.manifest = _read_manifest(self.path)
        if not self.manifest["complete"] and not allow_incomplete:
            raise ValueError(
                f"The store in {self.path} is incomplete ({len(self.manifest['shards'])} of "
                f"{self.manifest['n_shards']} shards): call harvest_to_store() again with the same arguments to "
                "finish it, or pass allow_incomplete=True to read the committed shards."
            )
        if not self.manifest["shards"]:
            raise ValueError(f"The store in {self.path} has no committed shards yet.")
        acts, index = [], []
        for entry in self.manifest["shards"]:
            name = entry.get("name")
            if not isinstance(name, str) or not name.isascii() or not name.isdigit():  # never a path from the file
                raise ValueError(
                    f"{self.path / MANIFEST} lists a shard named {name!r}, but shard names are numbers "
                    "(00000, 00001, ...): the manifest is damaged or was edited; harvest again."
                )
            folder = self.path / "shards" / name
            try:
                a = np.load(folder / "acts.npy", mmap_mode="r", allow_pickle=False)
                i = np.load(folder / "index.npy", mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise ValueError(f"Shard {folder} is unreadable ({err}): the store is damaged; harvest again.") from err
            expected = (entry["rows"], self.manifest["d_model"])
            if a.shape != expected or i.shape != (entry["rows"], 3):
                raise ValueError(f"Shard {folder} has shape {a.shape}, the manifest says {expected}: harvest again.")
            acts.append(a)
            index.append(i)
        self.acts = ShardedRows(acts)
        self.token_ids = ShardedRows([i[:, 0] for i in index])
        self.doc_ids = ShardedRows([i[:, 1] for i in index])
        self.positions = ShardedRows([i[:, 2] for i in index])
        self.model_name = self.manifest["model"]
        self.layer = self.manifest["layer"]
        self.site = self.manifest["site"]
        self.dtype = self.manifest["dtype"]

    def __len__(self) -> int:
        return len(self.acts)

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"ActivationStore({str(self.path)!r}, {len(self):,} tokens x {m['d_model']}, {m['dtype']}, "
            f"{m['model']} {m['site']}, {len(m['shards'])} shards)"
        )

    d_model = Activations.d_model
    torch = Activations.torch
    context = Activations.context
    subset = Activations.subset

    def shard_sizes(self) -> list[int]:
        """Rows per committed shard, in row order."""
        return [entry["rows"] for entry in self.manifest["shards"]]

    def batches(
        self, batch_size: int, *, seed: int = 0, epoch: int = 0, buffer_shards: int = 4, drop_last: bool = False
    ) -> Iterator[Tensor]:
        """One epoch of shuffled float32 batches ``[batch_size, d_model]`` with bounded memory.

        Shards are visited in a random order drawn from (seed, epoch); ``buffer_shards`` of them at a time are
        read into memory and their rows shuffled together, so a batch mixes rows from several shards while only
        ``buffer_shards`` shards are ever in RAM. Every row appears exactly once per epoch (the last batch is
        shorter unless ``drop_last``).
        """
        if batch_size < 1 or buffer_shards < 1:
            raise ValueError(f"batch_size and buffer_shards must be positive, got {batch_size} and {buffer_shards}.")
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.acts.parts))
        carry = np.empty((0, self.acts.shape[1]), dtype=np.float32)
        for b in range(0, len(order), buffer_shards):
            buffer = np.concatenate(
                [carry, *(np.asarray(self.acts.parts[s], dtype=np.float32) for s in order[b : b + buffer_shards])]
            )
            buffer = buffer[rng.permutation(len(buffer))]
            full = len(buffer) - len(buffer) % batch_size
            for start in range(0, full, batch_size):
                yield torch.from_numpy(buffer[start : start + batch_size])
            carry = buffer[full:]
        if len(carry) and not drop_last:
            yield torch.from_numpy(carry)
