"""Typed results: frozen dataclasses that go to JSON with to_dict() and still read like the dicts they replaced."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from saewidgets.activations import harvest
from saewidgets.analysis import (
    ContextHit,
    FeatureCard,
    SteeringExample,
    SteeringResult,
    attribute,
    contrastive_search,
    feature_card,
    feature_geometry,
    feature_stats,
    features_active_on,
    logit_effects,
    search_contexts,
)
from saewidgets.analysis.cards import N_NEIGHBOURS
from saewidgets.analysis.explain import Explanation, Labels, search_labels
from saewidgets.analysis.results import (
    ActiveFeature,
    AttributedFeature,
    ContextExample,
    ContrastHit,
    FeatureLabel,
    Histogram,
    LabelHit,
    Neighbour,
    PositionAttribution,
    QuantileBand,
    describe_features,
    TokenLogit,
)
from saewidgets.models.tiny import _TRAINING_TEXT
from saewidgets.sae import SAE, SAEConfig
from saewidgets.widgets.dashboard import display_card
from saewidgets.widgets.static_html import packed_cards, quantized_card, script_json


def test_search_contexts_returns_frozen_hits_that_go_to_json(tiny_gpt2):
    sae = SAE(
        SAEConfig(d_in=tiny_gpt2.d_model, n_features=32, architecture="topk", k=4, layer=1),
        generator=torch.Generator().manual_seed(0),
    ).eval()
    acts = harvest(tiny_gpt2, _TRAINING_TEXT, 1, progress=False)
    stats = feature_stats(tiny_gpt2, sae, acts, top_k=5, progress=False)
    hits = search_contexts(stats, "the", n=3)
    assert hits and all(isinstance(h, ContextHit) for h in hits)
    hit = hits[0]
    assert hit["feature"] == hit.feature and dict(hit) == hit.to_dict() and "example" in hit and "x" not in hit
    assert json.loads(json.dumps(hit.to_dict()))["fraction"] == hit.fraction
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.feature = 3  # type: ignore[misc]
    with pytest.raises(KeyError):
        hit["nope"]


def test_a_steering_example_round_trips_through_json_and_comes_from_a_steer_result():
    result = SteeringResult(prompts=["I saw"], default=["I saw a cat"], steered=["I saw the bridge"], clamps={12: 9.5})
    example = SteeringExample.from_result(result, 2.0, name="Golden Gate Bridge", steer_rate=0.5)
    assert (example.feature, example.multiple, example.steered, example.output_score) == (
        12,
        2.0,
        ("I saw the bridge",),
        None,
    )
    assert SteeringExample.from_dict(json.loads(json.dumps(example.to_dict()))) == example
    assert example.family == () and example.features == (12,)


def test_a_steering_example_of_a_family_keeps_every_clamped_feature_in_order():
    family = SteeringResult(prompts=["p"], default=["a"], steered=["b"], clamps={1135: 9.0, 451: 4.0})
    example = SteeringExample.from_result(family, 1.0)
    assert (example.feature, example.family, example.features) == (1135, (1135, 451), (1135, 451))
    assert SteeringExample.from_dict(json.loads(json.dumps(example.to_dict()))) == example
    assert describe_features(example.features) == "features 1135+451" and describe_features((7,)) == "feature 7"
    with pytest.raises(ValueError, match="no feature"):
        SteeringExample.from_result(SteeringResult(prompts=["p"], default=["a"], steered=["b"], clamps={}), 1.0)
    with pytest.raises(ValueError, match="its feature first"):
        SteeringExample(feature=3, multiple=1.0, prompts=(), default=(), steered=(), family=(4, 3))
    with pytest.raises(ValueError, match="at least two"):
        SteeringExample(feature=3, multiple=1.0, prompts=(), default=(), steered=(), family=(3,))


def _dict_card(stats, i, effects=None, geometry=None, labels=None):
    """Feature ``i``'s card as `feature_card` wrote it while its rows were dicts, computed here from the
    statistics' tensors: the JSON the dashboard's JavaScript and the static page were written against."""

    def example(tokens, acts, value):
        keep = [j for j, t in enumerate(tokens.tolist()) if t >= 0]
        return {
            "tokens": [stats.token_strings[tokens.tolist()[j]] for j in keep],
            "acts": [acts.tolist()[j] for j in keep],
            "center": sum(j < stats.context[0] for j in keep),
            "value": float(value),
        }

    top = [example(stats.top_tokens[i, j], stats.top_acts[i, j], v) for j, v in enumerate(stats.top_values[i]) if v > 0]
    bands = [
        {
            "label": stats.band_label(b),
            "examples": [
                example(stats.band_tokens[i, b, s], stats.band_acts[i, b, s], v)
                for s, v in enumerate(stats.band_values[i, b])
                if not math.isnan(float(v))
            ],
        }
        for b in reversed(range(stats.n_bands))
    ]
    n_edges = int(torch.isfinite(stats.hist_edges[i]).sum())
    card = {
        "feature": i,
        "density": float(stats.density[i]),
        "max_act": float(stats.max_act[i]),
        "mean_act": float(stats.mean_act[i]),
        "top": top,
        "quantiles": bands,
        "histogram": {
            "counts": [int(c) for c in stats.hist_counts[i, : max(n_edges - 1, 0)]],
            "edges": [float(e) for e in stats.hist_edges[i, :n_edges]],
        },
        "promoted": [],
        "suppressed": [],
    }
    if effects is not None:
        factor = float(stats.mean_act[i]) / effects.final_rms
        for key, ids, values in (
            ("promoted", effects.promoted_ids, effects.promoted_values),
            ("suppressed", effects.suppressed_ids, effects.suppressed_values),
        ):
            card[key] = [
                {"token": effects.token_strings[int(t)], "value": float(v) * factor} for t, v in zip(ids[i], values[i])
            ]
        card["logit_unit"] = "Δlogit @ mean act"
    # the cosines are `FeatureGeometry`'s own (blockwise products, checked in test_analysis); here only the rows' form
    card["neighbours"] = (
        []
        if geometry is None
        else [
            {"feature": int(n["feature"]), "cosine": float(n["cosine"])} for n in geometry.neighbours(i, N_NEIGHBOURS)
        ]
    )
    e = None if labels is None else next((e for e in labels if e.feature == i), None)
    card["label"] = None if e is None else {"text": e.text, "kind": e.kind}
    return card


def test_a_feature_card_and_its_rows_are_frozen_results_whose_json_is_what_the_pages_read(tiny_gpt2, tmp_path):
    """`feature_card` returned a dict of dicts before it and its rows became frozen results: the dashboard's
    JavaScript and the static page read its JSON, so ``to_dict()``, what the dashboard is sent and the static
    page's packed cards must be byte for byte what the dicts gave, key order included, with and without the
    optional parts (``logit_unit`` only with logit effects)."""
    sae = SAE(
        SAEConfig(d_in=tiny_gpt2.d_model, n_features=32, architecture="topk", k=4, layer=1),
        generator=torch.Generator().manual_seed(0),
    ).eval()
    acts = harvest(tiny_gpt2, _TRAINING_TEXT, 1, progress=False)
    stats = feature_stats(tiny_gpt2, sae, acts, top_k=5, progress=False)
    effects = logit_effects(tiny_gpt2, sae, k=3, progress=False, cache_dir=tmp_path)
    geometry = feature_geometry(sae, cache_dir=tmp_path)
    labels = Labels(
        sae.fingerprint(),
        [
            Explanation(f, f"<b>gate</b> & {f}", "llm" if f % 2 else "pattern", "x", "m", "h", "now")
            for f in range(0, 32, 3)
        ],
    )
    fired = [int(i) for i in (stats.density > 0).nonzero().flatten()]
    assert len(fired) > 3
    for parts in ((effects, geometry, labels), ()):
        cards = {i: feature_card(stats, i, *parts) for i in fired}
        before = {i: _dict_card(stats, i, *parts) for i in fired}
        for i, card in cards.items():
            assert isinstance(card, FeatureCard) and isinstance(card.histogram, Histogram)
            assert all(isinstance(e, ContextExample) for e in card.top) and all(
                isinstance(b, QuantileBand) for b in card.quantiles
            )
            assert json.dumps(card.to_dict(), allow_nan=False) == json.dumps(before[i], allow_nan=False)
            assert dict(card) == card.to_dict() == before[i] and card == before[i]  # rows compare equal to dicts
            assert ("logit_unit" in card) == bool(parts) and card.get("logit_unit") == before[i].get("logit_unit")
            assert display_card(card) == display_card(before[i])  # what the dashboard is sent
        static = {i: quantized_card(display_card(c, digits=4)) for i, c in cards.items()}
        static_before = {i: quantized_card(display_card(c, digits=4)) for i, c in before.items()}
        assert script_json(packed_cards(static)) == script_json(packed_cards(static_before))  # the static page's data
    card = cards[fired[0]]
    assert card["top"] and card["neighbours"] == [] and card.logit_unit is None and card.label is None
    row = card.top[0]
    assert (
        row["tokens"] is row.tokens
        and row.value == row.acts[row.center]
        and set(row) == {"tokens", "acts", "center", "value"}
    )
    for frozen in (card, row, card.quantiles[0], card.histogram):
        with pytest.raises(dataclasses.FrozenInstanceError):
            frozen.feature = 3  # type: ignore[misc]
    full = feature_card(stats, fired[0], effects, geometry, labels)
    assert isinstance(full.promoted[0], TokenLogit) and isinstance(full.neighbours[0], Neighbour)
    assert full.neighbours[0].feature == full["neighbours"][0]["feature"] != fired[0]


def test_search_and_attribution_rows_are_frozen_results_with_the_dicts_keys(tiny_gpt2):
    """The rows of `features_active_on`, `contrastive_search`, `search_labels` and `Attribution.top` have the
    keys (in order) their dicts had, and read like them."""
    sae = SAE(
        SAEConfig(d_in=tiny_gpt2.d_model, n_features=32, architecture="topk", k=4, layer=1),
        generator=torch.Generator().manual_seed(0),
    ).eval()
    active = features_active_on(tiny_gpt2, sae, "The Golden Gate Bridge", n=3)
    assert active and all(isinstance(h, ActiveFeature) for h in active)
    assert list(active[0].to_dict()) == ["feature", "activation", "fraction_of_max", "position", "token"]
    assert active[0]["token"] == active[0].token and active[0].fraction_of_max is None
    contrast = contrastive_search(tiny_gpt2, sae, "The Golden Gate Bridge", "SELECT name FROM users", n=3)
    assert contrast and isinstance(contrast[0], ContrastHit)
    assert list(contrast[0]) == ["feature", "score", "activation_a", "activation_b"]
    top = attribute(tiny_gpt2, sae, "The Eiffel Tower is in", target=" Paris").top(2)
    assert top and isinstance(top[0], AttributedFeature) and isinstance(top[0].positions[0], PositionAttribution)
    plain = json.loads(json.dumps(top[0].to_dict()))
    assert list(plain) == ["feature", "attribution", "ablation", "positions"]
    assert list(plain["positions"][0]) == ["position", "token", "attribution"] and plain == top[0]
    labels = Labels(sae.fingerprint(), [Explanation(4, "Golden Gate", "llm", "x", "m", "h", "now")])
    (hit,) = search_labels(labels, "gate")
    assert isinstance(hit, LabelHit) and hit == {"feature": 4, "text": "Golden Gate", "kind": "llm"}
    assert labels.view(4) == FeatureLabel("Golden Gate", "llm") == {"text": "Golden Gate", "kind": "llm"}
