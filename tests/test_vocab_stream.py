"""Log probabilities streamed over the vocabulary (`saewidgets.models.vocab`) equal those from the whole logits, and so
do the unembedding's moments and rows."""

from __future__ import annotations

import pytest
import torch

from saewidgets.analysis import _trace
from saewidgets.models import tiny_model, vocab
from saewidgets.models.q8_embedding import Q8Embedding, Q8Unembedding


def _plain(monkeypatch):
    """Force the whole-logits path (as for a remote model)."""
    monkeypatch.setattr(_trace, "lm_head_site", lambda model: None)


def _inputs(model):
    texts = ["The Golden Gate Bridge is in San Francisco.", "I went for a walk"]
    rows = [model.encode(t) for t in texts]
    width = max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r), 1
    return ids, mask


@pytest.mark.parametrize("layout,softcap", [("gpt2", None), ("gemma", None), ("gemma", 3.0)])
def test_streamed_log_probabilities_equal_the_whole_logits(monkeypatch, layout, softcap):
    model = tiny_model(layout)
    model.hf.config.final_logit_softcapping = softcap
    assert vocab.lm_head_site(model) is not None
    monkeypatch.setattr(vocab, "VOCAB_BLOCK", 37)  # several blocks, the last one partial
    ids, mask = _inputs(model)
    torch.manual_seed(0)
    delta = torch.randn(2 * len(ids), ids.shape[1], model.d_model)
    token_ids = [3, 40, 41, 200, len(model.unembed) - 1]  # in different blocks

    streamed = (
        _trace.token_logprob_with_delta(model, ids, mask, 1, delta, token_ids),
        _trace.next_token_logprobs_with_delta(model, ids, mask, 1, delta),
        _trace.next_token_logprobs(model, ids, mask),
    )
    with torch.no_grad():  # the model's own logits (soft-capped by the model where configured), unpadded row
        logits = model.hf(input_ids=ids[:1]).logits.float()
    direct = logits[:, :-1].log_softmax(-1).gather(-1, ids[:1, 1:, None])[..., 0]
    torch.testing.assert_close(streamed[2][:1], direct, rtol=0, atol=1e-5)
    assert not any(s.requires_grad for s in streamed)
    if softcap:
        assert logits.abs().max() <= softcap

    _plain(monkeypatch)
    plain = (
        _trace.token_logprob_with_delta(model, ids, mask, 1, delta, token_ids),
        _trace.next_token_logprobs_with_delta(model, ids, mask, 1, delta),
        _trace.next_token_logprobs(model, ids, mask),
    )
    for s, p in zip(streamed, plain):
        assert s.shape == p.shape
        torch.testing.assert_close(s, p, rtol=0, atol=1e-5)


def test_streaming_is_refused_where_logits_are_rescaled_or_the_model_is_remote():
    model = tiny_model("gemma")
    model.hf.config.logit_scale = 0.5
    assert vocab.lm_head_site(model) is None
    model.hf.config.logit_scale = None
    model.remote = "local"
    try:
        assert vocab.lm_head_site(model) is None
    finally:
        model.remote = False


def _q8_head(vocab_rows: int, d: int) -> tuple[torch.Tensor, Q8Unembedding]:
    """A compact head and its float32 weight (random codes, float16 scales over three decades)."""
    gen = torch.Generator().manual_seed(2)
    codes = torch.randint(-127, 128, (vocab_rows, d), generator=gen, dtype=torch.int8)
    scales = (torch.rand(vocab_rows, d // 32, generator=gen) * torch.logspace(-3, 0, vocab_rows)[:, None]).half()
    head = Q8Unembedding(Q8Embedding(codes, scales.view(torch.int16)))
    return head.decoded_weight(), head


@pytest.mark.parametrize("kind", ["linear", "q8"])
def test_unembedding_moments_and_rows_equal_those_of_the_whole_weight(monkeypatch, kind):
    monkeypatch.setattr(vocab, "VOCAB_BLOCK", 96)  # several blocks, the last one partial
    if kind == "q8":
        monkeypatch.setattr("saewidgets.models.q8_embedding.BLOCK_ROWS", 96)
        weight, head = _q8_head(1000, 64)
    else:
        weight = torch.randn(1000, 64, generator=torch.Generator().manual_seed(3)) + 5.0  # a large common mean
        head = torch.nn.Linear(64, 1000, bias=False)
        head.weight.data = weight.clone()
    mean, cov = vocab.unembed_moments(head)
    exact = weight.double()
    expected = torch.cov(exact.T, correction=0)  # each block's product is float32: rounding of its scale, no more
    torch.testing.assert_close(mean, exact.mean(0), rtol=1e-6, atol=1e-6 * float(exact.abs().max()))
    torch.testing.assert_close(cov, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    ids = [999, 0, 7, 7]
    assert torch.equal(vocab.unembed_rows(head, ids), weight[ids])
    v = torch.randn(5, 64, dtype=torch.float64)  # what the moments are for: each direction's logit mean and variance
    logits = v @ exact.T
    torch.testing.assert_close(v @ mean, logits.mean(1), rtol=1e-5, atol=1e-5 * float(logits.abs().max()))
    torch.testing.assert_close(((v @ cov) * v).sum(1), logits.var(1, correction=0), rtol=1e-5, atol=0)
