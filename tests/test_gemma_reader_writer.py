"""The tutorials' reader, writer and control features (`concept_features`) on the quick demo SAE.

The choice is cached beside the SAE, so the tutorials that nbmake executes afterwards read the same three features
without searching again; its steering search is `writer_search`'s, shared with the demo's steering example and the
steering acceptance test (whichever runs first searches).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import saewidgets as sw
from saewidgets.analysis import search_contexts, steering_candidates
from saewidgets.analysis.steering_sets import GOLDEN_GATE
from saewidgets.demo.reader_writer import CACHE_FILE, ConceptFeatures, control_feature
from saewidgets.demo.writer_search import writer_search

pytestmark = pytest.mark.gemma


@pytest.fixture(scope="module")
def features(demo):
    return sw.concept_features(demo, progress=False)


def test_the_reader_is_the_top_context_hit(demo, features):
    top = search_contexts(demo.stats, GOLDEN_GATE.query, n=1)[0]
    assert (features.reader, features.reader_fraction) == (top.feature, pytest.approx(top.fraction))


def test_the_writer_steered_in_trials_and_is_one_of_the_searchs_candidates(demo, features):
    """The writer is what `steering_search` chose among its candidates: context hits and the features that most
    promote the terms (feature 1135 when measured, a promoter: its top contexts end before "San Francisco")."""
    assert features.writer is not None, "the quick demo SAE has a Golden Gate writer (feature 1135 when measured)"
    assert features.writer_trial_rate > 0 and features.writer_multiple > 0
    candidates = steering_candidates(demo.model, demo.sae, demo.stats, GOLDEN_GATE.query, GOLDEN_GATE.terms)
    assert features.writer in candidates
    # a family (1135 with 451 when measured) is clamped as its trials ran it: its first feature is the writer
    clamps = features.writer_clamps
    assert next(iter(clamps)) == features.writer and set(clamps) <= set(candidates)
    assert set(clamps.values()) == {features.writer_multiple}
    assert len(clamps) == max(1, len(features.writer_family))


def test_the_control_fires_and_is_unrelated_to_the_query(demo, features):
    f = features.control
    assert float(demo.stats.max_act[f]) > 0
    assert not any(GOLDEN_GATE.query.lower() in t.lower() for t in demo.stats.context_texts(f))
    assert f != features.reader and f not in features.writer_clamps
    assert control_feature(demo, GOLDEN_GATE.query) == f  # seeded: the same draw every time


def test_the_choice_is_cached_and_keyed(demo, features):
    record = json.loads((demo.folder / CACHE_FILE).read_text())
    assert ConceptFeatures.from_dict(record["features"]) == features
    assert record["key"]["sae"] == demo.sae.fingerprint()
    assert sw.concept_features(demo, progress=False) == features  # read back, no search
    hits = writer_search(demo, GOLDEN_GATE.query, GOLDEN_GATE.terms, progress=False)  # the search's hits, read back
    assert hits[0].feature == features.writer and hits[0].clamps == features.writer_clamps


def test_a_query_no_feature_reads_is_a_clear_error(demo):
    nowhere = replace(GOLDEN_GATE, name="nothing", query="zqxjv-not-in-the-corpus")
    with pytest.raises(ValueError, match="no reader"):
        sw.concept_features(demo, nowhere, progress=False)
