"""`writer_search`: the demo's steering search runs once per concept and SAE, and its hits read back whole.

The search itself is tested on tiny models in test_analysis (and on Gemma in the acceptance tests); here it is
replaced by a recorder, because what is under test is the cache around it: when it searches, what it keeps.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from saewidgets.analysis.output_score import SteeringCandidate
from saewidgets.demo import writer_search as ws

FAMILY = SteeringCandidate(7, 1.5, 0.75, 12, 2.5, " the bridge", 0.5, 3.0, 0.01, "Golden Gate", (7, 3))
ALONE = SteeringCandidate(7, 1.0, 0.5, 12, 2.5, " the bay", 0.5, 3.0, 0.01, "Golden Gate")


@pytest.fixture
def searches(monkeypatch):
    calls = []

    def search(model, sae, stats, query, **options):
        calls.append((query, options))
        return [FAMILY, ALONE]

    monkeypatch.setattr(ws, "steering_search", search)
    return calls


def demo(folder, weights="sae-1"):
    return SimpleNamespace(model=None, stats=None, folder=folder, sae=SimpleNamespace(fingerprint=lambda: weights))


def test_the_search_runs_once_with_the_demos_settings_and_every_hit_reads_back(tmp_path, searches):
    first = ws.writer_search(demo(tmp_path), "Golden Gate", ("Golden Gate", "bridge"), progress=False)
    again = ws.writer_search(demo(tmp_path), "Golden Gate", ["Golden Gate", "bridge"], progress=False)
    assert first == again == [FAMILY, ALONE]
    assert again[0].family == (7, 3) and again[0].clamps == {7: 1.5, 3: 1.5}
    assert len(searches) == 1, "the second caller read the cached hits"
    query, options = searches[0]
    every = ws.STEERING_SEARCH["shortlist"] + ws.STEERING_SEARCH["family"] - 1
    assert query == "Golden Gate" and options == {
        "n": every,
        "terms": ["Golden Gate", "bridge"],
        "progress": False,
        **ws.STEERING_SEARCH,
    }
    assert len(list(tmp_path.glob("steering_search-*.json"))) == 1


def test_another_concept_or_sae_searches_again_and_keeps_its_own_file(tmp_path, searches):
    ws.writer_search(demo(tmp_path), "Golden Gate", ["bridge"], progress=False)
    ws.writer_search(demo(tmp_path), "Golden Gate", ["bridge", "San Francisco"], progress=False)
    ws.writer_search(demo(tmp_path, weights="sae-2"), "Golden Gate", ["bridge"], progress=False)
    ws.writer_search(demo(tmp_path), "Eiffel Tower", ["Paris"], progress=False)
    assert len(searches) == 4
    assert len(list(tmp_path.glob("steering_search-*.json"))) == 4
    ws.writer_search(demo(tmp_path), "Golden Gate", ["bridge"], progress=False)
    assert len(searches) == 4


def test_a_change_of_the_recipes_defaults_searches_again(tmp_path, searches, monkeypatch):
    ws.writer_search(demo(tmp_path), "Golden Gate", ["bridge"], progress=False)
    monkeypatch.setattr(ws, "recipe_defaults", lambda: {"max_new_tokens": "24"})
    ws.writer_search(demo(tmp_path), "Golden Gate", ["bridge"], progress=False)
    assert len(searches) == 2


def test_a_search_where_nothing_steered_is_cached_empty(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ws, "steering_search", lambda *args, **options: calls.append(1) or [])
    assert ws.writer_search(demo(tmp_path), "zqxj", ["zqxj"], progress=False) == []
    assert ws.writer_search(demo(tmp_path), "zqxj", ["zqxj"], progress=False) == []
    assert calls == [1]


def test_recipe_defaults_name_every_defaulted_parameter_of_steering_search():
    defaults = ws.recipe_defaults()
    assert {"prompts", "max_new_tokens", "confirm_prompts", "family"} <= set(defaults)
    assert defaults["family"] == repr(ws.STEERING_SEARCH["family"])
