"""Per-feature statistics for dashboards, gathered in one streaming pass over a corpus's tokens.

For every SAE feature `feature_stats` keeps:
  - its ``top_k`` highest activations, each with a window of tokens around it (``context`` = tokens before/after)
    and the feature's activation on every token of that window;
  - random examples from activation bands that split ``[0, max]`` into ``n_quantile_bands`` equal parts
    (the intervals of sae-vis / Neuronpedia), ``samples_per_band`` per band;
  - a histogram of its non-zero activations, firing density, max and mean activation.

Memory stays bounded (no ``[tokens, features]`` matrix is kept): tokens are encoded ``batch_size`` rows at a time
and only their active (token, feature, value) triples are merged into running tables (a TopK SAE's come from
``encode_topk``, k per token), so a batch costs its encoder product plus work proportional to k. Band samples are bottom-k samples over random keys, which
is a uniform sample within each band; the bands follow the running maximum, so an example seen while the maximum
was still lower may have been dropped from a band it later would have belonged to (the drift stops once the
maximum settles, early on a large corpus). The histogram is exact: its range doubles as the maximum grows, merging
pairs of fine bins.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._atomic_write import atomic_dir, finish_interrupted_save
from .._checks import whole_number
from ..cancel import CancelSignal, check_cancel
from ..progress import progress_bar
from ..models.handle import ModelHandle
from ..activation_source import is_activation_source
from ..sae.provenance import check_activations
from ._common import ENCODE_CHUNK_ROWS, check_feature, n_features_of, sae_layer
from .results import ContextExample, Histogram, QuantileBand

if TYPE_CHECKING:
    from ..sae import SAE

_TENSORS = "feature_stats.safetensors"
_META = "feature_stats.json"
_FORMAT_VERSION = 1
_FINE_BINS = 512  # histogram resolution while streaming (a power of two: merging pairs of bins must stay exact)


@dataclass(eq=False)
class FeatureStats:
    """What `feature_stats` learned about each feature; everything a dashboard needs, without the model.

    Token windows are ``before + 1 + after`` token ids with the activating token at index ``before``; ``-1``
    marks positions outside the document (or an empty slot). Activations are in the SAE's own units.

    Attributes:
        fingerprint: ``sae.fingerprint()`` of the SAE these statistics describe.
        density: ``[F]`` fraction of tokens on which the feature fires (activation > 0).
        max_act: ``[F]`` largest activation seen.
        mean_act: ``[F]`` mean activation over the tokens where it fires (0 if it never fires).
        top_values: ``[F, k]`` the top activations, descending (0 for empty slots).
        top_tokens, top_acts: ``[F, k, W]`` their token windows and the feature's activation on each token.
        band_values: ``[F, n_bands, S]`` sampled activations per band (NaN for empty slots); band b covers
            ``[b/n_bands, (b+1)/n_bands) x max_act``.
        band_tokens, band_acts: ``[F, n_bands, S, W]`` their windows.
        hist_counts: ``[F, n_bins]`` counts of non-zero activations; hist_edges ``[F, n_bins + 1]`` (NaN-padded
            when a feature uses fewer bins).
        token_strings: text of every token id that appears in a stored window.
    """

    fingerprint: str
    model_name: str
    layer: int
    n_tokens: int
    context: tuple[int, int]
    density: torch.Tensor
    max_act: torch.Tensor
    mean_act: torch.Tensor
    top_values: torch.Tensor
    top_tokens: torch.Tensor
    top_acts: torch.Tensor
    band_values: torch.Tensor
    band_tokens: torch.Tensor
    band_acts: torch.Tensor
    hist_counts: torch.Tensor
    hist_edges: torch.Tensor
    token_strings: dict[int, str] = field(repr=False)
    _texts: list[list[str]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return int(self.density.shape[0])

    @property
    def n_bands(self) -> int:
        return int(self.band_values.shape[1])

    def __repr__(self) -> str:
        alive = int((self.density > 0).sum())
        return (
            f"FeatureStats({self.n_features:,} features ({alive:,} fire), {self.n_tokens:,} tokens of "
            f"{self.model_name!r} layer {self.layer}, sae {self.fingerprint})"
        )

    # -- reading -----------------------------------------------------------------------------------------------

    def check_feature(self, feature: int) -> int:
        return check_feature(self.n_features, feature)

    def _example(self, ids: list[int], acts: list[float], value: float) -> ContextExample:
        """One context as the card contract wants it: token strings, activations, index of the activating token.
        Takes plain lists (a feature's rows converted at once): indexing tensors per context is slow, and a static
        page reads the contexts of every feature."""
        keep = [j for j, t in enumerate(ids) if t >= 0]
        before = self.context[0]
        return ContextExample(
            tokens=[self.token_strings[ids[j]] for j in keep],
            acts=[acts[j] for j in keep],
            center=sum(j < before for j in keep),
            value=float(value),
        )

    def top_examples(self, feature: int, n: int | None = None) -> list[ContextExample]:
        """The feature's top activating contexts, highest first (card items)."""
        i = self.check_feature(feature)
        values = self.top_values[i].tolist()
        fired = sum(v > 0 for v in values)
        count = fired if n is None else min(n, fired)
        tokens, acts = self.top_tokens[i, :count].tolist(), self.top_acts[i, :count].tolist()
        return [self._example(tokens[j], acts[j], values[j]) for j in range(count)]

    def band_label(self, band: int) -> str:
        lo, hi = band / self.n_bands, (band + 1) / self.n_bands
        return f"{lo:.2f}-{hi:.2f} of max"

    def quantile_examples(self, feature: int) -> list[QuantileBand]:
        """Sampled contexts per activation band, highest band first."""
        i = self.check_feature(feature)
        values, tokens, acts = self.band_values[i].tolist(), self.band_tokens[i].tolist(), self.band_acts[i].tolist()
        out = []
        for b in reversed(range(self.n_bands)):
            examples = [
                self._example(tokens[b][s], acts[b][s], value)
                for s, value in enumerate(values[b])
                if not math.isnan(value)
            ]
            out.append(QuantileBand(self.band_label(b), examples))
        return out

    def histogram(self, feature: int) -> Histogram:
        """Counts of the feature's non-zero activations and the bin edges (activation units)."""
        i = self.check_feature(feature)
        edges = self.hist_edges[i].tolist()  # plain lists, as in `_example`
        n_edges = sum(math.isfinite(e) for e in edges)
        return Histogram(
            counts=[int(c) for c in self.hist_counts[i, : max(n_edges - 1, 0)].tolist()],
            edges=[float(e) for e in edges[:n_edges]],
        )

    def context_texts(self, feature: int) -> list[str]:
        """The text of each of the feature's top contexts (token strings joined), for searching."""
        if self._texts is None:
            strings = self.token_strings
            self._texts = [
                ["".join(strings[t] for t in window if t >= 0) for window, v in zip(windows, values) if v > 0]
                for windows, values in zip(self.top_tokens.tolist(), self.top_values.tolist())
            ]
        return self._texts[self.check_feature(feature)]

    def check_matches(self, sae: SAE) -> None:
        """Refuse statistics computed for another SAE (compared by ``sae.fingerprint()``)."""
        theirs = sae.fingerprint()
        if theirs != self.fingerprint:
            raise ValueError(
                f"These feature statistics were computed for SAE {self.fingerprint}, but this SAE is {theirs}: "
                "feature numbers would point at the wrong features. Recompute them with "
                "feature_stats(model, sae, corpus), or load the statistics saved for this SAE."
            )
        if n_features_of(sae) != self.n_features:
            raise ValueError(
                f"These statistics cover {self.n_features:,} features but the SAE has {n_features_of(sae):,}."
            )

    # -- saving ------------------------------------------------------------------------------------------------

    _TENSOR_FIELDS = (
        "density",
        "max_act",
        "mean_act",
        "top_values",
        "top_tokens",
        "top_acts",
        "band_values",
        "band_tokens",
        "band_acts",
        "hist_counts",
        "hist_edges",
    )

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write to folder ``path`` (safetensors + json), atomically: a reader never sees half a write.

        Only these files are written or replaced; anything else in the folder is kept. A non-empty folder that
        saewidgets did not write is refused unless ``overwrite=True``; see `saewidgets._atomic_write.atomic_dir`.
        """
        meta = {
            "format_version": _FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "model_name": self.model_name,
            "layer": self.layer,
            "n_tokens": self.n_tokens,
            "context": list(self.context),
            "token_strings": {str(k): v for k, v in self.token_strings.items()},
        }
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_file(
                {k: getattr(self, k).contiguous() for k in self._TENSOR_FIELDS},
                str(tmp / _TENSORS),
                metadata={"fingerprint": self.fingerprint},
            )
            (tmp / _META).write_text(json.dumps(meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, sae: SAE | None = None) -> FeatureStats:
        """Read statistics written by `save`; with ``sae``, also check they belong to it."""
        path = Path(path)
        finish_interrupted_save(path)
        if not (path / _META).exists():
            raise FileNotFoundError(
                f"{path} holds no saved feature statistics (no {_META}); "
                "compute them with feature_stats(...) and stats.save(path)."
            )
        try:
            meta = json.loads((path / _META).read_text())
            tensors = load_file(str(path / _TENSORS))
        except (OSError, ValueError, SafetensorError) as err:  # a truncated file is a SafetensorError
            raise ValueError(f"The feature statistics in {path} are corrupt ({err}); compute them again.") from err
        missing = [k for k in cls._TENSOR_FIELDS if k not in tensors]
        if missing:
            raise ValueError(
                f"The feature statistics in {path} are corrupt ({_TENSORS} lacks {', '.join(missing)}); "
                "compute them again."
            )
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path} was written in format {meta.get('format_version')}, this saewidgets reads "
                f"format {_FORMAT_VERSION}: compute the statistics again."
            )
        stats = cls(
            fingerprint=meta["fingerprint"],
            model_name=meta["model_name"],
            layer=meta["layer"],
            n_tokens=meta["n_tokens"],
            context=tuple(meta["context"]),
            token_strings={int(k): v for k, v in meta["token_strings"].items()},
            **{k: tensors[k] for k in cls._TENSOR_FIELDS},
        )
        if sae is not None:
            stats.check_matches(sae)
        return stats


def feature_stats(
    model: ModelHandle,
    sae: SAE,
    corpus_or_activations: Any,
    layer: int | str | None = None,
    n_tokens: int | None = None,
    top_k: int = 20,
    context: tuple[int, int] = (10, 4),
    n_quantile_bands: int = 5,
    samples_per_band: int = 5,
    n_bins: int = 40,
    batch_size: int = 1024,
    seed: int = 0,
    progress: bool = True,
    cancel: CancelSignal | None = None,
    check_provenance: bool = True,
) -> FeatureStats:
    """Dashboard statistics for every feature of ``sae`` over a corpus, in one streaming pass.

    Args:
        model: the `ModelHandle` (token strings come from its tokenizer; a corpus is harvested through it).
        sae: the SAE; the result records ``sae.fingerprint()``.
        corpus_or_activations: an `Activations` (rows ordered by document and position) or texts / a corpus,
            which is harvested at ``layer`` first.
        layer: the block the SAE reads (default: ``sae.cfg.layer``).
        n_tokens: use only the first this many tokens.
        top_k: top activating contexts kept per feature.
        context: tokens shown (before, after) the activating token.
        n_quantile_bands, samples_per_band: activation bands (equal fractions of the max) and examples per band.
        n_bins: histogram bins (at most; a feature's bins cover ``[0, ~max]``).
        batch_size: tokens encoded per step (memory ~ ``batch_size x n_features x 4`` bytes).
        seed: for the random band samples.
        cancel: a `threading.Event` (see `saewidgets.cancel`), checked before every batch (and by the harvest of
            a corpus); once set, raises `saewidgets.cancel.Cancelled`.
        check_provenance: refuse an SAE, or activations, from another model or layer (False: use them anyway).
    """
    layer = sae_layer(model, sae, layer, check_provenance)
    if isinstance(context, (str, bytes)) or not hasattr(context, "__len__") or len(context) != 2:
        raise TypeError(f"context must be a pair (tokens before, tokens after), e.g. (10, 4); got {context!r}.")
    before, after = (whole_number("context", c, 0) for c in context)
    top_k, n_quantile_bands, samples_per_band, n_bins, batch_size = (
        whole_number(name, value, 1)
        for name, value in (
            ("top_k", top_k),
            ("n_quantile_bands", n_quantile_bands),
            ("samples_per_band", samples_per_band),
            ("n_bins", n_bins),
            ("batch_size", batch_size),
        )
    )
    n_tokens = None if n_tokens is None else whole_number("n_tokens", n_tokens, 1)
    if n_bins > _FINE_BINS:
        raise ValueError(
            f"n_bins={n_bins} is more than the {_FINE_BINS} fine bins activations are streamed into: "
            f"pass at most n_bins={_FINE_BINS}."
        )
    _check_table_size(n_features_of(sae), top_k, n_quantile_bands * samples_per_band, before + 1 + after, n_bins)
    acts = _as_activations(model, sae, corpus_or_activations, layer, n_tokens, progress, cancel, check_provenance)
    total = len(acts) if n_tokens is None else min(n_tokens, len(acts))
    if total == 0:
        raise ValueError("There are no tokens to compute statistics over.")

    with _one_thread():  # ~100 MB of tables to fill: on all threads the fill waits for both under load
        acc = _Accumulator(n_features_of(sae), top_k, before, after, n_quantile_bands, samples_per_band, seed, total)
    token_ids = torch.from_numpy(np.asarray(acts.token_ids[:total], dtype=np.int32))
    doc_ids = torch.from_numpy(np.asarray(acts.doc_ids[:total], dtype=np.int64))
    with progress_bar(total, desc="feature stats", unit="tok", disable=not progress) as bar:
        for start in range(0, total, batch_size):
            check_cancel(cancel, "the feature statistics")
            stop = min(total, start + batch_size)
            lo, hi = max(0, start - before), min(total, stop + after)  # margins so every window is encoded
            x = acts.torch(slice(lo, hi))
            with _one_thread():  # a small op: on all threads it would wait for both to be scheduled
                finite = bool(torch.isfinite(x).all())
            if not finite:
                row, col = (~torch.isfinite(x)).nonzero()[0].tolist()
                raise FloatingPointError(
                    f"The activations contain {float(x[row, col])} at row {lo + row:,}, column {col}: statistics of "
                    "non-finite activations mean nothing. Re-harvest them (a float16 model overflows: use float32 "
                    "or bfloat16) or drop those rows."
                )
            codes = _Codes.encode(sae, x)
            with _one_thread():
                acc.update(codes, start - lo, stop - lo, lo, doc_ids[lo:hi])
            bar.update(stop - start)
    with _one_thread():
        return acc.finish(model, token_ids, doc_ids, sae.fingerprint(), acts.model_name or model.name, layer, n_bins)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the bookkeeping on one CPU thread (the encoder's matrix product keeps them all).

    Its tensors are ~k x batch elements, just above the size where each op splits across threads; on a busy
    machine every such op then waits for all threads to be scheduled, which made the bookkeeping 2x slower than
    on one thread (measured with 2 cores under load 12)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_table_size(n_features: int, top_k: int, band_slots: int, window: int, n_bins: int) -> None:
    """Refuse settings whose per-feature tables would not fit in memory, before any work (not deep in torch)."""
    slots = top_k + band_slots
    table_bytes = n_features * (slots * (1 + window * 2) + n_bins * 3) * 4
    limit = _memory_for_tables()
    if table_bytes > limit:
        raise ValueError(
            f"top_k={top_k}, bands x samples_per_band={band_slots}, a {window}-token context and n_bins={n_bins} "
            f"would need {table_bytes / 2**30:,.1f} GiB of tables for {n_features:,} features, more than the "
            f"{limit / 2**30:,.1f} GiB this machine can spare: lower them (the defaults are top_k=20, 5 x 5 bands, "
            "context=(10, 4))."
        )


def _memory_for_tables() -> int:
    """Bytes the statistics tables may take: a quarter of the memory available now (Linux), else 4 GiB."""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        return available // 4
    except (OSError, StopIteration, ValueError):
        return 4 * 2**30


def _as_activations(
    model: ModelHandle,
    sae: SAE,
    source: Any,
    layer: int,
    n_tokens: int | None,
    progress: bool,
    cancel: CancelSignal | None = None,
    check_provenance: bool = True,
) -> Any:
    """``source`` if it already holds activations (checked against the SAE), else a harvest of it."""
    if is_activation_source(source):
        width = source.acts.shape[1]
        if width != sae.W_dec.shape[1]:
            raise ValueError(f"These activations are {width}-dimensional but the SAE reads {sae.W_dec.shape[1]}.")
        check_activations(source, sae, model, layer, check_provenance=check_provenance)
        return source
    from ..activations import harvest

    return harvest(model, source, layer, n_tokens=n_tokens, progress=progress, cancel=cancel)


class _Codes:
    """The active features of a buffer of encoded rows: ``(row, feature, value)`` triples with ``value > 0``, in
    row-major order (rows ascending, features ascending within a row), as ``nonzero`` of the dense activations
    lists them.

    A TopK SAE yields them from `SAE.encode_topk` (k per row) without ever building the dense ``[rows, F]``
    matrix; other architectures (ReLU, JumpReLU, BatchTopK's threshold) are dense in shape, so each product's
    matrix is encoded and only its non-zeros are kept (lookups go through the triples either way).
    """

    def __init__(
        self,
        rows: torch.Tensor,
        feats: torch.Tensor,
        values: torch.Tensor,
        n_features: int,
    ):
        self.rows, self.feats, self.values, self.n_features = rows, feats, values, n_features

    @classmethod
    @torch.no_grad()
    def encode(cls, sae: SAE, x: torch.Tensor, chunk: int = ENCODE_CHUNK_ROWS) -> _Codes:
        """The active features of residual rows ``x`` (a batch and its window margins), encoded ``chunk`` rows at a
        time like `encode_rows` (the same products, hence the same values to the last bit: a product's rows can
        round differently with its size), on the SAE's device; the triples come back to the CPU, where the tables
        live. Only the encoder products and the selection of active features run on all threads; what follows
        touches ~k values per row and runs on one (see `_one_thread`)."""
        n_features = n_features_of(sae)
        x = x.to(sae.W_dec.device, sae.W_dec.dtype)
        pieces = [x[i : i + chunk] for i in range(0, len(x), chunk)]
        if getattr(getattr(sae, "cfg", None), "architecture", None) != "topk":
            triples = []
            for first, piece in zip(range(0, len(x), chunk), pieces):
                f = sae.encode(piece).float().cpu()
                with _one_thread():
                    rows, feats = (f > 0).nonzero(as_tuple=True)
                    triples.append((rows + first, feats, f[rows, feats]))
            with _one_thread():
                rows, feats, values = (torch.cat(column) for column in zip(*triples))
                return cls(rows, feats, values, n_features)
        codes = [sae.encode_topk(p) for p in pieces]
        with _one_thread():
            indices = codes[0].indices if len(codes) == 1 else torch.cat([c.indices for c in codes])
            values = codes[0].values if len(codes) == 1 else torch.cat([c.values for c in codes])
            indices, order = indices.cpu().sort(dim=1)
            values = values.cpu().gather(1, order).float().flatten()
            rows = torch.arange(len(x)).repeat_interleave(indices.shape[1])
            fired = values > 0
            return cls(rows[fired], indices.flatten()[fired], values[fired], n_features)

    def at(self, rows: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Activation of feature ``feats[i]`` on buffer row ``rows[i]`` (any shape; 0 where it is not active)."""
        if len(self.rows) == 0:
            return torch.zeros(rows.shape)
        keys = self.rows * self.n_features + self.feats  # ascending: the triples are row-major
        query = rows * self.n_features + feats
        pos = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
        return torch.where(keys[pos] == query, self.values[pos], 0.0)


def _pair_up(free: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Slot for each incoming entry: ``free [n, P]`` marks the free slots of n table rows, ``owner`` (ascending) the
    row each entry goes to, with no row receiving more entries than it has free slots."""
    row, slot = free.nonzero(as_tuple=True)  # row-major: each row's free slots in order
    first_free = torch.searchsorted(row, owner)
    rank = torch.arange(len(owner)) - torch.searchsorted(owner, owner)
    return slot[first_free + rank]


class _Accumulator:
    """Running per-feature tables, updated chunk by chunk from the chunk's active (row, feature, value) triples
    only, so a chunk costs about its number of active pairs, not rows x features.

    Both tables hold slots in no particular order (ordered once, in `finish`) and the corpus row of each entry;
    only the feature's activations around it are copied when it enters (its tokens are read at the end). Among
    equal top activations the earliest token wins. Band samples are, per (feature, band), the ``per_band``
    smallest of random keys drawn for every activation.
    """

    def __init__(
        self, n_features: int, k: int, before: int, after: int, n_bands: int, per_band: int, seed: int, n_tokens: int
    ):
        self.F, self.k, self.before, self.after = n_features, k, before, after
        self.W = before + 1 + after
        self.n_bands, self.per_band = n_bands, per_band
        self.gen = torch.Generator().manual_seed(seed)
        F, W, P = n_features, self.W, n_bands * per_band
        self.count = torch.zeros(F, dtype=torch.float64)
        self.total = torch.zeros(F, dtype=torch.float64)
        self.max = torch.zeros(F)
        self.top_v = torch.zeros(F, k)  # 0: empty slot
        self.top_row = torch.full((F, k), -1)
        self.top_act = torch.empty(F, k, W)  # written when an entry comes in; `finish` zeroes empty slots
        self.s_key = torch.full((F, P), math.inf, dtype=torch.float64)  # inf: empty slot
        self.s_val = torch.zeros(F, P)
        self.s_row = torch.full((F, P), -1)
        self.s_act = torch.empty(F, P, W)  # read only for filled slots
        self.hist_range = torch.zeros(F)  # a power of two >= max once the feature has fired
        self.hist = torch.zeros(F, _FINE_BINS, dtype=torch.int32 if n_tokens < 2**31 else torch.int64)

    def update(self, codes: _Codes, c0: int, c1: int, offset: int, docs: torch.Tensor) -> None:
        """Merge a buffer's codes: buffer row ``r`` is corpus row ``offset + r``, rows ``c0:c1`` are new tokens (the
        rest are window margins), ``docs`` the buffer's document ids."""
        lo, hi = torch.searchsorted(codes.rows, torch.tensor([c0, c1])).tolist()
        rows, feats, values = codes.rows[lo:hi], codes.feats[lo:hi], codes.values[lo:hi]
        self.count += torch.bincount(feats, minlength=self.F)
        self.total += torch.bincount(feats, weights=values.double(), minlength=self.F)
        new_max = self.max.scatter_reduce(0, feats, values, "amax")
        grew = new_max > self.max
        self.max = new_max
        t_pair, t_feat, t_slot = self._update_top(rows, feats, values, offset)
        self._update_hist(feats, values)
        b_pair, b_feat, b_slot = self._update_bands(rows, feats, values, grew, offset)
        # the feature's activations around each entry that came in, computed once per pair
        need = torch.zeros(len(feats), dtype=torch.long)
        need[t_pair], need[b_pair] = 1, 1
        index = need.cumsum(0) - 1
        acts = self._window_acts(codes, rows[need.bool()], feats[need.bool()], docs)
        self.top_act[t_feat, t_slot] = acts[index[t_pair]]
        self.s_act[b_feat, b_slot] = acts[index[b_pair]]

    def _window_acts(self, codes: _Codes, rows: torch.Tensor, feats: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """The activations ``[n, W]`` of features ``feats`` around buffer rows ``rows`` (0 outside the document)."""
        around = rows[:, None] + torch.arange(-self.before, self.after + 1)
        clipped = around.clamp(0, len(docs) - 1)
        inside = (around == clipped) & (docs[clipped] == docs[rows][:, None])
        return torch.where(inside, codes.at(clipped, feats[:, None].expand_as(clipped)), 0.0)

    def _update_top(self, rows, feats, values, offset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Put the pairs that beat their feature's k-th best into its table; returns (pair, feature, slot) of each."""
        k = self.k
        pair = (values > self.top_v.min(1).values[feats]).nonzero().flatten()  # k-th best: 0 while slots are free
        order = torch.argsort(values[pair], descending=True, stable=True)  # stable: earlier rows first among ties
        pair = pair[order[torch.argsort(feats[pair[order]], stable=True)]]  # by feature, then value descending
        f = feats[pair]
        changed, which = torch.unique_consecutive(f, return_inverse=True)
        rank = torch.arange(len(pair)) - torch.searchsorted(f, changed)[which]
        best = rank < k
        pair, which, rank = pair[best], which[best], rank[best]
        new_v = torch.full((len(changed), k), -math.inf)
        new_v[which, rank] = values[pair]
        new_row = torch.full((len(changed), k), torch.iinfo(torch.long).max)
        new_row[which, rank] = rows[pair] + offset
        new_pair = torch.zeros(len(changed), k, dtype=torch.long)
        new_pair[which, rank] = pair
        # keep each feature's k best of old + new by (value descending, row ascending): the rest leave
        both_row = torch.cat([self.top_row[changed], new_row], 1)
        order = both_row.argsort(dim=1, stable=True)
        both_v = torch.cat([self.top_v[changed], new_v], 1).gather(1, order)
        keep = order.gather(1, both_v.argsort(dim=1, descending=True, stable=True)[:, :k])
        kept = torch.zeros(len(changed), 2 * k, dtype=torch.bool).scatter_(1, keep, True)
        a, r = kept[:, k:].nonzero(as_tuple=True)  # the new entries that made it ...
        slot = _pair_up(~kept[:, :k], a)  # ... each take an old slot that did not
        pair, feat = new_pair[a, r], changed[a]
        self.top_v[feat, slot], self.top_row[feat, slot] = values[pair], rows[pair] + offset
        return pair, feat, slot

    def _update_hist(self, feats: torch.Tensor, values: torch.Tensor) -> None:
        grow = self.max > self.hist_range
        if grow.any():
            fresh = grow & (self.hist_range == 0)
            self.hist_range[fresh] = torch.exp2(torch.ceil(torch.log2(self.max[fresh])))
            again = grow & ~fresh
            if again.any():
                doublings = torch.ceil(torch.log2(self.max[again] / self.hist_range[again])).long()
                idx = again.nonzero().flatten()
                for d in doublings.unique().tolist():
                    sub = idx[doublings == d]
                    self.hist[sub] = _merge_bins(self.hist[sub], d)
                    self.hist_range[sub] *= 2.0**d
        bins = (values / self.hist_range[feats] * _FINE_BINS).long().clamp(max=_FINE_BINS - 1)
        self.hist.view(-1).index_add_(0, feats * _FINE_BINS + bins, torch.ones_like(bins, dtype=self.hist.dtype))

    def _band(self, values: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Band of each activation of features ``feats`` (equal fractions of the running max)."""
        return (values / self.max[feats] * self.n_bands).long().clamp(0, self.n_bands - 1)

    def _update_bands(self, rows, feats, values, grew, offset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep the ``per_band`` smallest random keys of each (feature, band); returns (pair, feature, slot) of each
        pair that came in. A feature whose max grew re-bands its samples (some may leave); one whose max stayed put
        only takes a pair into a band with room or whose largest key it beats."""
        nb, S = self.n_bands, self.per_band
        keys = torch.rand(len(feats), generator=self.gen, dtype=torch.float64)
        # each (feature, band)'s number of samples and largest key, from the table (F x P slots: fewer than the
        # pairs x P a per-pair look at the pair's feature's slots would read)
        filled = self.s_row >= 0
        slot_feat = filled.nonzero(as_tuple=True)[0]
        slot_group = slot_feat * nb + self._band(self.s_val[filled], slot_feat)
        held = torch.bincount(slot_group, minlength=self.F * nb)
        largest = torch.full((self.F * nb,), -math.inf, dtype=torch.float64)
        largest.scatter_reduce_(0, slot_group, self.s_key[filled], "amax")
        group = feats * nb + self._band(values, feats)
        pair = (grew[feats] | (held[group] < S) | (keys < largest[group])).nonzero().flatten()
        redo = torch.unique(feats[pair])  # features whose bands are selected again
        owner_new = torch.searchsorted(redo, feats[pair])
        owner_old, slot_old = (self.s_row[redo] >= 0).nonzero(as_tuple=True)
        f_old = redo[owner_old]
        owner = torch.cat([owner_old, owner_new])
        key = torch.cat([self.s_key[f_old, slot_old], keys[pair]])
        group = owner * nb + self._band(torch.cat([self.s_val[f_old, slot_old], values[pair]]), redo[owner])
        order = torch.argsort(group.double() + key)  # by group, then key (keys lie in [0, 1))
        ranked = group[order]
        keep = torch.zeros(len(order), dtype=torch.bool)
        keep[order] = torch.arange(len(order)) - torch.searchsorted(ranked, ranked) < S
        n_old = len(f_old)
        leave_f, leave_slot = f_old[~keep[:n_old]], slot_old[~keep[:n_old]]
        self.s_key[leave_f, leave_slot], self.s_row[leave_f, leave_slot], self.s_val[leave_f, leave_slot] = (
            math.inf,
            -1,
            0.0,
        )
        incoming = keep[n_old:]
        pair, owner = pair[incoming], owner_new[incoming]
        order = torch.argsort(owner, stable=True)  # grouped by feature, as `_pair_up` wants
        pair, owner = pair[order], owner[order]
        slot = _pair_up(self.s_row[redo] < 0, owner)
        feat = redo[owner]
        self.s_key[feat, slot], self.s_val[feat, slot], self.s_row[feat, slot] = (
            keys[pair],
            values[pair],
            rows[pair] + offset,
        )
        return pair, feat, slot

    def _token_windows(self, rows: torch.Tensor, tokens: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """Token ids ``[n, W]`` around corpus rows ``rows`` (-1 outside the document)."""
        around = rows[:, None] + torch.arange(-self.before, self.after + 1)
        clipped = around.clamp(0, len(tokens) - 1)
        inside = (around == clipped) & (docs[clipped] == docs[rows][:, None])
        return torch.where(inside, tokens[clipped], -1)

    def finish(
        self,
        model: ModelHandle,
        tokens: torch.Tensor,
        docs: torch.Tensor,
        fingerprint: str,
        model_name: str,
        layer: int,
        n_bins: int,
    ) -> FeatureStats:
        """The tables in `FeatureStats` order: top activations highest first (ties: earliest token first), band
        samples by band and, within one, highest first; token windows read from the corpus rows."""
        F, nb, S, W = self.F, self.n_bands, self.per_band, self.W
        order = self.top_row.argsort(dim=1, stable=True)
        order = order.gather(1, self.top_v.gather(1, order).argsort(dim=1, descending=True, stable=True))
        top_values, top_rows = self.top_v.gather(1, order), self.top_row.gather(1, order)
        top_acts = self.top_act.gather(1, order[..., None].expand(-1, -1, W))
        top_acts[top_values == 0] = 0.0  # slots never filled

        feat, slot = (self.s_row >= 0).nonzero(as_tuple=True)
        value, row = self.s_val[feat, slot], self.s_row[feat, slot]
        group = feat * nb + self._band(value, feat)
        order = torch.argsort(row, stable=True)
        order = order[torch.argsort(value[order], descending=True, stable=True)]
        order = order[torch.argsort(group[order], stable=True)]
        group = group[order]
        rank = torch.arange(len(group)) - torch.searchsorted(group, group)
        band_values = torch.full((F * nb, S), math.nan)
        band_rows = torch.full((F * nb, S), -1)
        band_acts = torch.zeros(F * nb, S, W)
        band_values[group, rank], band_rows[group, rank] = value[order], row[order]
        band_acts[group, rank] = self.s_act[feat[order], slot[order]]

        # token windows of the filled slots only (-1 elsewhere), and the text of every token they hold
        windows = []
        for rows in (top_rows, band_rows):
            filled = rows >= 0
            out = torch.full((*rows.shape, W), -1, dtype=torch.int32)
            out[filled] = window = self._token_windows(rows[filled], tokens, docs)
            windows.append((out, window))
        (top_tokens, top_window), (band_tokens, band_window) = windows
        seen = torch.bincount(torch.cat([top_window.flatten(), band_window.flatten()]).long() + 1)
        used = seen[1:].nonzero().flatten().tolist()  # bin 0 counts the -1 of positions outside the document
        counts, edges = _coarse_histogram(self.hist, self.hist_range, self.max, n_bins)
        fired = self.count.clamp(min=1)
        return FeatureStats(
            fingerprint=fingerprint,
            model_name=model_name,
            layer=layer,
            n_tokens=len(tokens),
            context=(self.before, self.after),
            density=(self.count / len(tokens)).float(),
            max_act=self.max.clone(),
            mean_act=(self.total / fired).float(),
            top_values=top_values,
            top_tokens=top_tokens,
            top_acts=top_acts,
            band_values=band_values.view(F, nb, S),
            band_tokens=band_tokens.view(F, nb, S, W),
            band_acts=band_acts.view(F, nb, S, W),
            hist_counts=counts,
            hist_edges=edges,
            token_strings=dict(zip(used, model.tokens_to_str(used))),
        )


def _merge_bins(hist: torch.Tensor, doublings: int) -> torch.Tensor:
    """Histograms ``[n, B]`` over ``[0, R]`` re-binned over ``[0, R * 2**doublings]`` (exact: bins merge)."""
    n, bins = hist.shape
    width = min(2**doublings, bins)
    merged = hist.view(n, bins // width, width).sum(-1, dtype=hist.dtype)
    out = torch.zeros_like(hist)
    out[:, : merged.shape[1]] = merged
    return out


def _coarse_histogram(
    hist: torch.Tensor, hist_range: torch.Tensor, max_act: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``n_bins`` bins per feature covering ``[0, ~max]``, each the sum of a run of ``group`` fine bins.

    A feature's fine bins are ``hist_range / B`` wide (a power of two, so every edge is exact), and the first
    ``n_used`` of them reach its max; coarse bin j sums fine bins ``[j * group, (j + 1) * group)``."""
    fired = max_act > 0
    width = torch.where(fired, hist_range, 1.0) / _FINE_BINS
    n_used = torch.where(fired, (max_act / width).long() + 1, 0).clamp(max=_FINE_BINS)
    group = ((n_used + n_bins - 1) // n_bins).clamp(min=1)
    n_out = (n_used + group - 1) // group
    feat, fine = hist.nonzero(as_tuple=True)  # fine bins past n_used are empty
    counts = (
        torch.zeros(len(hist) * n_bins, dtype=torch.int64)
        .index_add_(0, feat * n_bins + fine // group[feat], hist[feat, fine].long())
        .view(len(hist), n_bins)
    )
    j = torch.arange(n_bins + 1)
    edges = torch.where((j <= n_out[:, None]) & fired[:, None], (j * group[:, None]).float() * width[:, None], math.nan)
    return counts, edges
