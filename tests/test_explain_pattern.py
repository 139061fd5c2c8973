"""Pattern labels, the label store and search_labels, on hand-made statistics whose contexts the test chooses."""

from __future__ import annotations

import json

import pytest
from explain_helpers import make_effects, make_stats

from saewidgets.analysis.explain import (
    Explanation,
    Labels,
    PatternExplainer,
    explain_features,
    search_labels,
)
from saewidgets.analysis.explain.run import journal_path

GATE = [
    ["The", " famous", " Golden", " Gate", " Bridge"],
    ["across", " the", " Golden", " Gate", "."],
    ["of", " a", " Golden", " gate", " in"],
    ["I", " saw", " Golden", " Gate", " Park"],
]
VARIED = [
    ["a", " long", " steel", " bridge", "."],
    ["the", " bridge", " was", " painted", " red"],
    ["we", " crossed", " the", " river", " bridge"],
    ["old", " bridge", " over", " water", "s"],
]
MIXED = [
    ["x", "y", "z", " one", "."],
    ["p", "q", "r", " two", "."],
    ["s", "t", "u", " three", "."],
    ["k", "l", "m", " four", "."],
]
STATS = make_stats([GATE, VARIED, MIXED, []])
EFFECTS = make_effects(
    [[" Bridge", " bridges", " the"], [" San", " river", " x"], [" five", "\n", " six"], [" a", " b", " c"]]
)


def test_pattern_label_names_the_token_the_n_gram_before_it_and_what_it_promotes():
    labels = explain_features(STATS, PatternExplainer(), logit_effects=EFFECTS, progress=False)
    assert labels[0].text == "' Gate' after ' Golden' -> promotes ' Bridge', ' bridges'"
    # varied firing tokens: the word their contexts share is named instead
    assert labels[1].text.startswith("varied tokens (") and "in contexts with 'bridge'" in labels[1].text
    assert "contexts with" not in labels[2].text  # nothing shared: no invented common word
    assert labels[3].text == "never fires (dead feature)"
    assert {e.kind for e in labels} == {"pattern"} and len(labels) == 4


def test_pattern_label_names_the_n_gram_after_the_firing_token_too():
    golden = [
        ["on", "x", " the", " Golden", " Gate"],
        ["to", "y", " the", " Golden", " Gate"],
        ["a", "z", " the", " golden", " Gate"],
        ["b", "w", " a", " Golden", " Age"],
    ]
    label = explain_features(make_stats([golden]), PatternExplainer(), progress=False)[0].text
    assert label == "' Golden' after ' the', before ' Gate'"


def test_every_explanation_records_how_it_was_made():
    e = explain_features(STATS, PatternExplainer(), features=[0], progress=False)[0]
    assert (e.kind, e.explainer, e.model) == ("pattern", "pattern", "")
    assert len(e.prompt_hash) == 16 and e.created.endswith("+00:00")
    assert (
        e.prompt_hash
        != explain_features(STATS, PatternExplainer(min_share=0.9), features=[0], progress=False)[0].prompt_hash
    )


def test_empty_feature_list_is_refused_and_bad_indices_name_the_range():
    with pytest.raises(ValueError, match="empty feature list"):
        explain_features(STATS, PatternExplainer(), features=[], progress=False)
    with pytest.raises(IndexError, match="out of range"):
        explain_features(STATS, PatternExplainer(), features=[9], progress=False)


def test_labels_are_cached_per_sae_fingerprint_and_reused(tmp_path):
    first = explain_features(STATS, PatternExplainer(), cache_dir=tmp_path, progress=False)
    path = journal_path(tmp_path, STATS.fingerprint, PatternExplainer())
    assert path.parent.name == STATS.fingerprint and len(path.read_text().splitlines()) == 4
    again = explain_features(STATS, PatternExplainer(), cache_dir=tmp_path, progress=False)
    assert [e.created for e in again] == [e.created for e in first]  # read back, not made again
    other = make_stats([GATE], fingerprint="other")
    assert explain_features(other, PatternExplainer(), cache_dir=tmp_path, progress=False)[0].created


def test_labels_save_load_round_trip_and_refuse_another_sae(tmp_path):
    labels = explain_features(STATS, PatternExplainer(), logit_effects=EFFECTS, progress=False)
    path = labels.save(tmp_path / "labels.json")
    back = Labels.load(path)
    assert list(back) == list(labels) and back.fingerprint == STATS.fingerprint

    class OtherSAE:
        def fingerprint(self):
            return "not-abc"

    with pytest.raises(ValueError, match="describe SAE abc123"):
        Labels.load(path, sae=OtherSAE())
    path.write_text(path.read_text()[:50])
    with pytest.raises(ValueError, match="unreadable"):
        Labels.load(path)


def test_llm_labels_replace_pattern_labels_and_views_see_the_kind():
    pattern = explain_features(STATS, PatternExplainer(), progress=False)
    llm = Labels(STATS.fingerprint, [Explanation(0, "The Golden Gate Bridge", "llm", "chat", "m", "h", "t")])
    merged = pattern.merged(llm)
    assert merged[0].text == "The Golden Gate Bridge" and merged[1].kind == "pattern"
    assert pattern.merged(llm).merged(pattern)[0].kind == "llm"  # a pattern label never replaces an LLM one
    views = json.loads(json.dumps(merged.for_views()))
    assert views["0"] == {"text": "The Golden Gate Bridge", "kind": "llm"} and views["1"]["kind"] == "pattern"


def test_search_labels_finds_features_by_label():
    labels = explain_features(STATS, PatternExplainer(), logit_effects=EFFECTS, progress=False)
    assert [h["feature"] for h in search_labels(labels, "gate")] == [0]
    assert {h["feature"] for h in search_labels(labels, "Bridge")} == {0, 1}
    assert search_labels(labels, "golden gate")[0]["feature"] == 0
    assert search_labels(labels, "zeppelin") == []
    with pytest.raises(ValueError, match="at least one word"):
        search_labels(labels, "  ")


TIED = [  # 'salt' and 'water' are each in every context: a tie, broken by which the contexts name first
    ["a", " salt", " water", " in", "."],
    ["b", " water", " salt", " on", "."],
    ["c", " salt", " water", " at", "."],
    ["d", " water", " salt", " by", "."],
]


def test_pattern_label_breaks_a_tie_between_shared_words_the_same_way_in_every_process():
    """The shared word once came from a ``set``, whose order follows Python's per-process string hashing: the
    same statistics got 'salt' in one process and 'water' in another (121 of the quick demo's 2,048 labels
    differed between two runs). Each process here gets a different ``PYTHONHASHSEED``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "from explain_helpers import make_stats\n"
        "from saewidgets.analysis.explain import PatternExplainer, explain_features\n"
        "from test_explain_pattern import TIED\n"
        "print(explain_features(make_stats([TIED]), PatternExplainer(), progress=False)[0].text)\n"
    )
    here = Path(__file__).parent
    texts = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(here)},
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in range(6)
    }
    assert texts == {"varied tokens (' in', ' on', ' at') in contexts with 'salt'"}
