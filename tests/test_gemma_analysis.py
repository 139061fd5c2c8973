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
    attribute,
    feature_card,
    feature_stats,
    search_contexts,
    steer,
)
from saewidgets.analysis.output_score import SCORING_PROMPTS
from saewidgets.analysis.steering_judge import calibrate_fluency, continuation_logprobs
from saewidgets.analysis.steering_sets import EVALUATION_PROMPTS
from saewidgets.demo import STEERING_CONCEPT
from saewidgets.demo.writer_search import writer_search

pytestmark = pytest.mark.gemma

BRIDGE = re.compile(r"golden gate|bridge|san francisco|suspension|marin|puente|ponte|pont\b|brücke", re.IGNORECASE)
PARIS = re.compile(r"paris|france|french|eiffel|louvre|seine|parigi|parís", re.IGNORECASE)
#: A handful of evaluation prompts (judging only; see steering_sets) and the rate the recipe must reach on them.
HELD_OUT = EVALUATION_PROMPTS[:6]
HELD_OUT_GOAL = 2 / 6  # the benchmark: 5/6 on these for the quick demo SAE (README recipe, feature 1135 at 1.5x)


def fraction_matching(stats, feature: int, pattern: re.Pattern) -> float:
    texts = stats.context_texts(feature)
    return sum(bool(pattern.search(t)) for t in texts) / max(1, len(texts))


def test_searching_golden_gate_finds_a_feature_about_the_bridge(demo):
    hits = search_contexts(demo.stats, "Golden Gate Bridge", n=5)
    assert hits, "no feature has the Golden Gate Bridge among its top contexts"
    best = hits[0]["feature"]
    assert fraction_matching(demo.stats, best, BRIDGE) >= 0.8
    card = json.loads(json.dumps(feature_card(demo.stats, best, demo.logit_effects, demo.geometry).to_dict()))
    assert card["top"] and card["neighbours"] and card["promoted"]


def test_the_readme_recipe_steers_held_out_prompts_to_the_bridge(demo, gemma):
    """The README quickstart's recipe (search calibrating the strength over 1x-2x, then clamp at the chosen one) on
    the quick demo SAE, judged as the steering benchmark judges it, on a few evaluation prompts only: the feature
    and its strength are chosen on selection prompts by `steering_search`, the fluency bar is calibrated on
    selection prompts, and neither ever sees the prompts judged here. The search is the demo's (`writer_search`:
    the README's call with its defaults written out, as test_steering_recipe checks), run once for the demo's
    steering example, the tutorials' writer and this test."""
    _, phrase, terms = STEERING_CONCEPT
    hits = writer_search(demo, phrase, terms, progress=False)
    assert hits, "no feature steered the selection prompts toward the bridge"
    hit = hits[0]
    assert hit.hit_rate > 0 and fraction_matching(demo.stats, hit.feature, BRIDGE) >= 0.5, hit
    fluency = calibrate_fluency(gemma, SCORING_PROMPTS, max_new_tokens=24)
    result = steer(
        gemma,
        demo.sae,
        list(HELD_OUT),
        hit.clamps,  # the feature at the strength its trials chose
        stats=demo.stats,
        max_new_tokens=24,
        terms=terms,
        fluency=fluency,
    )
    print(result)
    assert not any(result.judgement.default_mention), result  # neutral prompts
    assert result.hit_rate >= HELD_OUT_GOAL, result


def test_fluency_score_separates_sentences_from_word_salad(gemma):
    """The measurements `FLUENCY_MARGIN` rests on: the unsteered model's mean log probability per token of fixed
    continuations of one prompt (its own greedy continuations of selection prompts score about -1.2 to -1.9)."""
    prompt = "I went for a walk and saw"
    fluent = [
        " the Golden Gate Bridge in San Francisco. It was a beautiful day and the fog was rolling in over the bay.",
        " a dog. It was running in the park and I think it was happy.",
    ]
    broken = [
        " SFSFing The Baylings' new film, Grizz Bear Sutter",
        " Golden Bridge bridges over bridge piers Golden span cables towers San",
        " xq zzv bloop ferg wint kraal snorp tiv",
    ]
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


def test_fast_statistics_equal_the_dense_reference_on_the_demo_sae(demo, gemma):
    """The demo's trained TopK SAE on 3,000 real tokens: the pass from `encode_topk` pairs equals the dense pass."""
    import torch
    from _stats_reference import assert_same_stats, reference_feature_stats

    acts = demo.activations.subset(slice(0, 3000))
    layer = demo.sae.cfg.layer
    fast = feature_stats(gemma, demo.sae, acts, batch_size=512, progress=False)
    reference = reference_feature_stats(gemma, demo.sae, acts, layer, batch_size=512)
    with torch.no_grad():
        dense = demo.sae.encode(acts.torch())
    assert (dense > 0).any(0).sum() > 100
    assert_same_stats(fast, reference, dense)
