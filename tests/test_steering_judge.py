"""How steered text is judged: mentions (whole words), degenerate text, fluency as a log probability, success."""

from __future__ import annotations

import math

import pytest
import torch

from saewidgets.analysis.steering import generate
from saewidgets.analysis.steering_judge import (
    FluencyThreshold,
    calibrate_fluency,
    continuation_logprobs,
    degenerate,
    judge_steering,
    mentions,
    verdicts,
)

BRIDGE = ["Golden Gate", "San Francisco", "Marin"]


@pytest.mark.parametrize(
    "text",
    [
        "We drove over the Golden Gate at dawn.",
        "a GOLDEN GATE view",
        "the golden gates of the park",  # plural
        "fog over San Francisco.",
        "(Marin)",
        "Marin's hills",
    ],
)
def test_mentions_finds_terms_as_whole_words_in_any_case(text):
    assert mentions(text, BRIDGE)


@pytest.mark.parametrize(
    "text",
    [
        "the Golden Temple in India",  # first word only
        "the Golden Gateway apartments",  # the term inside a longer word
        "a goldengate.com address",
        "a marina by the sea",
        "San Franciscan weather",
        "",
    ],
)
def test_mentions_rejects_partial_words_and_other_golden_things(text):
    assert not mentions(text, BRIDGE)


def test_mentions_word_boundaries_for_short_terms():
    assert mentions("He lies about it.", ["lie"]) and mentions("trains and buses", ["train", "bus"])
    assert not mentions("I believe him.", ["lie"]) and not mentions("training day", ["train"])
    with pytest.raises(ValueError, match="No terms"):
        mentions("text", ["", "  "])


@pytest.mark.parametrize(
    "text",
    [
        "a b c d e f g h i j k",  # single letters: the model predicts them well
        "Marin Marin Marin Marin and more",  # a loop
        "the bridge the bridge the bridge the bridge the",  # few distinct words
        "too short",
        "",
    ],
)
def test_degenerate_catches_what_log_probability_misses(text):
    assert degenerate(text)


@pytest.mark.parametrize(
    "text",
    [
        "the bridge was long and the view was wide",
        " a dog. It was running in the park and I think it was happy.",
    ],
)
def test_sentences_are_not_degenerate(text):
    assert not degenerate(text)


def test_verdicts_need_a_mention_fluency_and_a_default_that_did_not_mention():
    steered = [
        "We walked across the Golden Gate and back.",  # success
        "We walked across the Golden Gate and back.",  # its default already mentioned the bridge
        "We walked across the Golden Gate and back.",  # log probability below the bar
        "We walked along a quiet beach and back.",  # no mention
        "Golden Gate Golden Gate Golden Gate Golden Gate",
    ]  # degenerate
    default = ["a park.", "the Golden Gate Bridge.", "a park.", "a park.", "a park."]
    out = verdicts(steered, default, [-2.0, -2.0, -5.0, -2.0, -0.5], BRIDGE, threshold=-3.0)
    assert out["success"] == (True, False, False, False, False)
    assert out["mention"] == (True, True, True, False, True)
    assert out["fluent"] == (True, True, False, True, False)
    assert out["default_mention"] == (False, True, False, False, False)
    assert verdicts(["x y z w"], ["a"], [math.nan], BRIDGE, -3.0)["fluent"] == (False,)


def reference_logprob(model, prompt: str, continuation: str) -> float:
    """Plain HF: the mean log probability of the continuation's tokens after the prompt's."""
    head = model.encode(prompt)
    tail = model.tokenizer.encode(continuation, add_special_tokens=False)
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        logits = model.hf(ids).logits[0].float()
    logprob = logits.log_softmax(-1)[:-1].gather(-1, ids[0, 1:, None])[:, 0]
    return float(logprob[len(head) - 1 :].mean())


def test_continuation_logprobs_equal_plain_pytorch_with_padding_and_batches(tiny):
    prompts = ["I went for a walk and saw", "Hi", "The fog rolled in over the", "Paris"]
    texts = [" the bridge", " a much longer continuation of this short prompt", " bay.", ""]
    scores = continuation_logprobs(tiny, prompts, texts, batch_size=3)
    for prompt, text, score in zip(prompts[:3], texts[:3], scores[:3].tolist()):
        assert score == pytest.approx(reference_logprob(tiny, prompt, text), abs=1e-4)
    assert math.isnan(scores[3])  # nothing to judge
    with pytest.raises(ValueError, match="one continuation per prompt"):
        continuation_logprobs(tiny, prompts, texts[:2])


def test_fluency_threshold_is_the_worst_default_less_the_margin(tiny):
    prompts = ["I went for a walk and saw", "The fog"]
    default = generate(tiny, prompts, max_new_tokens=5)
    fluency = calibrate_fluency(tiny, prompts, max_new_tokens=5, margin=0.5)
    assert fluency.default_scores == pytest.approx(continuation_logprobs(tiny, prompts, default).tolist())
    assert fluency.threshold == pytest.approx(min(fluency.default_scores) - 0.5)
    assert fluency.prompts == tuple(prompts) and fluency.to_dict()["margin"] == 0.5
    with pytest.raises(ValueError, match="margin"):
        calibrate_fluency(tiny, prompts, margin=-1.0, default=default)


def test_judge_steering_scores_each_continuation(tiny):
    prompts = ["I went for a walk and saw", "The fog"]
    default = ["a park.", "the Golden Gate."]
    steered = [" the Golden Gate and the bay and the city", " the Golden Gate and the bay and the city"]
    judged = judge_steering(tiny, prompts, default, steered, BRIDGE, FluencyThreshold(-1e9, (), (), 0.0, 5))
    assert judged.success == (True, False) and judged.rate == 0.5  # the second prompt's default mentioned it
    assert judged.to_dict()["rate"] == 0.5 and judged.mention_rate == 1.0
    strict = judge_steering(tiny, prompts, default, steered, BRIDGE, 0.0, score_all=True)  # a bar no text reaches
    assert strict.rate == 0.0 and strict.fluent == (False, False) and not any(map(math.isnan, strict.logprob))
    assert math.isnan(judged.logprob[1]) and not math.isnan(judged.logprob[0])  # no use scoring a lost cause
    with pytest.raises(ValueError, match="one default and one steered"):
        judge_steering(tiny, prompts, default[:1], steered, BRIDGE, 0.0)
