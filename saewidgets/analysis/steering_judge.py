"""Judging steered text: did it mention the concept, is it still language, and was that the intervention's doing?

A steered continuation counts as a success when three things hold (`judge_steering`):

1. it **mentions** one of the concept's terms (`mentions`: whole words, any case, plurals count), and
2. it is **fluent**: its mean log probability per token under the *unsteered* model, given the prompt
   (`continuation_logprobs`), is at least a threshold calibrated on the unsteered model's own continuations of
   selection prompts (`calibrate_fluency`), and it does not loop (`degenerate`), and
3. the **default** continuation of the same prompt does not mention the concept (else the prompt did the steering).

Why a log probability: a word-count check ("at least 40% distinct words") accepts "a b c d e f g" and rejects
nothing that is merely a list of capitalised names. The unsteered model is a fair reader of its own language:
gibberish, fragments and word salad score several nats per token below its sentences, while a fluent sentence on
an unexpected topic loses little after its first words. A model reading text that repeats itself finds the
repeats ever more likely, so loops are caught by `degenerate` instead.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..models.handle import ModelHandle
from ._common import prompt_ids
from ._trace import next_token_logprobs
from .steering_sets import SELECTION_PROMPTS

#: Continuations scored per forward pass (each holds a ``[rows, tokens, vocab]`` logits tensor while it runs).
LOGPROB_BATCH = 8
#: `calibrate_fluency`: the threshold is the lowest score of the unsteered model's own continuations, less this
#: many nats per token. Measured on Gemma 3 270M (24 greedy tokens after "I went for a walk and saw"; its own
#: continuations of the selection prompts score -1.2 to -1.9): a sentence about the Golden Gate Bridge -1.97, one
#: about a dog -2.21, "the Golden Temple in India, which is a famous place of worship." -2.94, a "Marin Marin
#: Marin" loop -4.6, capitalised fragments ("SFSFing The Baylings' new film") -7.8, bridge word lists -9.6.
FLUENCY_MARGIN = 1.5


def as_terms(terms: str | Sequence[str]) -> list[str]:
    """``terms`` as a non-empty list of stripped strings (one string is one term)."""
    terms = [terms] if isinstance(terms, str) else list(terms)
    terms = [t.strip() for t in terms if t and t.strip()]
    if not terms:
        raise ValueError("No terms to score: pass what the steered text should say, e.g. ['Golden Gate', 'bridge'].")
    return terms


def mentions(text: str, terms: str | Sequence[str]) -> bool:
    """Whether ``text`` mentions one of ``terms``: case-insensitive, as whole words, plurals count.

    "Golden Gate" matches "the golden gate" and "Golden Gates", not "Golden Gateway"; "lie" matches "lies",
    not "believe"; "train" matches "trains", not "training".
    """
    pattern = "|".join(re.escape(t) for t in as_terms(terms))
    return re.search(rf"(?<!\w)(?:{pattern})(?:s|es)?(?!\w)", text, re.IGNORECASE) is not None


def degenerate(text: str) -> bool:
    """Whether a continuation has stopped being language in ways log probability misses: fewer than 4 words, one
    word 4 times in a row or under 40% distinct words (a loop: repeats grow ever more likely to the model), or
    mostly one-character words (the model predicts "a b c d e f" all too well)."""
    words = text.split()
    if len(words) < 4:
        return True
    looping = any(len(set(words[i : i + 4])) == 1 for i in range(len(words) - 3))
    letters = sum(len(re.sub(r"\W", "", w)) > 1 for w in words) / len(words)
    return looping or len(set(words)) / len(words) < 0.4 or letters < 0.5


@torch.no_grad()
def continuation_logprobs(
    model: ModelHandle, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = LOGPROB_BATCH
) -> torch.Tensor:
    """Mean log probability per token of each continuation under ``model`` (unedited), given its prompt: ``[n]``.

    The continuation is tokenized on its own, after the prompt's tokens (BOS first when the model uses one). An
    empty continuation scores NaN (no token to judge).
    """
    prompts, continuations = list(prompts), list(continuations)
    if len(prompts) != len(continuations):
        raise ValueError(
            f"continuation_logprobs() got {len(prompts)} prompts but {len(continuations)} "
            "continuations: pass one continuation per prompt."
        )
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    scores = torch.full((len(prompts),), math.nan)
    for start in range(0, len(prompts), batch_size):
        rows, spans = [], []
        for prompt, text in zip(prompts[start : start + batch_size], continuations[start : start + batch_size]):
            head = prompt_ids(model, prompt)[0].tolist()
            tail = model.tokenizer.encode(text, add_special_tokens=False) if text else []
            rows.append(head + tail)
            spans.append(len(tail))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r), 1
        logprob = next_token_logprobs(model, ids, mask)
        for i, n in enumerate(spans):
            if n:
                scores[start + i] = logprob[i, width - 1 - n :].mean()
    return scores


@dataclass(frozen=True)
class FluencyThreshold:
    """The fluency bar: mean log probability per token at or above ``threshold`` counts as fluent.

    Attributes:
        threshold: nats per token.
        default_scores: the scores of the unsteered continuations it was calibrated on.
        prompts: the prompts those continuations continue (selection prompts).
        margin: nats per token below the lowest of them.
        max_new_tokens: their length in tokens.
    """

    threshold: float
    default_scores: tuple[float, ...]
    prompts: tuple[str, ...]
    margin: float
    max_new_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_fluency(
    model: ModelHandle,
    prompts: Sequence[str] = SELECTION_PROMPTS,
    *,
    max_new_tokens: int = 24,
    margin: float = FLUENCY_MARGIN,
    default: Sequence[str] | None = None,
) -> FluencyThreshold:
    """The fluency threshold of ``model``: the lowest score (`continuation_logprobs`) among its own greedy
    continuations of ``prompts``, less ``margin`` nats per token.

    Calibrate on selection prompts only (the default), never on the prompts you judge. ``default`` passes those
    continuations if you already have them (as `steer` returns them), else they are generated here, as `steer`
    would (greedy, `DEFAULT_REPETITION_PENALTY`).
    """
    from .steering import generate

    prompts = list(prompts)
    if not prompts:
        raise ValueError("calibrate_fluency() needs at least one prompt.")
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a non-negative number of nats, got {margin}.")
    texts = list(default) if default is not None else generate(model, prompts, max_new_tokens=max_new_tokens)
    scores = continuation_logprobs(model, prompts, texts)
    finite = scores[torch.isfinite(scores)]
    if not len(finite):
        raise ValueError("None of the default continuations has a token to score: generate at least one token.")
    return FluencyThreshold(
        float(finite.min()) - margin, tuple(scores.tolist()), tuple(prompts), float(margin), int(max_new_tokens)
    )


_DEFAULT_FLUENCY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {max_new_tokens: threshold}


def default_fluency(model: ModelHandle, max_new_tokens: int = 24) -> FluencyThreshold:
    """`calibrate_fluency` on `SELECTION_PROMPTS` for ``model`` and continuations of ``max_new_tokens``, computed
    once per model and length in this process (it generates 14 continuations)."""
    known = _DEFAULT_FLUENCY.setdefault(model, {})
    if max_new_tokens not in known:
        known[max_new_tokens] = calibrate_fluency(model, SELECTION_PROMPTS, max_new_tokens=max_new_tokens)
    return known[max_new_tokens]


@dataclass(frozen=True)
class SteeringJudgement:
    """Per-continuation verdicts of one steering run (see the module docstring); all tuples align with ``prompts``.

    ``rate`` is the fraction of prompts where steering succeeded: a prompt whose default continuation already
    mentions the concept counts as a failure, not as left out.
    """

    prompts: tuple[str, ...]
    default: tuple[str, ...]
    steered: tuple[str, ...]
    terms: tuple[str, ...]
    logprob: tuple[float, ...]
    mention: tuple[bool, ...]
    fluent: tuple[bool, ...]
    default_mention: tuple[bool, ...]
    success: tuple[bool, ...]
    threshold: float

    @property
    def rate(self) -> float:
        return sum(self.success) / len(self.success) if self.success else math.nan

    @property
    def mention_rate(self) -> float:
        return sum(self.mention) / len(self.mention) if self.mention else math.nan

    @property
    def fluent_rate(self) -> float:
        return sum(self.fluent) / len(self.fluent) if self.fluent else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate, "mention_rate": self.mention_rate, "fluent_rate": self.fluent_rate}


def verdicts(
    steered: Sequence[str], default: Sequence[str], logprob: Sequence[float], terms: Sequence[str], threshold: float
) -> dict[str, tuple[bool, ...]]:
    """The three tests and success per continuation, from already computed ``logprob`` (no model needed)."""
    mention = tuple(mentions(t, terms) for t in steered)
    fluent = tuple(math.isfinite(lp) and lp >= threshold and not degenerate(t) for t, lp in zip(steered, logprob))
    default_mention = tuple(mentions(t, terms) for t in default)
    success = tuple(m and f and not d for m, f, d in zip(mention, fluent, default_mention))
    return {"mention": mention, "fluent": fluent, "default_mention": default_mention, "success": success}


def judge_steering(
    model: ModelHandle,
    prompts: Sequence[str],
    default: Sequence[str],
    steered: Sequence[str],
    terms: str | Sequence[str],
    fluency: FluencyThreshold | float,
    score_all: bool = False,
) -> SteeringJudgement:
    """Judge steered continuations of ``prompts`` against their ``default`` ones (e.g. a `SteeringResult`'s).

    ``fluency`` is a `calibrate_fluency` result (or a threshold in nats per token). Scoring fluency costs a forward
    pass per continuation, so only the continuations that could still succeed (they mention a term, their default
    does not) are scored unless ``score_all``; the others get ``logprob`` NaN and count as not fluent.
    """
    prompts, default, steered = list(prompts), list(default), list(steered)
    if not len(prompts) == len(default) == len(steered):
        raise ValueError(
            f"judge_steering() needs one default and one steered continuation per prompt, got "
            f"{len(prompts)} prompts, {len(default)} default and {len(steered)} steered."
        )
    terms = as_terms(terms)
    threshold = fluency.threshold if isinstance(fluency, FluencyThreshold) else float(fluency)
    logprob = [math.nan] * len(prompts)
    scored = [
        i for i in range(len(prompts)) if score_all or (mentions(steered[i], terms) and not mentions(default[i], terms))
    ]
    if scored:
        values = continuation_logprobs(model, [prompts[i] for i in scored], [steered[i] for i in scored]).tolist()
        for i, value in zip(scored, values):
            logprob[i] = value
    return SteeringJudgement(
        tuple(prompts),
        tuple(default),
        tuple(steered),
        tuple(terms),
        tuple(logprob),
        threshold=threshold,
        **verdicts(steered, default, logprob, terms, threshold),
    )
