"""Finding features: by what fires on a prompt, by what their top contexts say, by contrast between two prompts.

Raw activations are in each feature's own units, and some features are simply louder than others; when
``stats`` is given, prompt-based searches rank by fraction of each feature's max activation instead, which finds
the features for which this prompt is typical rather than the loudest ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .._checks import whole_number
from ..models.handle import ModelHandle
from ._common import sae_layer
from ._trace import prompt_features
from .results import ActiveFeature, ContextHit, ContrastHit
from .stats import FeatureStats

if TYPE_CHECKING:
    from ..sae import SAE

Span = tuple[int, int] | str | None


def _span_rows(tokens: list[str], span: Span) -> slice:
    """Token rows of ``span``: a ``(start, stop)`` range over the prompt's tokens, or a substring of the prompt."""
    if span is None:
        return slice(0, len(tokens))
    if isinstance(span, str):
        text = "".join(tokens)
        at = text.find(span)
        if at < 0 or not span:
            raise ValueError(f"span {span!r} does not occur in the prompt, which tokenizes as {tokens}.")
        ends = torch.tensor([len(t) for t in tokens]).cumsum(0)
        start = int((ends <= at).sum())
        stop = int((ends < at + len(span)).sum()) + 1
        return slice(start, stop)
    start, stop = span
    if not 0 <= start < stop <= len(tokens):
        raise ValueError(
            f"span=({start}, {stop}) must satisfy 0 <= start < stop <= {len(tokens)}, "
            f"the prompt's {len(tokens)} tokens (BOS not counted): {tokens}."
        )
    return slice(start, stop)


def _scale(sae: SAE, stats: FeatureStats | None) -> torch.Tensor | None:
    if stats is None:
        return None
    stats.check_matches(sae)
    return stats.max_act.clamp(min=1e-12)


def features_active_on(
    model: ModelHandle,
    sae: SAE,
    prompt: str,
    span: Span = None,
    n: int = 10,
    stats: FeatureStats | None = None,
    layer: int | str | None = None,
    check_provenance: bool = True,
) -> list[ActiveFeature]:
    """The ``n`` features most active on ``prompt`` (or on ``span`` of it), by their max over the span.

    Returns `ActiveFeature` results (``feature``, ``activation``, ``fraction_of_max`` (with stats, else None),
    ``position``, ``token``), best first; ``position`` indexes the prompt's tokens without BOS.
    """
    tokens, f = prompt_features(model, sae, prompt, sae_layer(model, sae, layer, check_provenance))
    rows = _span_rows(tokens, span)
    peak, where = f[rows].max(0)
    scale = _scale(sae, stats)
    score = peak if scale is None else peak / scale
    order = score.argsort(descending=True)[:n].tolist()
    return [
        ActiveFeature(
            feature=i,
            activation=float(peak[i]),
            fraction_of_max=None if scale is None else float(score[i]),
            position=rows.start + int(where[i]),
            token=tokens[rows.start + int(where[i])],
        )
        for i in order
        if peak[i] > 0
    ]


def contrastive_search(
    model: ModelHandle,
    sae: SAE,
    prompt_a: str,
    prompt_b: str,
    n: int = 10,
    stats: FeatureStats | None = None,
    layer: int | str | None = None,
    check_provenance: bool = True,
) -> list[ContrastHit]:
    """Features active on ``prompt_a`` but not on ``prompt_b``: ranked by max activation on A minus max on B
    (as fractions of max activation when ``stats`` is given).

    Returns `ContrastHit` results (``feature``, ``score``, ``activation_a``, ``activation_b``), best first.
    """
    layer = sae_layer(model, sae, layer, check_provenance)
    _, fa = prompt_features(model, sae, prompt_a, layer, "prompt_a")
    _, fb = prompt_features(model, sae, prompt_b, layer, "prompt_b")
    a, b = fa.max(0).values, fb.max(0).values
    scale = _scale(sae, stats)
    score = a - b if scale is None else (a - b) / scale
    order = score.argsort(descending=True)[:n].tolist()
    return [
        ContrastHit(feature=i, score=float(score[i]), activation_a=float(a[i]), activation_b=float(b[i]))
        for i in order
        if score[i] > 0
    ]


def search_contexts(
    stats: FeatureStats, query: str, n: int = 10, case_sensitive: bool = False, beyond_query: bool = False
) -> list[ContextHit]:
    """Features whose top contexts contain ``query``, ranked by the fraction of their top-k slots that do.

    Counting over all ``k`` slots (not only the filled ones) keeps rare features with one lucky context from
    outranking features that fire on the concept again and again. Ties go to the larger max activation.

    With ``beyond_query=True`` a context counts only if its activating token lies outside every occurrence of
    the query: this finds features that respond to the concept in the text around a name (better for steering)
    rather than to the name's own tokens.

    Returns `ContextHit` results (``feature``, ``fraction``, ``n_contexts``, ``max_act``, ``density``,
    ``example``), best first.
    """
    if not isinstance(query, str):
        raise TypeError(
            f"search_contexts() searches text: query must be a string, got {type(query).__name__} "
            f"({query!r}). To look at one feature, use stats.context_texts(feature) or a feature card."
        )
    if not query:
        raise ValueError("search_contexts() needs a non-empty query, e.g. 'Golden Gate'.")
    n = whole_number("n", n, 1)
    fold = (lambda t: t) if case_sensitive else str.lower
    needle = fold(query)
    slots = stats.top_values.shape[1]
    hits = []
    for i in range(stats.n_features):
        texts = stats.context_texts(i)
        matching = [j for j, t in enumerate(texts) if needle in fold(t)]
        if beyond_query:
            matching = [j for j in matching if not _centre_inside_query(stats, i, j, needle, fold)]
        if matching:
            hits.append((len(matching) / slots, float(stats.max_act[i]), i, len(texts), texts[matching[0]]))
    hits.sort(key=lambda h: (-h[0], -h[1]))
    return [
        ContextHit(i, fraction, count, max_act, float(stats.density[i]), example)
        for fraction, max_act, i, count, example in hits[:n]
    ]


def context_hit(stats: FeatureStats, feature: int, query: str) -> ContextHit:
    """`search_contexts`'s record of one feature, whether or not its top contexts contain ``query`` (then
    ``fraction`` is 0 and ``example`` its top context): for a feature found some other way, e.g. by what it makes
    the model say."""
    texts = stats.context_texts(feature)
    matching = [t for t in texts if query.lower() in t.lower()]
    example = (matching or texts or [""])[0]
    fraction = len(matching) / stats.top_values.shape[1]
    return ContextHit(
        feature, fraction, len(texts), float(stats.max_act[feature]), float(stats.density[feature]), example
    )


def _centre_inside_query(stats: FeatureStats, feature: int, slot: int, needle: str, fold) -> bool:
    """Whether the activating token of top context ``slot`` overlaps an occurrence of ``needle``."""
    example = stats.top_examples(feature, slot + 1)[slot]
    pieces = example.tokens
    start = sum(len(p) for p in pieces[: example.center])
    end = start + len(pieces[example.center])
    text = fold("".join(pieces))
    at = text.find(needle)
    while at >= 0:
        if at < end and start < at + len(needle):
            return True
        at = text.find(needle, at + 1)
    return False
