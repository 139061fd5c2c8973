"""Pattern labels: a short label per feature built from its statistics alone, no language model.

The label names the tokens the feature fires on, the tokens just before and after them when most contexts share
them (the n-gram around the firing token), words shared by its contexts when the firing tokens vary, and the tokens
its decoder direction promotes::

    ' Gate' after ' Golden' -> promotes ' Bridge'
    ' Golden' after ' the', before ' Gate Bridge' -> promotes ' Gate'
    varied tokens (' the', ' a') in contexts with 'bridge' -> promotes ' San'

Tokens are compared without case or surrounding spaces (``' Gate'`` and ``'gate'`` count together) and shown as
the spelling seen most often, quoted with ``repr`` so spaces and newlines stay visible.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from ..results import ContextExample
from .explainer import Explainer, Prompt
from .records import FeatureRecord

# Words too common to say anything about a feature's contexts.
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "that",
        "with",
        "this",
        "from",
        "have",
        "was",
        "were",
        "are",
        "not",
        "but",
        "his",
        "her",
        "its",
        "their",
        "they",
        "them",
        "there",
        "what",
        "which",
        "who",
        "will",
        "would",
        "can",
        "could",
        "has",
        "had",
        "been",
        "one",
        "all",
        "any",
        "out",
        "about",
        "into",
        "than",
        "then",
        "some",
        "more",
        "when",
        "where",
        "your",
        "our",
        "you",
        "she",
        "him",
        "also",
        "just",
        "like",
        "over",
        "such",
        "only",
        "other",
    ]
)


def _key(token: str) -> str:
    return token.strip().lower()


def _top_group(tokens: list[str]) -> tuple[str, float, list[tuple[str, int]]]:
    """The most common token (by `_key`), its share of ``tokens``, and every group ``(key, count)`` by count."""
    groups = Counter(_key(t) for t in tokens).most_common()
    return groups[0][0], groups[0][1] / len(tokens), groups


def _spelling(tokens: list[str], key: str) -> str:
    """The spelling of ``key`` seen most often."""
    return Counter(t for t in tokens if _key(t) == key).most_common(1)[0][0]


class PatternExplainer(Explainer):
    """Labels features from their statistics: firing tokens, the n-gram around them, shared context words and
    promoted tokens (see the module docstring).

    Args:
        min_share: a token, preceding token or context word must occur in at least this share of the top contexts
            to be named.
        max_context_tokens: longest run of consistent tokens named on each side ("after ' the Golden'").
        n_promoted: promoted tokens named.
    """

    kind = "pattern"
    name = "pattern"
    version = 3  # bump when the labelling rules change: labels cached by an older version are not reused

    def __init__(self, min_share: float = 0.5, max_context_tokens: int = 2, n_promoted: int = 2):
        if not 0 < min_share <= 1:
            raise ValueError(f"min_share must be in (0, 1], got {min_share}.")
        self.min_share, self.max_context_tokens, self.n_promoted = min_share, max_context_tokens, n_promoted

    def settings(self) -> dict[str, Any]:
        return {
            "min_share": self.min_share,
            "max_context_tokens": self.max_context_tokens,
            "n_promoted": self.n_promoted,
            "version": self.version,
        }

    def prompt(self, record: FeatureRecord) -> Prompt:
        settings = json.dumps(self.settings(), sort_keys=True)
        return Prompt(system="pattern labeller", user=settings, completion="")

    def explain(self, record: FeatureRecord) -> str:
        if not record.fires:
            return "never fires (dead feature)"
        examples = record.top
        centres = [e.tokens[e.center] for e in examples]
        key, share, groups = _top_group(centres)
        if share >= self.min_share:
            label = repr(_spelling(centres, key))
            firing = [e for e, c in zip(examples, centres) if _key(c) == key]
            before, after = self._neighbours(firing, -1), self._neighbours(firing, +1)
            if before:
                label += f" after {before!r}"
            if after:
                label += f"{',' if before else ''} before {after!r}"
        else:
            shown = ", ".join(repr(_spelling(centres, k)) for k, _ in groups[:3])
            label = f"varied tokens ({shown})"
            word = self._shared_word(examples)
            if word:
                label += f" in contexts with {word!r}"
        promoted = [t for t in record.promoted if t.strip()][: self.n_promoted]
        if promoted:
            label += " -> promotes " + ", ".join(repr(t) for t in promoted)
        return label

    def _neighbours(self, examples: list[ContextExample], step: int) -> str:
        """The run of tokens just before (``step`` -1) or after (+1) the firing token that most contexts share
        ('' when they do not): each longer n-gram must still occur in ``min_share`` of all the contexts."""
        text, n, matching = "", len(examples), examples
        for k in range(1, self.max_context_tokens + 1):
            near = [e.tokens[e.center + step * k] if 0 <= e.center + step * k < len(e.tokens) else "" for e in matching]
            key, share, _ = _top_group(near)
            if not key or share * len(matching) / n < self.min_share:
                break
            token = _spelling(near, key)
            text = token + text if step < 0 else text + token
            matching = [e for e, t in zip(matching, near) if _key(t) == key]
        return text

    def _shared_word(self, examples: list[ContextExample]) -> str:
        """The word (3+ letters, not a stopword) found in the most contexts, if in at least ``min_share`` of them;
        of words found in equally many, the one met first (contexts in order, each read left to right), so the label
        is the same in every process (a ``set`` here made the tie follow Python's per-process string hashing)."""
        counts = Counter(
            w
            for e in examples
            for w in dict.fromkeys(re.findall(r"[^\W\d_]{3,}", "".join(e.tokens).lower()))
            if w not in _STOPWORDS
        )
        if not counts:
            return ""
        word, count = counts.most_common(1)[0]
        return word if count / len(examples) >= self.min_share else ""
