"""The Explorer's bookmarks (`highlight_features`) on the quick demo SAE: each is a concept feature, checked by its top
contexts and its logits, not the first context hit.

Checked here with a stricter reading than the rule itself: the activating token of most top contexts must *be* one of
the concept's words (not a piece of one), and the contexts must mention the concept.
"""

from __future__ import annotations

import pytest

from saewidgets.analysis import mentions, search_contexts
from saewidgets.analysis.steering_sets import CONCEPTS, GOLDEN_GATE
from saewidgets.demo import checked_reader, highlight_features, missing_highlights
from saewidgets.demo.reader_writer import check_reader, concept_words

pytestmark = pytest.mark.gemma


@pytest.fixture(scope="module")
def bookmarks(demo):
    return highlight_features(demo)


def test_each_bookmark_fires_on_its_concept_and_promotes_it(demo, bookmarks):
    concepts = {c.name: c for c in CONCEPTS}
    assert GOLDEN_GATE.name in bookmarks, "the quick demo SAE has a checked Golden Gate reader (458 when measured)"
    assert len(set(bookmarks.values())) == len(bookmarks)
    for name, feature in bookmarks.items():
        concept, words = concepts[name], concept_words(concepts[name])
        examples = demo.stats.top_examples(feature)
        centres = [e["tokens"][e["center"]].strip().lower() for e in examples]
        on_word = sum(c in words for c in centres)
        assert on_word >= len(examples) / 2, (name, feature, centres)
        texts = demo.stats.context_texts(feature)
        assert sum(mentions(t, concept.terms) for t in texts) >= len(texts) / 2, (name, feature)
        promoted = [p["token"].strip().lower() for p in demo.logit_effects.promoted(feature)]
        assert any(p[:4] in w or w in p for p in promoted for w in words if len(p) >= 3), (name, feature, promoted)


def test_the_first_context_hit_is_not_taken_on_trust(demo, bookmarks):
    """The top "Golden Gate" context hit fires on the name but its logits are about nothing: it is no bookmark."""
    top = search_contexts(demo.stats, GOLDEN_GATE.query, n=1)[0].feature
    check = check_reader(demo, top, GOLDEN_GATE)
    assert check.mentions >= 0.5 and not check.promoted and not check.passed
    assert bookmarks[GOLDEN_GATE.name] != top


def test_concepts_without_a_checked_feature_are_named(demo, bookmarks):
    missing = missing_highlights(bookmarks)
    assert set(missing) | set(bookmarks) == {c.name for c in CONCEPTS} and not set(missing) & set(bookmarks)
    for name in missing:
        concept = next(c for c in CONCEPTS if c.name == name)
        assert checked_reader(demo, concept) is None
