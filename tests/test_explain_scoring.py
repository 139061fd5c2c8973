"""Scoring (delphi's detection and fuzzing), held-out examples and the local-model explainer, on tiny models and
the stub chat server."""

from __future__ import annotations

import math

import pytest
import torch
from chat_stub import KEY, ChatStub
from test_analysis import LAYER, make_sae

from saewidgets.activations import harvest
from saewidgets.analysis import feature_stats
from saewidgets.analysis.explain import (
    ChatExplainer,
    ExplainerError,
    Explanation,
    Labels,
    LocalExplainer,
    PatternExplainer,
    explain_features,
    feature_record,
)
from saewidgets.analysis.explain.prompts import (
    judge_prompt,
    parse_explanation,
    parse_judgements,
)
from saewidgets.analysis.explain.scoring import (
    NOT_ACTIVE,
    ScoringExamples,
    held_out_examples,
    score_explanations,
)
from saewidgets.models.tiny import _TRAINING_TEXT


@pytest.fixture(scope="module")
def setup(tiny_gpt2):
    sae = make_sae(tiny_gpt2.d_model)
    acts = harvest(tiny_gpt2, _TRAINING_TEXT, LAYER, progress=False)
    stats = feature_stats(tiny_gpt2, sae, acts, top_k=3, context=(3, 2), progress=False)
    return tiny_gpt2, sae, acts, stats


def test_held_out_examples_fire_in_their_band_skip_quiet_windows_and_never_repeat_a_shown_context(setup):
    model, sae, acts, stats = setup
    features = stats.density.argsort(descending=True)[:4].tolist()  # fire often: more than the stats keep
    # the statistics were made from these very activations: their windows must all be skipped
    sets = held_out_examples(model, sae, acts, stats, features, n_activating=8, n_non_activating=4)
    with torch.no_grad():
        f = sae.encode(acts.torch())
    for i, ex in sets.items():
        shown = {tuple(e["tokens"]) for e in stats.top_examples(i)}
        shown |= {tuple(e["tokens"]) for b in stats.quantile_examples(i) for e in b["examples"]}
        assert ex.activating and len(ex.activating) <= 8 and len(ex.non_activating) <= 4
        for e in ex.activating:
            assert e["acts"][e["center"]] == e["value"] > 0 and tuple(e["tokens"]) not in shown
            assert e["band"] == min(int(e["value"] / float(stats.max_act[i]) * stats.n_bands), stats.n_bands - 1)
            assert any(math.isclose(e["value"], float(v), rel_tol=1e-5) for v in f[:, i])
        for e in ex.non_activating:
            assert not any(e["acts"]) and e["band"] == NOT_ACTIVE and tuple(e["tokens"]) not in shown
    with pytest.raises(ValueError, match="empty feature list"):
        held_out_examples(model, sae, acts, stats, [])


def hand_examples() -> dict[int, ScoringExamples]:
    def ex(text, band, fire):
        tokens = text.split("|")
        acts = [1.0 if fire and t.strip() == "bridge" else 0.0 for t in tokens]
        return {
            "tokens": tokens,
            "acts": acts,
            "center": max(range(len(acts)), key=acts.__getitem__),
            "value": max(acts),
            "band": band,
        }

    on = [ex("the| old| bridge| fell", b, True) for b in (1, 1, 0, 0)]
    off = [ex("we| ate| bread", NOT_ACTIVE, False) for _ in range(4)]
    return {
        0: ScoringExamples(0, on, off, ["0.00-0.50 of max", "0.50-1.00 of max"]),
        1: ScoringExamples(1, on[:2], off[:2], ["0.00-0.50 of max", "0.50-1.00 of max"]),
    }


def test_detection_and_fuzzing_scores_and_specificity_through_the_chat_endpoint(monkeypatch):
    monkeypatch.setenv("STUB_KEY", KEY)
    labels = Labels("fp", [Explanation(i, "bridges", "llm", "chat", "m", "h", "t") for i in (0, 1)])
    with ChatStub(judge_word="bridge") as stub:  # the stub judges a text relevant when it says "bridge"
        judge = ChatExplainer("stub", base_url=stub.base_url, api_key_env="STUB_KEY", backoff=0.01)
        scores = score_explanations(judge, labels, hand_examples(), progress=False)
        assert stub.requests == 2 + 2 + 1 + 1  # batches of 5: 8 examples -> 2 requests per task, 4 -> 1
    assert scores.balanced_accuracy("detection") == 1.0 and scores.balanced_accuracy("fuzzing") == 1.0
    assert {(s["feature"], s["task"], s["n"]) for s in scores.summary()} == {
        (0, "detection", 8),
        (0, "fuzzing", 8),
        (1, "detection", 4),
        (1, "fuzzing", 4),
    }
    bars = scores.specificity("detection")
    assert [b["label"] for b in bars] == ["not active", "0.00-0.50 of max", "0.50-1.00 of max"]
    assert [b["relevant"] for b in bars] == [0.0, 1.0, 1.0] and [b["n"] for b in bars] == [6, 2, 4]
    fig = scores.specificity_figure()
    assert list(fig.data[0].x) == [b["label"] for b in bars]
    with pytest.raises(KeyError, match="no explanation"):
        score_explanations(judge, Labels("fp"), hand_examples(), progress=False)
    with pytest.raises(TypeError, match="needs a language model"):
        score_explanations(PatternExplainer(), labels, hand_examples(), progress=False)


def test_unusable_judgements_count_as_wrong():
    assert parse_judgements("Sure! [1, 0, 1]", 3, completion=False) == [1, 0, 1]
    assert parse_judgements("[1, 0]", 3, completion=False) == [None, None, None]
    assert parse_judgements("no idea", 2, completion=False) == [None, None]
    assert parse_judgements(" Yes, it does", 1, completion=True) == [1]
    assert parse_judgements(" maybe", 1, completion=True) == [None]
    assert parse_explanation('hmm\n[EXPLANATION]: "the word bridge"\n', completion=False) == "the word bridge"
    assert parse_explanation("\n the word bridge\nFeature 3", completion=True) == "the word bridge"
    assert "Text: a b\nHas the feature:" in judge_prompt("detection", "x", ["a b"]).completion


def test_local_model_explains_and_judges_through_the_same_interface(setup, tmp_path):
    model, _, _, stats = setup
    local = LocalExplainer(model, max_new_tokens=6)
    assert not local.chat  # the tiny model's tokenizer has no chat template: completion prompts
    features = [i for i in range(stats.n_features) if stats.max_act[i] > 0][:2]
    record_prompt = local.prompt(feature_record(stats, features[0]))
    assert record_prompt.completion.endswith("Description:") and "<<" in record_prompt.completion
    try:
        labels = explain_features(stats, local, features=features, cache_dir=tmp_path, progress=False)
    except ExplainerError as err:  # a random model may well say nothing at all; that must be said clearly
        assert "no explanation" in str(err)
    else:
        assert {(e.kind, e.explainer, e.model) for e in labels} == {("llm", "local", model.name)}
        assert (
            explain_features(stats, local, features=features, cache_dir=tmp_path, progress=False)[features[0]].created
            == labels[features[0]].created
        )
    verdicts = local.judge("detection", "anything", ["the bridge", "some bread"])
    assert len(verdicts) == 2 and set(verdicts) <= {0, 1, None}
    assert local.complete(record_prompt, 4) == local.complete(record_prompt, 4)  # greedy: reproducible
    assert local.estimate([]).n_requests == 0
