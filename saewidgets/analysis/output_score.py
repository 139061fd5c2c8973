"""Which features steer toward a concept: rank candidates by what clamping them does to the model's output.

A feature can be about a concept in two ways. An *input* feature fires on the concept's own tokens (" Gate" in
"Golden Gate"). Clamping it tells the model "this token is Gate", which mostly breaks the text. An *output* feature
makes the model say the concept, and clamping it steers. Arad, Mueller & Belinkov (EMNLP 2025, "SAEs Are Good for
Steering - If You Select the Right Features") show these are mostly different features, that top activating
contexts find input features, and that ranking candidates by an *output score* makes SAE steering 2-3x better.

On the demo SAE this is the difference between the Golden Gate demo failing and working. The features whose top
contexts are most consistently about the bridge fire on the name's tokens and drift off topic when clamped. A
feature that fires on the words around the name ("driving over the ...") ranks fourth by contexts, yet when clamped
it makes "I went for a walk and saw" continue with "a bridge and I have seen it many times."

`output_scores` measures the effect directly, as the paper does: clamp each candidate at ``multiple`` x its max
activation on a few neutral prompts, in one batched forward pass (no generation). The score is how much the
next-token probability of the concept's words rises, in nats of log probability averaged over the prompts' tokens.
`steering_search` puts the two steps together: candidates are the features whose top contexts contain the query
(`search_contexts`, with and without the name's own tokens), ranked by output score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..model import ModelHandle
from ._common import check_features, content_mask, left_padded_batch, sae_layer
from ._trace import residuals, token_logprob_with_delta
from .search import search_contexts
from .stats import FeatureStats
from .steering import DEFAULT_CLAMP_MULTIPLE, clamp_values, intervention_delta

#: Neutral prompts the output score is measured on. Deliberately not the prompts the README and the tests steer,
#: so a feature is chosen on text other than the text it is judged on.
SCORING_PROMPTS: tuple[str, ...] = (
    "The weather today is",
    "Here is a short story:",
    "She opened the door and",
    "The best thing about this city is",
    "In the news this morning,",
    "My plan for the weekend is to",
)
#: Candidate features clamped per forward pass (each adds one row per scoring prompt).
FEATURES_PER_PASS = 4


def concept_token_ids(model: ModelHandle, words: str) -> list[int]:
    """Token ids whose prediction means the model is about to write one of ``words``.

    For each whitespace-separated word this is the first token of its usual spellings: as written and in lower
    case, with and without a leading space ("Bridge", " Bridge", "bridge", " bridge").
    """
    tokenizer = model.tokenizer
    found: set[int] = set()
    for word in words.split():
        for spelling in {word, word.lower(), word.capitalize()}:
            for text in (spelling, " " + spelling):
                ids = tokenizer.encode(text, add_special_tokens=False)
                if ids:
                    found.add(int(ids[0]))
    if not found:
        raise ValueError(f"No words to score in {words!r}: pass the concept's words, e.g. 'Golden Gate Bridge'.")
    return sorted(found)


@torch.no_grad()
def output_scores(model: ModelHandle, sae: Any, stats: FeatureStats, features: Sequence[int], words: str,
                  multiple: float = DEFAULT_CLAMP_MULTIPLE, prompts: Sequence[str] = SCORING_PROMPTS,
                  layer: int | str | None = None, progress: bool = True) -> torch.Tensor:
    """Output score of each of ``features`` for the concept named by ``words``: ``[len(features)]`` nats.

    Each feature is clamped at ``multiple`` x its max activation (error term kept, as in `steer`) at every token
    of ``prompts``; the score is the mean, over the prompts' tokens, of the rise in the log probability that the
    next token starts one of ``words`` (`concept_token_ids`). Positive: clamping pushes the model toward the
    concept. The clamp strength should be the one steering will use.
    """
    features = check_features(sae, features)
    if not features:
        return torch.zeros(0)
    stats.check_matches(sae)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("output_scores() needs at least one neutral prompt.")
    layer = sae_layer(model, sae, layer)
    token_ids = concept_token_ids(model, words)
    ids, attention = left_padded_batch(model, prompts)
    mask = content_mask(model, ids, attention)
    hidden = residuals(model, ids, layer, attention)
    weight = mask.float() / mask.sum(-1, keepdim=True).clamp(min=1) / len(prompts)
    baseline = token_logprob_with_delta(model, ids, attention, layer, torch.zeros_like(hidden), token_ids)

    scores = []
    chunks = range(0, len(features), FEATURES_PER_PASS)
    for start in tqdm(chunks, desc="output scores", unit="pass", disable=not progress or len(chunks) < 2):
        chunk = features[start : start + FEATURES_PER_PASS]
        values = clamp_values(sae, {f: multiple for f in chunk}, stats, "max", "clamp")
        delta = torch.cat([intervention_delta(sae, hidden, {f: values[f]}, "clamp", None) * mask[..., None]
                           for f in chunk])
        logprob = token_logprob_with_delta(model, ids, attention, layer, delta, token_ids)
        gain = (logprob - baseline.repeat(len(chunk), 1)) * weight.repeat(len(chunk), 1)
        scores.append(gain.view(len(chunk), -1).sum(-1))
    return torch.cat(scores)


def steering_search(model: ModelHandle, sae: Any, stats: FeatureStats, query: str, n: int = 5,
                    words: str | None = None, candidates: int = 30, multiple: float = DEFAULT_CLAMP_MULTIPLE,
                    prompts: Sequence[str] = SCORING_PROMPTS, progress: bool = True) -> list[dict[str, Any]]:
    """The features to steer with toward ``query``: those whose top contexts mention it, best output score first.

    Args:
        query: phrase searched for in the top contexts (as `search_contexts`), e.g. "Golden Gate".
        n: how many features to return.
        words: the words the steered model should write (default: ``query``'s), e.g. "Golden Gate Bridge".
        candidates: how many context hits to score, from each of `search_contexts` with and without
            ``beyond_query`` (steering features often fire around a name rather than on it).
        multiple: clamp strength the score is measured at (use the one you will steer with).
        prompts: neutral prompts the score is measured on.

    Returns ``[{"feature", "output_score", "fraction", "max_act", "density", "example"}]``; ``fraction`` and
    ``example`` are from the context search. Empty when no feature's top contexts contain ``query``.
    """
    hits: dict[int, dict[str, Any]] = {}
    for beyond_query in (False, True):
        for hit in search_contexts(stats, query, n=candidates, beyond_query=beyond_query):
            hits.setdefault(hit["feature"], hit)
    if not hits:
        return []
    features = list(hits)
    scores = output_scores(model, sae, stats, features, words or query, multiple, prompts, progress=progress)
    ranked = sorted(zip(scores.tolist(), features), key=lambda pair: -pair[0])
    return [{**hits[f], "output_score": score} for score, f in ranked[:n]]
