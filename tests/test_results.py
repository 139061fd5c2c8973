"""Typed results: frozen dataclasses that go to JSON with to_dict() and still read like the dicts they replaced."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from saewidgets.activations import harvest
from saewidgets.analysis import (
    ContextHit,
    FeatureCard,
    SteeringExample,
    SteeringResult,
    feature_card,
    feature_geometry,
    feature_stats,
    logit_effects,
    search_contexts,
)
from saewidgets.analysis.cards import N_NEIGHBOURS, _logits
from saewidgets.models.tiny import _TRAINING_TEXT
from saewidgets.sae import SAE, SAEConfig
from saewidgets.widgets.dashboard import display_card


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
    two = SteeringResult(prompts=["p"], default=["a"], steered=["b"], clamps={1: 1.0, 2: 1.0})
    with pytest.raises(ValueError, match="one clamped feature"):
        SteeringExample.from_result(two, 2.0)


def test_a_feature_card_is_a_frozen_result_whose_dict_is_the_json_the_pages_read(tiny_gpt2, tmp_path):
    """`feature_card` returned this dict before it became a `FeatureCard`: the dashboard's JavaScript and the
    static page read its JSON, so ``to_dict()`` must give the same JSON, key order included, with and without
    the optional parts (``logit_unit`` only with logit effects)."""
    sae = SAE(
        SAEConfig(d_in=tiny_gpt2.d_model, n_features=32, architecture="topk", k=4, layer=1),
        generator=torch.Generator().manual_seed(0),
    ).eval()
    acts = harvest(tiny_gpt2, _TRAINING_TEXT, 1, progress=False)
    stats = feature_stats(tiny_gpt2, sae, acts, top_k=5, progress=False)
    effects = logit_effects(tiny_gpt2, sae, k=3, progress=False, cache_dir=tmp_path)
    geometry = feature_geometry(sae, cache_dir=tmp_path)
    i = int(stats.density.argmax())
    for with_effects, with_geometry in ((effects, geometry), (None, None)):
        card = feature_card(stats, i, with_effects, with_geometry)
        before = {
            "feature": i,
            "density": float(stats.density[i]),
            "max_act": float(stats.max_act[i]),
            "mean_act": float(stats.mean_act[i]),
            "top": stats.top_examples(i),
            "quantiles": stats.quantile_examples(i),
            "histogram": stats.histogram(i),
            **(
                _logits(with_effects, i, float(stats.mean_act[i]))
                if with_effects is not None
                else {"promoted": [], "suppressed": []}
            ),
            "neighbours": with_geometry.neighbours(i, N_NEIGHBOURS) if with_geometry is not None else [],
            "label": None,
        }
        assert isinstance(card, FeatureCard)
        assert json.dumps(card.to_dict(), allow_nan=False) == json.dumps(before, allow_nan=False)
        assert dict(card) == card.to_dict() == before and card == before
        assert ("logit_unit" in card) == (with_effects is not None) and card.get("logit_unit") == before.get(
            "logit_unit"
        )
        assert display_card(card) == display_card(before)  # what the dashboard and the static page are sent
    assert card["top"] and card["neighbours"] == [] and card.logit_unit is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.feature = 3  # type: ignore[misc]
