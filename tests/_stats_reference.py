"""The streaming statistics pass as it was before it worked from (index, value) pairs: the dense reference the
fast `feature_stats` is checked against (tests only).

Every chunk is encoded densely and reduced over its ``[rows, F]`` matrix (``topk`` along the token axis, ``nonzero``
for the band samples and histograms); `_coarse_histogram` loops over features.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from saewidgets.analysis._common import encode_rows, n_features_of
from saewidgets.analysis.stats import _FINE_BINS, FeatureStats
from saewidgets.models import ModelHandle


def reference_feature_stats(
    model,
    sae,
    acts,
    layer: int,
    top_k: int = 20,
    context: tuple[int, int] = (10, 4),
    n_quantile_bands: int = 5,
    samples_per_band: int = 5,
    n_bins: int = 40,
    batch_size: int = 1024,
    seed: int = 0,
    n_tokens: int | None = None,
) -> FeatureStats:
    before, after = context
    total = len(acts) if n_tokens is None else min(n_tokens, len(acts))
    acc = _Accumulator(n_features_of(sae), top_k, before, after, n_quantile_bands, samples_per_band, seed)
    token_ids = torch.from_numpy(np.asarray(acts.token_ids[:total], dtype=np.int32))
    doc_ids = torch.from_numpy(np.asarray(acts.doc_ids[:total], dtype=np.int64))
    for start in range(0, total, batch_size):
        stop = min(total, start + batch_size)
        lo, hi = max(0, start - before), min(total, stop + after)  # margins so every window is encoded
        x = acts.torch(slice(lo, hi))
        f = encode_rows(sae, x)
        acc.update(f, start - lo, stop - lo, token_ids[lo:hi], doc_ids[lo:hi])
    return acc.finish(model, sae.fingerprint(), acts.model_name or model.name, layer, total, n_bins)


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

    def _windows(
        self, f: torch.Tensor, rows: torch.Tensor, feats: torch.Tensor, tokens: torch.Tensor, docs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
                    self.hist_range[sub] *= 2.0**d
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
        keep = self._select(
            torch.cat([self.s_feat, feats]), torch.cat([self.s_val, values]), torch.cat([self.s_key, keys])
        )
        old, new = keep[keep < n_old], keep[keep >= n_old] - n_old
        tok, act = self._windows(f, rows[new], feats[new], tokens, docs)
        self.s_feat = torch.cat([self.s_feat[old], feats[new]])
        self.s_val = torch.cat([self.s_val[old], values[new]])
        self.s_key = torch.cat([self.s_key[old], keys[new]])
        self.s_tok = torch.cat([self.s_tok[old], tok])
        self.s_act = torch.cat([self.s_act[old], act])

    def finish(
        self, model: ModelHandle, fingerprint: str, model_name: str, layer: int, n_tokens: int, n_bins: int
    ) -> FeatureStats:
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
            fingerprint=fingerprint,
            model_name=model_name,
            layer=layer,
            n_tokens=n_tokens,
            context=(self.before, self.after),
            density=(self.count / n_tokens).float(),
            max_act=self.max.clone(),
            mean_act=(self.total / fired).float(),
            top_values=self.top_v.T.contiguous(),
            top_tokens=top_tokens,
            top_acts=self.top_act.permute(1, 0, 2).contiguous(),
            band_values=band_values.view(F, nb, S),
            band_tokens=band_tokens.view(F, nb, S, W),
            band_acts=band_acts.view(F, nb, S, W),
            hist_counts=counts,
            hist_edges=edges,
            token_strings=token_strings,
        )


def _merge_bins(hist: torch.Tensor, doublings: int) -> torch.Tensor:
    """Histograms ``[n, B]`` over ``[0, R]`` re-binned over ``[0, R * 2**doublings]`` (exact: bins merge)."""
    n, bins = hist.shape
    width = min(2**doublings, bins)
    merged = hist.view(n, bins // width, width).sum(-1)
    out = torch.zeros_like(hist)
    out[:, : merged.shape[1]] = merged
    return out


def _coarse_histogram(
    hist: torch.Tensor, hist_range: torch.Tensor, max_act: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
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


def _entries(values, tokens, acts) -> list[tuple]:
    """One feature's filled slots as comparable tuples, in a canonical order (equal values by their window)."""
    out = [
        (v, tuple(t), tuple(round(a, 5) for a in window))
        for v, t, window in zip(values.tolist(), tokens.tolist(), acts.tolist())
        if v > 0
    ]  # NaN > 0 is False
    return sorted(out, key=lambda e: (-e[0], e[1]))


def assert_same_stats(fast: FeatureStats, reference: FeatureStats, dense: torch.Tensor) -> None:
    """``fast`` holds what ``reference`` holds. The only freedom: which of several equal activations fill the last
    top-k slots (``dense [tokens, F]``, the activations, tells when that happens), and the order of equal values."""
    for name in ("density", "max_act", "hist_counts", "top_values"):
        assert torch.equal(getattr(fast, name), getattr(reference, name)), name
    assert torch.equal(fast.hist_edges.nan_to_num(-1.0), reference.hist_edges.nan_to_num(-1.0))
    assert torch.allclose(fast.mean_act, reference.mean_act, rtol=1e-6, atol=0)
    k = fast.top_values.shape[1]
    boundary_ties = False
    for i in range(fast.n_features):
        kth = float(fast.top_values[i, -1])
        tied = kth > 0 and int((dense[:, i] >= kth).sum()) > k
        boundary_ties |= tied
        ours = _entries(fast.top_values[i], fast.top_tokens[i], fast.top_acts[i])
        theirs = _entries(reference.top_values[i], reference.top_tokens[i], reference.top_acts[i])
        if tied:
            ours, theirs = [e for e in ours if e[0] > kth], [e for e in theirs if e[0] > kth]
        assert ours == theirs, f"top contexts of feature {i}"
        for b in range(fast.n_bands):
            assert _entries(fast.band_values[i, b], fast.band_tokens[i, b], fast.band_acts[i, b]) == _entries(
                reference.band_values[i, b], reference.band_tokens[i, b], reference.band_acts[i, b]
            ), f"band {b} of feature {i}"
    if not boundary_ties:
        assert fast.token_strings == reference.token_strings
