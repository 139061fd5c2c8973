"""Per-feature statistics for dashboards, gathered in one streaming pass over a corpus's tokens.

For every SAE feature `feature_stats` keeps:
  - its ``top_k`` highest activations, each with a window of tokens around it (``context`` = tokens before/after)
    and the feature's activation on every token of that window;
  - random examples from activation bands that split ``[0, max]`` into ``n_quantile_bands`` equal parts
    (the intervals of sae-vis / Neuronpedia), ``samples_per_band`` per band;
  - a histogram of its non-zero activations, firing density, max and mean activation.

Memory stays bounded (no ``[tokens, features]`` matrix is kept): tokens are encoded ``batch_size`` rows at a time
and merged into running top-k tables with ``torch.topk``. Band samples are bottom-k samples over random keys, which
is a uniform sample within each band; the bands follow the running maximum, so an example seen while the maximum
was still lower may have been dropped from a band it later would have belonged to (the drift stops once the
maximum settles, early on a large corpus). The histogram is exact: its range doubles as the maximum grows, merging
pairs of fine bins.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .._atomic_write import atomic_dir, finish_interrupted_save
from ..model import ModelHandle
from ..activation_source import is_activation_source
from ._common import check_feature, encode_rows, n_features_of, sae_layer

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
    _texts: list[list[str]] | None = field(default=None, repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return int(self.density.shape[0])

    @property
    def n_bands(self) -> int:
        return int(self.band_values.shape[1])

    def __repr__(self) -> str:
        alive = int((self.density > 0).sum())
        return (f"FeatureStats({self.n_features:,} features ({alive:,} fire), {self.n_tokens:,} tokens of "
                f"{self.model_name!r} layer {self.layer}, sae {self.fingerprint})")

    # -- reading -----------------------------------------------------------------------------------------------

    def check_feature(self, feature: int) -> int:
        return check_feature(self.n_features, feature)

    def _example(self, tokens: torch.Tensor, acts: torch.Tensor, value: float) -> dict[str, Any]:
        """One context as the card contract wants it: token strings, activations, index of the activating token."""
        ids, values = tokens.tolist(), acts.tolist()  # plain lists: per-element tensor indexing is slow
        keep = [j for j, t in enumerate(ids) if t >= 0]
        before = self.context[0]
        return {
            "tokens": [self.token_strings[ids[j]] for j in keep],
            "acts": [values[j] for j in keep],
            "center": sum(j < before for j in keep),
            "value": float(value),
        }

    def top_examples(self, feature: int, n: int | None = None) -> list[dict[str, Any]]:
        """The feature's top activating contexts, highest first (card items)."""
        i = self.check_feature(feature)
        values = self.top_values[i]
        count = int((values > 0).sum()) if n is None else min(n, int((values > 0).sum()))
        return [self._example(self.top_tokens[i, j], self.top_acts[i, j], values[j]) for j in range(count)]

    def band_label(self, band: int) -> str:
        lo, hi = band / self.n_bands, (band + 1) / self.n_bands
        return f"{lo:.2f}-{hi:.2f} of max"

    def quantile_examples(self, feature: int) -> list[dict[str, Any]]:
        """Sampled contexts per activation band, highest band first: ``[{"label", "examples"}]``."""
        i = self.check_feature(feature)
        out = []
        for b in reversed(range(self.n_bands)):
            values = self.band_values[i, b]
            examples = [
                self._example(self.band_tokens[i, b, s], self.band_acts[i, b, s], values[s])
                for s in range(len(values)) if not math.isnan(float(values[s]))
            ]
            out.append({"label": self.band_label(b), "examples": examples})
        return out

    def histogram(self, feature: int) -> dict[str, list]:
        """Counts of the feature's non-zero activations and the bin edges (activation units)."""
        i = self.check_feature(feature)
        edges = self.hist_edges[i]
        n_edges = int(torch.isfinite(edges).sum())
        return {"counts": [int(c) for c in self.hist_counts[i, : max(n_edges - 1, 0)]],
                "edges": [float(e) for e in edges[:n_edges]]}

    def context_texts(self, feature: int) -> list[str]:
        """The text of each of the feature's top contexts (token strings joined), for searching."""
        if self._texts is None:
            strings = self.token_strings
            self._texts = [
                ["".join(strings[t] for t in window if t >= 0) for window, v in zip(windows, values) if v > 0]
                for windows, values in zip(self.top_tokens.tolist(), self.top_values.tolist())
            ]
        return self._texts[self.check_feature(feature)]

    def check_matches(self, sae: Any) -> None:
        """Refuse statistics computed for another SAE (compared by ``sae.fingerprint()``)."""
        theirs = sae.fingerprint()
        if theirs != self.fingerprint:
            raise ValueError(
                f"These feature statistics were computed for SAE {self.fingerprint}, but this SAE is {theirs}: "
                "feature numbers would point at the wrong features. Recompute them with "
                "feature_stats(model, sae, corpus), or load the statistics saved for this SAE."
            )
        if n_features_of(sae) != self.n_features:
            raise ValueError(f"These statistics cover {self.n_features:,} features but the SAE has {n_features_of(sae):,}.")

    # -- saving ------------------------------------------------------------------------------------------------

    _TENSOR_FIELDS = ("density", "max_act", "mean_act", "top_values", "top_tokens", "top_acts", "band_values",
                      "band_tokens", "band_acts", "hist_counts", "hist_edges")

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write to folder ``path`` (safetensors + json), atomically: a reader never sees half a write.

        Only these files are written or replaced; anything else in the folder is kept. A non-empty folder that
        saewidgets did not write is refused unless ``overwrite=True``; see `saewidgets._atomic_write.atomic_dir`.
        """
        meta = {"format_version": _FORMAT_VERSION, "fingerprint": self.fingerprint, "model_name": self.model_name,
                "layer": self.layer, "n_tokens": self.n_tokens, "context": list(self.context),
                "token_strings": {str(k): v for k, v in self.token_strings.items()}}
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_file({k: getattr(self, k).contiguous() for k in self._TENSOR_FIELDS}, str(tmp / _TENSORS),
                      metadata={"fingerprint": self.fingerprint})
            (tmp / _META).write_text(json.dumps(meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, sae: Any = None) -> FeatureStats:
        """Read statistics written by `save`; with ``sae``, also check they belong to it."""
        path = Path(path)
        finish_interrupted_save(path)
        if not (path / _META).exists():
            raise FileNotFoundError(f"{path} holds no saved feature statistics (no {_META}); "
                                    "compute them with feature_stats(...) and stats.save(path).")
        try:
            meta = json.loads((path / _META).read_text())
            tensors = load_file(str(path / _TENSORS))
        except (OSError, ValueError, SafetensorError) as err:  # a truncated file is a SafetensorError
            raise ValueError(f"The feature statistics in {path} are corrupt ({err}); compute them again.") from err
        missing = [k for k in cls._TENSOR_FIELDS if k not in tensors]
        if missing:
            raise ValueError(f"The feature statistics in {path} are corrupt ({_TENSORS} lacks {', '.join(missing)}); "
                             "compute them again.")
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path} was written in format {meta.get('format_version')}, this saewidgets reads "
                             f"format {_FORMAT_VERSION}: compute the statistics again.")
        stats = cls(fingerprint=meta["fingerprint"], model_name=meta["model_name"], layer=meta["layer"],
                    n_tokens=meta["n_tokens"], context=tuple(meta["context"]),
                    token_strings={int(k): v for k, v in meta["token_strings"].items()},
                    **{k: tensors[k] for k in cls._TENSOR_FIELDS})
        if sae is not None:
            stats.check_matches(sae)
        return stats


def feature_stats(
    model: ModelHandle,
    sae: Any,
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
    """
    layer = sae_layer(model, sae, layer)
    before, after = (int(c) for c in context)
    if before < 0 or after < 0:
        raise ValueError(f"context=(before, after) must be tokens >= 0, got {context}.")
    for name, value in (("top_k", top_k), ("n_quantile_bands", n_quantile_bands),
                        ("samples_per_band", samples_per_band), ("n_bins", n_bins), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    acts = _as_activations(model, sae, corpus_or_activations, layer, n_tokens, progress)
    total = len(acts) if n_tokens is None else min(n_tokens, len(acts))
    if total == 0:
        raise ValueError("There are no tokens to compute statistics over.")

    acc = _Accumulator(n_features_of(sae), top_k, before, after, n_quantile_bands, samples_per_band, seed)
    token_ids = torch.from_numpy(np.asarray(acts.token_ids[:total], dtype=np.int32))
    doc_ids = torch.from_numpy(np.asarray(acts.doc_ids[:total], dtype=np.int64))
    with tqdm(total=total, desc="feature stats", unit="tok", disable=not progress) as bar:
        for start in range(0, total, batch_size):
            stop = min(total, start + batch_size)
            lo, hi = max(0, start - before), min(total, stop + after)  # margins so every window is encoded
            x = acts.torch(slice(lo, hi))
            if not bool(torch.isfinite(x).all()):
                row, col = (~torch.isfinite(x)).nonzero()[0].tolist()
                raise FloatingPointError(
                    f"The activations contain {float(x[row, col])} at row {lo + row:,}, column {col}: statistics of "
                    "non-finite activations mean nothing. Re-harvest them (a float16 model overflows: use float32 "
                    "or bfloat16) or drop those rows."
                )
            f = encode_rows(sae, x)
            acc.update(f, start - lo, stop - lo, token_ids[lo:hi], doc_ids[lo:hi])
            bar.update(stop - start)
    return acc.finish(model, sae.fingerprint(), acts.model_name or model.name, layer, total, n_bins)


def _as_activations(model: ModelHandle, sae: Any, source: Any, layer: int, n_tokens: int | None,
                    progress: bool) -> Any:
    """``source`` if it already holds activations (checked against the SAE), else a harvest of it."""
    if is_activation_source(source):
        width = source.acts.shape[1]
        if width != sae.W_dec.shape[1]:
            raise ValueError(f"These activations are {width}-dimensional but the SAE reads {sae.W_dec.shape[1]}.")
        if getattr(source, "layer", -1) not in (-1, layer):
            raise ValueError(f"These activations were read at layer {source.layer} but the SAE reads layer {layer}: "
                             "harvest the layer the SAE was trained on.")
        return source
    from ..activations import harvest

    return harvest(model, source, layer, n_tokens=n_tokens, progress=progress)


class _Accumulator:
    """Running per-feature tables, updated chunk by chunk. Tables are laid out ``[slot, feature, ...]``."""

    def __init__(self, n_features: int, k: int, before: int, after: int, n_bands: int, per_band: int, seed: int):
        self.F, self.k, self.before, self.after = n_features, k, before, after
        self.W = before + 1 + after
        self.n_bands, self.per_band = n_bands, per_band
        self.gen = torch.Generator().manual_seed(seed)
        F, W = n_features, self.W
        self.count = torch.zeros(F, dtype=torch.float64)
        self.total = torch.zeros(F, dtype=torch.float64)
        self.max = torch.zeros(F)
        self.top_v = torch.zeros(k, F)
        self.top_tok = torch.full((k, F, W), -1, dtype=torch.int32)
        self.top_act = torch.zeros(k, F, W)
        # band samples as flat lists: feature, value, random key, window tokens, window activations
        self.s_feat = torch.zeros(0, dtype=torch.long)
        self.s_val = torch.zeros(0)
        self.s_key = torch.zeros(0, dtype=torch.float64)
        self.s_tok = torch.zeros(0, W, dtype=torch.int32)
        self.s_act = torch.zeros(0, W)
        self.hist_range = torch.zeros(F)  # a power of two >= max once the feature has fired
        self.hist = torch.zeros(F, _FINE_BINS, dtype=torch.int64)

    def _windows(self, f: torch.Tensor, rows: torch.Tensor, feats: torch.Tensor, tokens: torch.Tensor,
                 docs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and activations ``[n, W]`` around buffer rows ``rows`` for features ``feats`` (same doc only)."""
        around = rows[:, None] + torch.arange(-self.before, self.after + 1)
        inside = (around >= 0) & (around < len(f))
        clipped = around.clamp(0, len(f) - 1)
        inside &= docs[clipped] == docs[rows][:, None]
        acts = torch.where(inside, f[clipped, feats[:, None]], 0.0)
        toks = torch.where(inside, tokens[clipped], -1).to(torch.int32)
        return toks, acts

    def update(self, f: torch.Tensor, c0: int, c1: int, tokens: torch.Tensor, docs: torch.Tensor) -> None:
        """Merge buffer ``f [rows, F]``, whose rows ``c0:c1`` are new tokens (the rest are window margins)."""
        core = f[c0:c1]
        fired = core > 0
        self.count += fired.sum(0)
        self.total += core.clamp(min=0).sum(0, dtype=torch.float64)
        self.max = torch.maximum(self.max, core.max(0).values.clamp(min=0))
        self._update_top(f, core, c0, tokens, docs)
        rows, feats = fired.nonzero(as_tuple=True)
        values = core[rows, feats]
        self._update_hist(feats, values)
        self._update_bands(f, rows + c0, feats, values, tokens, docs)

    def _update_top(self, f, core, c0, tokens, docs) -> None:
        kk = min(self.k, len(core))
        v, r = core.topk(kk, dim=0)  # [kk, F]
        merged_v, pick = torch.cat([self.top_v, v]).topk(self.k, dim=0)
        new = (pick >= self.k) & (merged_v > 0)
        changed = new.any(0).nonzero().flatten()
        if len(changed) == 0:
            return
        pick_c = pick[:, changed]
        old = pick_c.clamp(max=self.k - 1)
        tok = self.top_tok[:, changed].gather(0, old[..., None].expand(-1, -1, self.W))
        act = self.top_act[:, changed].gather(0, old[..., None].expand(-1, -1, self.W))
        slot, col = new[:, changed].nonzero(as_tuple=True)
        feats = changed[col]
        rows = r[pick_c[slot, col] - self.k, feats] + c0
        tok[slot, col], act[slot, col] = self._windows(f, rows, feats, tokens, docs)
        self.top_tok[:, changed], self.top_act[:, changed] = tok, act
        self.top_v = merged_v

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
                    self.hist_range[sub] *= 2.0 ** d
        bins = (values / self.hist_range[feats] * _FINE_BINS).long().clamp(max=_FINE_BINS - 1)
        self.hist.view(-1).index_add_(0, feats * _FINE_BINS + bins, torch.ones_like(bins))

    def _select(self, feat: torch.Tensor, val: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Indices of the ``per_band`` smallest keys in each (feature, band) group, bands by the running max."""
        band = (val / self.max[feat] * self.n_bands).long().clamp(0, self.n_bands - 1)
        order = torch.argsort((feat * self.n_bands + band).double() + key)
        group = (feat * self.n_bands + band)[order]
        first = torch.searchsorted(group, group)
        return order[torch.arange(len(group)) - first < self.per_band]

    def _update_bands(self, f, rows, feats, values, tokens, docs) -> None:
        n_old = len(self.s_feat)
        keys = torch.rand(len(feats), generator=self.gen, dtype=torch.float64)
        keep = self._select(torch.cat([self.s_feat, feats]), torch.cat([self.s_val, values]),
                            torch.cat([self.s_key, keys]))
        old, new = keep[keep < n_old], keep[keep >= n_old] - n_old
        tok, act = self._windows(f, rows[new], feats[new], tokens, docs)
        self.s_feat = torch.cat([self.s_feat[old], feats[new]])
        self.s_val = torch.cat([self.s_val[old], values[new]])
        self.s_key = torch.cat([self.s_key[old], keys[new]])
        self.s_tok = torch.cat([self.s_tok[old], tok])
        self.s_act = torch.cat([self.s_act[old], act])

    def finish(self, model: ModelHandle, fingerprint: str, model_name: str, layer: int, n_tokens: int,
               n_bins: int) -> FeatureStats:
        F, nb, S, W = self.F, self.n_bands, self.per_band, self.W
        # final bands: re-select with the final max, then order each band by activation, highest first
        keep = self._select(self.s_feat, self.s_val, self.s_key)
        feat, val, tok, act = self.s_feat[keep], self.s_val[keep], self.s_tok[keep], self.s_act[keep]
        band = (val / self.max[feat] * nb).long().clamp(0, nb - 1)
        group = feat * nb + band
        order = torch.argsort(group.double() * 2 - val.double() / self.max[feat].double())  # -val/max in (-1, 0]
        group, val, tok, act = group[order], val[order], tok[order], act[order]
        rank = torch.arange(len(group)) - torch.searchsorted(group, group)
        band_values = torch.full((F * nb, S), float("nan"))
        band_tokens = torch.full((F * nb, S, W), -1, dtype=torch.int32)
        band_acts = torch.zeros(F * nb, S, W)
        band_values[group, rank], band_tokens[group, rank], band_acts[group, rank] = val, tok, act

        counts, edges = _coarse_histogram(self.hist, self.hist_range, self.max, n_bins)
        top_tokens = self.top_tok.permute(1, 0, 2).contiguous()
        used = torch.cat([top_tokens.flatten(), band_tokens.flatten()]).unique()
        used = used[used >= 0].tolist()
        token_strings = dict(zip(used, model.tokens_to_str(used)))
        fired = self.count.clamp(min=1)
        return FeatureStats(
            fingerprint=fingerprint, model_name=model_name, layer=layer, n_tokens=n_tokens,
            context=(self.before, self.after),
            density=(self.count / n_tokens).float(), max_act=self.max.clone(), mean_act=(self.total / fired).float(),
            top_values=self.top_v.T.contiguous(), top_tokens=top_tokens,
            top_acts=self.top_act.permute(1, 0, 2).contiguous(),
            band_values=band_values.view(F, nb, S), band_tokens=band_tokens.view(F, nb, S, W),
            band_acts=band_acts.view(F, nb, S, W), hist_counts=counts, hist_edges=edges, token_strings=token_strings,
        )


def _merge_bins(hist: torch.Tensor, doublings: int) -> torch.Tensor:
    """Histograms ``[n, B]`` over ``[0, R]`` re-binned over ``[0, R * 2**doublings]`` (exact: bins merge)."""
    n, bins = hist.shape
    width = min(2**doublings, bins)
    merged = hist.view(n, bins // width, width).sum(-1)
    out = torch.zeros_like(hist)
    out[:, : merged.shape[1]] = merged
    return out


def _coarse_histogram(hist: torch.Tensor, hist_range: torch.Tensor, max_act: torch.Tensor,
                      n_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``n_bins`` bins per feature covering ``[0, ~max]``, made by summing runs of fine bins."""
    F = hist.shape[0]
    counts = torch.zeros(F, n_bins, dtype=torch.int64)
    edges = torch.full((F, n_bins + 1), float("nan"))
    for i in (max_act > 0).nonzero().flatten().tolist():
        width = float(hist_range[i]) / _FINE_BINS
        n_used = min(int(float(max_act[i]) / width) + 1, _FINE_BINS)
        group = math.ceil(n_used / n_bins)
        n_out = math.ceil(n_used / group)
        fine = torch.zeros(n_out * group, dtype=torch.int64)
        fine[:n_used] = hist[i, :n_used]
        counts[i, :n_out] = fine.view(n_out, group).sum(-1)
        edges[i, : n_out + 1] = torch.arange(n_out + 1) * group * width
    return counts, edges
