"""The tutorials' running example, defined once: a *reader* and a *writer* feature for a concept, and a control.

*Scaling Monosemanticity* judges an interpretation by two tests, specificity (when the feature fires, the concept
is there) and steering (clamping the feature makes the model talk about the concept). On a small SAE the two tests
pick different features (Arad, Mueller & Belinkov, EMNLP 2025), so the tutorials follow two, chosen by rules that
look only at *selection* data, never at the texts or prompts the tutorials then test them on:

- **reader**: the top context hit, `search_contexts(stats, query)[0]`: the feature whose stored top contexts (the
  highest activations over the training corpus) contain the query most consistently. This is how a person browsing
  dashboards finds "the Golden Gate feature"; it usually fires on the name's own tokens.
- **writer**: the top hit of the library's steering recipe, `steering_search` with the demo's search settings
  (`STEERING_SEARCH`): context hits and the features that most promote the concept's words (`promoting_features`),
  ranked by output score, then tried by clamping on the selection prompts (`SCORING_PROMPTS`; the best two and three
  that steered alone also together, the best three candidates again on `CONFIRMATION_PROMPTS`). It may be a family
  of features clamped together (``writer_family``; steer with ``writer_clamps``). None when no candidate steered in
  those trials.
- **control**: a feature drawn at random (seeded by the demo's seed) among those that fire in the statistics and
  whose top contexts never contain the query: what an arbitrary clamp of the same size does.

The choice is cached beside the SAE (``concept_features.json``), keyed by the SAE's fingerprint, the concept, the
search settings and the recipe's defaults, so every tutorial gets the same three features without repeating the search;
the search itself is `writer_search`'s, which the demo's steering example shares.

The Explorer's bookmarks need a fourth kind, a *checked reader* (`checked_reader`): a context hit that a dashboard
shows to be about the concept on both sides, firing on the concept's own words in its top contexts and promoting
them in its logits. The top context hit alone can fire on the punctuation after a name, or on the name while its
logits point nowhere. No generation is needed, so every concept of the panel is checked in a second.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic_write import atomic_write_bytes
from ..analysis.steering_judge import mentions
from ..analysis.steering_sets import GOLDEN_GATE, SteeringConcept
from .pipeline import DemoArtifacts
from .writer_search import STEERING_SEARCH, recipe_defaults, writer_search

CACHE_FILE = "concept_features.json"


@dataclass(frozen=True)
class ConceptFeatures:
    """The reader, writer and control feature for one concept (see the module docstring for the rules).

    Attributes:
        concept: the concept's name ("Golden Gate Bridge").
        query: the phrase searched for in top contexts.
        terms: what counts as a mention of the concept (`mentions`).
        reader: the top context hit.
        reader_fraction: the fraction of the reader's top contexts that contain the query.
        writer: the top `steering_search` hit (a family's first feature, the best alone), or None when nothing
            steered in its trials.
        writer_multiple: the clamp strength (multiple of max activation) the writer's trials did best at.
        writer_trial_rate: the fraction of trial (selection) prompts the writer steered; optimistic elsewhere.
        writer_output_score: the writer's output score (nats).
        control: a random live feature unrelated to the query by its top contexts.
        writer_family: every feature of the writer when the hit clamps several together (``writer`` first); empty
            for one.
    """

    concept: str
    query: str
    terms: tuple[str, ...]
    reader: int
    reader_fraction: float
    writer: int | None
    writer_multiple: float | None
    writer_trial_rate: float | None
    writer_output_score: float | None
    control: int
    writer_family: tuple[int, ...] = ()

    @property
    def writer_clamps(self) -> dict[int, float]:
        """What to pass to `steer` to clamp the writer as its trials did: ``{feature: writer_multiple}`` for each of
        its features (empty when there is no writer)."""
        if self.writer is None or self.writer_multiple is None:
            return {}
        return dict.fromkeys(self.writer_family or (self.writer,), self.writer_multiple)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "writer_family": list(self.writer_family)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConceptFeatures:
        return cls(**{**data, "terms": tuple(data["terms"]), "writer_family": tuple(data.get("writer_family", ()))})

    def __str__(self) -> str:
        clamped = "+".join(f"#{f}" for f in self.writer_clamps)
        writer = (
            f"writer {clamped} (steered {self.writer_trial_rate:.0%} of trial prompts at {self.writer_multiple:g}x)"
            if self.writer is not None
            else "no writer (no candidate steered in steering_search's trials)"
        )
        return (
            f"{self.concept}: reader #{self.reader} ({self.reader_fraction:.0%} of top contexts contain "
            f"{self.query!r}), {writer}, control #{self.control}"
        )


def concept_features(
    art: DemoArtifacts, concept: SteeringConcept = GOLDEN_GATE, *, progress: bool = True
) -> ConceptFeatures:
    """The reader, writer and control feature for ``concept`` on the demo SAE; searched once, then cached.

    Args:
        art: the demo's artifacts (`demo_artifacts`).
        concept: what to look for (default: the Golden Gate Bridge, as in the steering benchmark).
        progress: show the steering search's progress bars the first time.
    """
    from ..analysis import search_contexts

    key = json.loads(
        json.dumps(
            {
                "concept": [concept.name, concept.query, list(concept.terms)],
                "search": STEERING_SEARCH,
                "recipe": recipe_defaults(),
                "sae": art.sae.fingerprint(),
                "seed": art.settings.seed,
            }
        )
    )  # as read back
    path = Path(art.folder) / CACHE_FILE
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return ConceptFeatures.from_dict(cached["features"])

    hits = search_contexts(art.stats, concept.query, n=1)
    if not hits:
        raise ValueError(
            f"No feature of this SAE has {concept.query!r} in its top contexts, so it has no reader for "
            f"{concept.name!r}: search for a phrase the statistics corpus uses (search_contexts)."
        )
    reader = hits[0]
    found = writer_search(art, concept.query, concept.terms, progress=progress)
    writer = found[0] if found else None
    features = ConceptFeatures(
        concept=concept.name,
        query=concept.query,
        terms=tuple(concept.terms),
        reader=int(reader.feature),
        reader_fraction=float(reader.fraction),
        writer=int(writer.feature) if writer else None,
        writer_multiple=float(writer.multiple) if writer else None,
        writer_trial_rate=float(writer.hit_rate) if writer else None,
        writer_output_score=float(writer.output_score) if writer else None,
        control=control_feature(art, concept.query),
        writer_family=tuple(writer.family) if writer else (),
    )
    record = {"key": key, "features": features.to_dict()}
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())
    return features


def control_feature(art: DemoArtifacts, query: str) -> int:
    """A feature drawn at random (seeded by the demo's seed) among those that fired in the statistics and whose top
    contexts never contain ``query``."""
    from ..analysis import search_contexts

    related = {hit.feature for hit in search_contexts(art.stats, query, n=art.sae.cfg.n_features)}
    live = [f for f in np.flatnonzero(art.stats.max_act.numpy() > 0).tolist() if f not in related]
    if not live:
        raise ValueError(f"Every feature that fires has {query!r} in its top contexts: there is no control feature.")
    return int(np.random.default_rng(art.settings.seed).choice(live))


#: A checked reader's bars: the fraction of its top contexts that mention the concept (of all top-context slots, as
#: `search_contexts` counts), and the fraction whose activating token is one of the concept's words.
MIN_MENTIONS = 0.5
MIN_ON_CONCEPT = 0.5
#: Context hits examined per concept, from `search_contexts` with and without ``beyond_query`` each.
READER_CANDIDATES = 50
_FILLER = {"the", "and", "of", "in", "a", "an"}


@dataclass(frozen=True)
class ReaderCheck:
    """How one feature did on `checked_reader`'s checks for a concept.

    Attributes:
        feature: the SAE feature.
        mentions: fraction of its top-context slots whose text mentions the concept (`mentions`, its terms).
        on_concept: fraction of its top contexts whose activating token is a concept word (`concept_words`).
        promoted: the concept words among the tokens its decoder direction promotes most (the dashboard's logits).
    """

    feature: int
    mentions: float
    on_concept: float
    promoted: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.mentions >= MIN_MENTIONS and self.on_concept >= MIN_ON_CONCEPT and bool(self.promoted)


def concept_words(concept: SteeringConcept) -> set[str]:
    """The lower-case words of a concept's name and terms ("golden", "gate", "bridge", "san", ...), fillers out."""
    text = " ".join((concept.name, *concept.terms)).lower()
    return {w for w in re.findall(r"[^\W\d_]+", text) if len(w) >= 3 and w not in _FILLER}


def is_concept_token(token: str, words: set[str]) -> bool:
    """Whether a token is one of ``words`` or a piece of one: itself (" Gate"), the word and up to 3 more letters
    (" stations", " Parisian"), or a piece of at least 4 letters ("iffel")."""
    t = token.strip().lower()
    if len(t) < 3 or not t.isalpha():
        return False
    return any(t == w or (t.startswith(w) and len(t) - len(w) <= 3) or (len(t) >= 4 and t in w) for w in words)


def check_reader(art: DemoArtifacts, feature: int, concept: SteeringConcept) -> ReaderCheck:
    """`checked_reader`'s checks of one feature: its top contexts (what it fires on) and its logits (what it
    promotes), both read from the demo's cached statistics and logit effects."""
    stats, words = art.stats, concept_words(concept)
    texts = stats.context_texts(feature)
    examples = stats.top_examples(feature)
    centres = [e.tokens[e.center] for e in examples]
    return ReaderCheck(
        feature=int(feature),
        mentions=sum(mentions(t, concept.terms) for t in texts) / stats.top_values.shape[1],
        on_concept=sum(is_concept_token(c, words) for c in centres) / max(1, len(centres)),
        promoted=tuple(p.token for p in art.logit_effects.promoted(feature) if is_concept_token(p.token, words)),
    )


def checked_reader(
    art: DemoArtifacts, concept: SteeringConcept, exclude: set[int] | frozenset[int] = frozenset()
) -> ReaderCheck | None:
    """The best context hit for ``concept`` that passes both checks, or None when none does.

    Candidates are the features whose top contexts contain the concept's query (`search_contexts`, on and beyond
    the query's own tokens, `READER_CANDIDATES` each), in context-hit order. A feature passes when at least
    `MIN_MENTIONS` of its top contexts mention the concept, at least `MIN_ON_CONCEPT` of them peak on a concept word,
    and at least one of its most promoted tokens is a concept word. Features in ``exclude`` are skipped.
    """
    from ..analysis import search_contexts

    seen = set(exclude)
    for beyond_query in (False, True):
        for hit in search_contexts(art.stats, concept.query, n=READER_CANDIDATES, beyond_query=beyond_query):
            if hit.feature in seen:
                continue
            seen.add(hit.feature)
            check = check_reader(art, hit.feature, concept)
            if check.passed:
                return check
    return None
