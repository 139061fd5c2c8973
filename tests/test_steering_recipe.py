"""The steering recipe the README shows is the one the benchmark measures and the demo runs.

The README quickstart's two steering lines are parsed; the benchmark's ``recipe`` method is run with its search
and clamp replaced by recorders, so the test fails if either side changes without the other.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

from benchmarks import bench_steering
from saewidgets.analysis import (
    CONCEPTS,
    DEFAULT_CONFIRM,
    DEFAULT_FAMILY,
    DEFAULT_PROMOTERS,
    GOLDEN_GATE,
    steering_search,
)
from saewidgets.demo.writer_search import STEERING_SEARCH

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_calls() -> dict[str, ast.Call]:
    """The quickstart block's ``sw.steering_search(...)`` and ``sw.steer(...)`` calls, by function name."""
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert block, "README.md has no Quickstart python block"
    calls = {}
    names = ("steering_search", "steer")
    for node in ast.walk(ast.parse(block.group(1))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names:
            assert node.func.attr not in calls, f"the quickstart calls {node.func.attr} twice"
            calls[node.func.attr] = node
    assert set(calls) == {"steering_search", "steer"}, calls
    return calls


def test_readme_search_calibrates_over_the_benchmarks_recipe_multiples():
    search = quickstart_calls()["steering_search"]
    options = {k.arg: k.value for k in search.keywords}
    assert tuple(float(m) for m in ast.literal_eval(options["multiples"])) == bench_steering.RECIPE_MULTIPLES
    assert set(options) == {"terms", "multiples"}, "the benchmark's recipe passes only terms and multiples"


def test_readme_steers_with_what_the_search_chose():
    steer = quickstart_calls()["steer"]
    assert ast.unparse(steer.args[3]) == "hit.clamps", "steer at the strength the search chose: hit.clamps"


def test_benchmark_recipe_searches_with_those_multiples_and_clamps_at_the_chosen_strength(monkeypatch):
    seen = {}

    def search(model, art, concept, **options):
        seen["options"] = options
        return {"feature": 7, "multiple": 1.5, "hit_rate": 0.5, "family": []}

    def clamped(model, art, concept, hit, multiple):
        seen["clamp"] = (hit["feature"], multiple)
        return {"rate": 0.0, "setting": "", "judgement": None}

    monkeypatch.setattr(bench_steering, "search", search)
    monkeypatch.setattr(bench_steering, "clamped", clamped)
    bench_steering.recipe(None, None, GOLDEN_GATE)
    assert seen == {"options": {"multiples": bench_steering.RECIPE_MULTIPLES}, "clamp": (7, 1.5)}


def test_the_demo_and_tutorials_writer_search_is_the_recipe():
    assert tuple(STEERING_SEARCH["multiples"]) == bench_steering.RECIPE_MULTIPLES
    defaults = {k: p.default for k, p in inspect.signature(steering_search).parameters.items()}
    others = {k: v for k, v in STEERING_SEARCH.items() if k != "multiples"}
    assert others == {k: defaults[k] for k in others}, (
        "the demo's search differs from the README's in more than its multiples"
    )
    assert STEERING_SEARCH["promoters"] == DEFAULT_PROMOTERS > 0
    assert STEERING_SEARCH["confirm"] == DEFAULT_CONFIRM > 0
    assert STEERING_SEARCH["family"] == DEFAULT_FAMILY > 1


def test_benchmark_searches_are_keyed_by_the_promoters_they_add_and_the_candidates_they_confirm(monkeypatch):
    keys = []
    monkeypatch.setattr(bench_steering, "_cached", lambda name, key, compute: keys.append(key) or {})
    art = SimpleNamespace(sae=SimpleNamespace(fingerprint=lambda: "sae"))
    bench_steering.search(None, art, GOLDEN_GATE, multiples=(1.0,))
    bench_steering.search(None, art, GOLDEN_GATE, multiples=(1.0,), promoters=DEFAULT_PROMOTERS, family=DEFAULT_FAMILY)
    bench_steering.search(None, art, GOLDEN_GATE, multiples=(1.0,), family=1)
    bench_steering.search(None, art, GOLDEN_GATE, multiples=(1.0,), confirm=0, family=1)
    bench_steering.search(None, art, GOLDEN_GATE, multiples=(1.0,), promoters=0, confirm=0, family=1)
    base = {"concept": GOLDEN_GATE.name, "sae": "sae", "multiples": (1.0,)}
    # the default's results are not those of a search without promoters, confirmation or families (cached before
    # they existed, keyed so)
    single = {**base, "promoters": DEFAULT_PROMOTERS, "confirm": DEFAULT_CONFIRM}
    default = {**single, "family": DEFAULT_FAMILY}
    assert DEFAULT_FAMILY > 1
    assert keys == [default] * 2 + [single, {**base, "promoters": DEFAULT_PROMOTERS}, base]


def test_a_search_for_other_terms_than_the_concepts_is_cached_apart(monkeypatch):
    keys = []
    monkeypatch.setattr(bench_steering, "_cached", lambda name, key, compute: keys.append(key) or {})
    art = SimpleNamespace(sae=SimpleNamespace(fingerprint=lambda: "sae"))
    bench_steering.search(None, art, GOLDEN_GATE, multiples=(1.0,))
    bench_steering.search(None, art, GOLDEN_GATE, terms=GOLDEN_GATE.terms, multiples=(1.0,))
    bench_steering.search(None, art, GOLDEN_GATE, terms=("Golden Gate",), multiples=(1.0,))
    assert keys[0] == keys[1] and "terms" not in keys[0]
    assert keys[2] == {**keys[0], "terms": ["Golden Gate"]}


def test_names_landmark_counts_hits_that_name_the_landmark_itself_not_its_surroundings():
    judgement = {
        "success": [True, True, False, True],
        "steered": ["the Golden Gate Bridge", "San Francisco at night", "the Golden Gate again", "golden gate park"],
    }
    # a hit naming only San Francisco counts for the bridge by its terms, not here; a failed one never counts
    assert bench_steering.names_landmark(GOLDEN_GATE, judgement) == 0.5
    assert bench_steering.names_landmark(GOLDEN_GATE, None) is None
    music = next(c for c in CONCEPTS if c.name == "music")
    assert bench_steering.names_landmark(music, judgement) is None
