"""Explanations on the real Gemma 3 270M with the quick demo SAE (cached by the ``demo`` fixture): the pattern label
of the Golden Gate feature, and the embedded Gemma explaining and scoring a few features (its scores are printed:
run with ``-s`` to read them; a 270M base model is expected to judge near chance)."""

from __future__ import annotations

import json
import math
import re

import pytest

from saewidgets.analysis import search_contexts
from saewidgets.analysis.explain import (
    LocalExplainer,
    PatternExplainer,
    explain_features,
    held_out_examples,
    score_explanations,
    search_labels,
)

pytestmark = pytest.mark.gemma

GATE_OR_BRIDGE = re.compile(r"gate|bridge", re.IGNORECASE)


def golden_gate_feature(demo) -> int:
    """The feature whose top contexts most often contain "Golden Gate" (it fires on the name's tokens)."""
    return search_contexts(demo.stats, "Golden Gate", n=1)[0]["feature"]


def test_every_demo_feature_has_a_pattern_label_and_the_golden_gate_one_names_gate_or_bridge(demo, tmp_path):
    labels = demo.labels
    assert labels.fingerprint == demo.sae.fingerprint() and len(labels) == demo.stats.n_features
    # LLM explanations cached beside the demo (tutorial 08 makes a few) replace those features' pattern labels.
    assert {e.kind for e in labels} <= {"pattern", "llm"} and "pattern" in {e.kind for e in labels}
    patterns = explain_features(
        demo.stats, PatternExplainer(), logit_effects=demo.logit_effects, cache_dir=tmp_path, progress=False
    )
    assert len(patterns) == demo.stats.n_features and {e.kind for e in patterns} == {"pattern"}
    feature = golden_gate_feature(demo)
    print(f"#{feature}: {patterns[feature].text}")
    assert GATE_OR_BRIDGE.search(patterns[feature].text), patterns[feature].text
    found = {h["feature"] for q in ("Gate", "Bridge") for h in search_labels(patterns, q, n=50)}
    assert feature in found


@pytest.mark.slow
def test_embedded_gemma_explains_and_scores_demo_features(demo, gemma, tmp_path):
    features = list(dict.fromkeys([golden_gate_feature(demo), search_contexts(demo.stats, "Paris", n=1)[0]["feature"]]))
    local = LocalExplainer(gemma)
    labels = explain_features(
        demo.stats, local, features, logit_effects=demo.logit_effects, cache_dir=tmp_path, progress=False
    )
    assert len(labels) == len(features) and all(e.text and e.model == gemma.name for e in labels)
    examples = held_out_examples(
        gemma, demo.sae, demo.held_out, demo.stats, features, n_activating=5, n_non_activating=5
    )
    assert all(ex.activating and ex.non_activating for ex in examples.values()), {
        f: (len(ex.activating), len(ex.non_activating)) for f, ex in examples.items()
    }
    scores = score_explanations(local, labels, examples, tasks=("detection",), progress=False)
    summary = scores.summary()
    print(json.dumps({"explanations": {e.feature: e.text for e in labels}, "scores": summary}, indent=1))
    assert len(scores.rows) == sum(len(ex.activating) + len(ex.non_activating) for ex in examples.values())
    for row in summary:
        assert 0.0 <= row["balanced_accuracy"] <= 1.0 and not math.isnan(row["balanced_accuracy"])
