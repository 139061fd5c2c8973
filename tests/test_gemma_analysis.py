"""Acceptance of the analysis on the real Gemma 3 270M with the demo SAE (cached by `demo_artifacts`).

What only a real model shows: a Golden Gate Bridge feature found by its contexts, steering with it, and an
attribution of " Paris" that names Paris features and survives ablation. Reuses the cached demo pipeline, so
after the first build each test takes seconds to a minute on two cores.
"""

from __future__ import annotations

import json
import re

import pytest

from saewidgets.analysis import (
    DEFAULT_CLAMP_MULTIPLE,
    attribute,
    feature_card,
    search_contexts,
    steer,
    steering_search,
)
from saewidgets.analysis.output_score import SCORING_PROMPTS
from saewidgets.analysis.steering_judge import continuation_logprobs, degenerate
from saewidgets.demo import STEERING_CONCEPT

pytestmark = pytest.mark.gemma

BRIDGE = re.compile(r"golden gate|bridge|san francisco|suspension|marin|puente|ponte|pont\b|brücke", re.IGNORECASE)
PARIS = re.compile(r"paris|france|french|eiffel|louvre|seine|parigi|parís", re.IGNORECASE)
NEUTRAL_PROMPTS = ["I went for a walk and saw", "My favourite place in the world is",
                   "Yesterday my friend told me about"]


def fraction_matching(stats, feature: int, pattern: re.Pattern) -> float:
    texts = stats.context_texts(feature)
    return sum(bool(pattern.search(t)) for t in texts) / max(1, len(texts))


def golden_gate_steering_feature(demo, gemma) -> int:
    """The feature the demo and the tutorial steer with: context hits for "Golden Gate" ranked by output score and
    a trial generation on `SCORING_PROMPTS` (none of which is a prompt judged below)."""
    _, phrase, terms = STEERING_CONCEPT
    best = steering_search(gemma, demo.sae, demo.stats, phrase, n=1, terms=terms, progress=False)[0]
    assert best.hit_rate > 0, best  # only features whose trials steered are returned
    return best.feature


def test_searching_golden_gate_finds_a_feature_about_the_bridge(demo):
    hits = search_contexts(demo.stats, "Golden Gate Bridge", n=5)
    assert hits, "no feature has the Golden Gate Bridge among its top contexts"
    best = hits[0]["feature"]
    assert fraction_matching(demo.stats, best, BRIDGE) >= 0.8
    card = json.loads(json.dumps(feature_card(demo.stats, best, demo.logit_effects, demo.geometry)))
    assert card["top"] and card["neighbours"] and card["promoted"]


def test_clamping_the_golden_gate_feature_steers_neutral_prompts_to_the_bridge(demo, gemma):
    assert not set(NEUTRAL_PROMPTS) & set(SCORING_PROMPTS), "the feature must be chosen on other prompts"
    feature = golden_gate_steering_feature(demo, gemma)
    assert fraction_matching(demo.stats, feature, BRIDGE) >= 0.5, "a feature about the bridge, by its contexts"
    result = steer(gemma, demo.sae, NEUTRAL_PROMPTS, {feature: DEFAULT_CLAMP_MULTIPLE}, stats=demo.stats,
                   max_new_tokens=24)
    print(result)
    steered_hits = sum(bool(BRIDGE.search(t)) for t in result.steered)
    default_hits = sum(bool(BRIDGE.search(t)) for t in result.default)
    assert steered_hits >= 2 and default_hits == 0, result
    assert sum(not degenerate(t) for t in result.steered) >= 2, result


def test_fluency_score_separates_sentences_from_word_salad(gemma):
    """The measurements `FLUENCY_MARGIN` rests on: the unsteered model's mean log probability per token of fixed
    continuations of one prompt (its own greedy continuations of selection prompts score about -1.2 to -1.9)."""
    prompt = "I went for a walk and saw"
    fluent = [" the Golden Gate Bridge in San Francisco. It was a beautiful day and the fog was rolling in over the bay.",
              " a dog. It was running in the park and I think it was happy."]
    broken = [" SFSFing The Baylings' new film, Grizz Bear Sutter",
              " Golden Bridge bridges over bridge piers Golden span cables towers San",
              " xq zzv bloop ferg wint kraal snorp tiv"]
    scores = continuation_logprobs(gemma, [prompt] * 5, fluent + broken).tolist()
    assert min(scores[:2]) > -1.9 - 1.5 > max(scores[2:]), scores


def test_attribution_of_paris_names_paris_features_that_ablation_confirms(demo, gemma):
    result = attribute(gemma, demo.sae, "The Eiffel Tower is in the city of", target=" Paris", n_ablate=5)
    top = result.top(5)
    assert len(top) == 5
    paris = [row["feature"] for row in top if fraction_matching(demo.stats, row["feature"], PARIS) >= 0.3]
    assert paris and paris[0] in [row["feature"] for row in top[:3]], top
    for row in top:
        assert row["ablation"] is not None and row["ablation"] * row["attribution"] > 0, row
