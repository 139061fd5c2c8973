"""Greedy decoding's in-place logits processing gives HF's scores and HF's continuations."""

from __future__ import annotations

import pytest
import torch
from transformers import MinNewTokensLengthLogitsProcessor, RepetitionPenaltyLogitsProcessor

from saewidgets.analysis import generate
from saewidgets.analysis._common import left_padded_batch
from saewidgets.models import tiny_model
from saewidgets.models.decoding import GreedySteps, end_of_sequence_ids


@pytest.mark.parametrize("penalty", [1.3, 0.8, 1.0])
def test_in_place_steps_give_hf_penalty_and_min_new_tokens_scores(penalty):
    torch.manual_seed(0)
    scores = torch.randn(5, 1000) * 4  # positive and negative scores
    input_ids = torch.randint(0, 1000, (5, 40))
    input_ids[:, :3] = 7  # repeats, as padding gives
    expected = RepetitionPenaltyLogitsProcessor(penalty)(input_ids, scores.clone()) if penalty != 1.0 else scores
    expected = MinNewTokensLengthLogitsProcessor(40, 10, [3, 999])(input_ids, expected)
    got = GreedySteps(penalty, [999, 3])(input_ids, scores.clone())
    assert torch.equal(got, expected)
    assert got[:, [3, 999]].eq(-torch.inf).all()


def test_ids_past_the_lm_head_are_left_alone_as_hf_does():
    torch.manual_seed(1)
    scores = torch.randn(2, 50)
    input_ids = torch.tensor([[1, 2, 60, 61], [49, 50, 51, 1]])  # 50.. are embedding rows the head does not have
    expected = RepetitionPenaltyLogitsProcessor(1.5)(input_ids, scores.clone())
    assert torch.equal(GreedySteps(1.5)(input_ids, scores.clone()), expected)


def test_greedy_generation_equals_hf_generate_with_its_own_processors():
    """`generate` (and so `steer`) decodes with `GreedySteps`; the continuations are HF's with ``repetition_penalty``
    and ``min_new_tokens``, including rows where the model would have ended the text early."""
    model = tiny_model("gpt2", seed=5)
    (eos,) = end_of_sequence_ids(model.hf)
    model.hf.get_output_embeddings().weight.data[eos] *= 3  # make ending early likely, so the mask matters
    prompts = ["the cat", "a long time ago there", "def add(a, b):", "x"]
    ids, attention = left_padded_batch(model, prompts, reserve=12)
    with torch.no_grad():
        free = model.hf.generate(
            input_ids=ids,
            attention_mask=attention,
            max_new_tokens=12,
            do_sample=False,
            repetition_penalty=1.3,
            pad_token_id=model.tokenizer.pad_token_id or eos,
        )
        hf = model.hf.generate(
            input_ids=ids,
            attention_mask=attention,
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
            repetition_penalty=1.3,
            pad_token_id=model.tokenizer.pad_token_id or eos,
        )
    assert (free[:, ids.shape[1] :] == eos).any(), "no row ended early: the test no longer exercises the mask"
    expected = model.tokenizer.batch_decode(hf[:, ids.shape[1] :], skip_special_tokens=True)
    assert generate(model, prompts, max_new_tokens=12, repetition_penalty=1.3) == expected
