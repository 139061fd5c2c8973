"""Hand-made `FeatureStats` whose contexts a test chooses, for the explanation and Neuronpedia tests."""

from __future__ import annotations

import torch

from saewidgets.analysis import FeatureStats, LogitEffects

BEFORE, AFTER = 3, 1
W = BEFORE + 1 + AFTER


def make_stats(features: list[list[list[str]]], fingerprint: str = "abc123", n_bands: int = 2) -> FeatureStats:
    """Statistics where feature ``i``'s top contexts are ``features[i]``: each a list of ``W`` token strings whose
    token at index ``BEFORE`` fires (value falling with rank); '' pads a window. The first two contexts are also
    sampled in the top band, the rest in the lower band."""
    vocab: dict[str, int] = {}
    F, k = len(features), max(1, max(len(f) for f in features))
    top_values, top_tokens, top_acts = (
        torch.zeros(F, k),
        torch.full((F, k, W), -1, dtype=torch.int32),
        torch.zeros(F, k, W),
    )
    band_values = torch.full((F, n_bands, k), float("nan"))
    band_tokens, band_acts = torch.full((F, n_bands, k, W), -1, dtype=torch.int32), torch.zeros(F, n_bands, k, W)
    for i, contexts in enumerate(features):
        for j, window in enumerate(contexts):
            assert len(window) == W
            value = 10.0 - j * 0.1
            ids = [vocab.setdefault(t, len(vocab)) if t else -1 for t in window]
            top_values[i, j] = value
            top_tokens[i, j] = torch.tensor(ids, dtype=torch.int32)
            top_acts[i, j, BEFORE] = value
            band = n_bands - 1 if j < 2 else 0
            slot = j if j < 2 else j - 2
            band_values[i, band, slot] = value
            band_tokens[i, band, slot], band_acts[i, band, slot] = top_tokens[i, j], top_acts[i, j]
    max_act = top_values[:, 0].clone()
    return FeatureStats(
        fingerprint=fingerprint,
        model_name="hand-made",
        layer=1,
        n_tokens=1000,
        context=(BEFORE, AFTER),
        density=(top_values > 0).sum(1).float() / 1000,
        max_act=max_act,
        mean_act=max_act * 0.9,
        top_values=top_values,
        top_tokens=top_tokens,
        top_acts=top_acts,
        band_values=band_values,
        band_tokens=band_tokens,
        band_acts=band_acts,
        hist_counts=torch.ones(F, 4, dtype=torch.int64) * (max_act > 0)[:, None],
        hist_edges=torch.linspace(0, 1, 5).repeat(F, 1) * max_act[:, None],
        token_strings={v: t for t, v in vocab.items()},
    )


def make_effects(promoted: list[list[str]], fingerprint: str = "abc123") -> LogitEffects:
    """Logit effects promoting ``promoted[i]`` for feature ``i`` (suppressing the same tokens, reversed)."""
    vocab = {t: n for n, t in enumerate(dict.fromkeys(t for row in promoted for t in row))}
    ids = torch.tensor([[vocab[t] for t in row] for row in promoted])
    values = torch.linspace(1.0, 0.5, ids.shape[1]).repeat(len(promoted), 1)
    return LogitEffects(
        ids, values, ids.flip(1), -values, token_strings={n: t for t, n in vocab.items()}, fingerprint=fingerprint
    )
