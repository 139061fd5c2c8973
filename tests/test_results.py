"""Typed results: frozen dataclasses that go to JSON with to_dict() and still read like the dicts they replaced."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from saewidgets.activations import harvest
from saewidgets.analysis import ContextHit, SteeringExample, SteeringResult, feature_stats, search_contexts
from saewidgets.models.tiny import _TRAINING_TEXT
from saewidgets.sae import SAE, SAEConfig


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
