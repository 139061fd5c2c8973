"""The chat-endpoint explainer against a real HTTP server on 127.0.0.1 (tests/chat_stub.py): the protocol,
concurrency, retries, resuming, and a clear error with nothing written for each way a run can fail."""

from __future__ import annotations

import socket

import pytest
from chat_stub import KEY, ChatStub
from explain_helpers import make_stats
from test_explain_pattern import GATE, MIXED, VARIED

from saewidgets.analysis.explain import (
    ExplainerError,
    PatternExplainer,
    cached_labels,
    estimate_cost,
    explain_features,
)
from saewidgets.analysis.explain.chat import ChatExplainer
from saewidgets.analysis.explain.run import journal_path, read_journal

STATS = make_stats([GATE, VARIED, MIXED, GATE, VARIED, MIXED, GATE, VARIED])


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("STUB_KEY", KEY)
    return "STUB_KEY"


def explainer(stub, key, **kw):
    return ChatExplainer("stub-model", base_url=stub.base_url, api_key_env=key, backoff=0.01, **kw)


def test_every_feature_is_explained_through_the_endpoint_with_bounded_concurrency(key, tmp_path):
    with ChatStub(delay=0.05) as stub:
        labels = explain_features(STATS, explainer(stub, key, max_concurrency=3), cache_dir=tmp_path, progress=False)
    assert len(labels) == 8 and stub.requests == 8
    assert labels[0].text == "tokens like Gate" and labels[2].text == "tokens like one"
    assert {(e.kind, e.explainer, e.model) for e in labels} == {("llm", "chat", "stub-model")}
    assert 1 < stub.max_in_flight <= 3
    assert len({e.prompt_hash for e in labels}) == 3  # one per distinct set of contexts


def test_server_errors_are_retried_with_backoff(key):
    with ChatStub() as stub:
        stub.fail_next = 3
        labels = explain_features(STATS, explainer(stub, key, max_concurrency=1), features=[0, 1], progress=False)
        assert [e.text for e in labels] == ["tokens like Gate", "tokens like bridge"] and stub.requests == 5
        stub.fail_next = 10
        with pytest.raises(ExplainerError, match=r"kept failing \(HTTP 500.*after 3 tries"):
            explain_features(STATS, explainer(stub, key, max_retries=2), features=[0], progress=False)


def test_wrong_key_is_a_clear_error_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("STUB_KEY", "sk-wrong")
    with ChatStub() as stub:
        with pytest.raises(ExplainerError, match=r"refused the API key from \$STUB_KEY \(HTTP 401\)"):
            explain_features(STATS, explainer(stub, "STUB_KEY"), cache_dir=tmp_path, progress=False)
        assert stub.requests <= 8  # not retried: at most the requests already in flight
    assert not any(tmp_path.rglob("*.jsonl"))


def test_missing_key_variable_is_named_before_anything_is_sent(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match=r"\$NO_SUCH_KEY, which is not set"):
        ChatExplainer("m", base_url="http://127.0.0.1:9/v1", api_key_env="NO_SUCH_KEY")


def test_unreachable_endpoint_is_a_clear_error_and_writes_nothing(key, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = ChatExplainer("m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=key, max_retries=1, backoff=0.01)
    with pytest.raises(ExplainerError, match=rf"Could not reach http://127.0.0.1:{port}/v1"):
        explain_features(STATS, closed, features=[0], cache_dir=tmp_path, progress=False)
    assert not any(tmp_path.rglob("*.jsonl"))


@pytest.mark.parametrize("mode", ["not-json", "null-content"])
def test_a_reply_that_is_not_text_is_a_clear_error_and_writes_nothing(key, tmp_path, mode):
    with ChatStub() as stub:
        stub.mode = mode
        with pytest.raises(ExplainerError, match="not text"):
            explain_features(
                STATS, explainer(stub, key, max_retries=1), features=[0, 1], cache_dir=tmp_path, progress=False
            )
    assert not any(tmp_path.rglob("*.jsonl"))


def test_a_run_that_dies_half_way_keeps_what_it_finished_and_resumes(key, tmp_path):
    with ChatStub() as stub:
        stub.break_after = 3
        with pytest.raises(ExplainerError, match="rejected the request.*context length exceeded"):
            explain_features(STATS, explainer(stub, key, max_concurrency=1), cache_dir=tmp_path, progress=False)
        path = journal_path(tmp_path, STATS.fingerprint, explainer(stub, key))
        assert sorted(read_journal(path)) == [0, 1, 2]
        with open(path, "a") as f:  # a kill in the middle of writing a line
            f.write('{"feature": 3, "text": "half')
        stub.break_after, before = None, stub.requests
        labels = explain_features(STATS, explainer(stub, key, max_concurrency=1), cache_dir=tmp_path, progress=False)
        assert len(labels) == 8 and stub.requests - before == 5  # only the missing features were asked for
    # what views load: every cached run merged, the LLM's explanations over the pattern labels
    explain_features(STATS, PatternExplainer(), cache_dir=tmp_path, progress=False)
    views = cached_labels(tmp_path, STATS.fingerprint)
    assert len(views) == 8 and {e.kind for e in views} == {"llm"} and views[0].text == "tokens like Gate"
    assert len(cached_labels(tmp_path, "unknown-sae")) == 0


def test_cost_is_estimated_before_the_run_and_a_budget_is_enforced(key):
    with ChatStub() as stub:
        chat = explainer(stub, key)
        cost = estimate_cost(STATS, chat)
        assert cost.n_requests == 8 and cost.prompt_tokens > 8 * 100 and cost.max_completion_tokens == 8 * 200
        with pytest.raises(ValueError, match="over max_tokens=1,000"):
            explain_features(STATS, chat, max_tokens=1000, progress=False)
        assert stub.requests == 0
