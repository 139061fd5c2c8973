"""The prompts and concepts steering is chosen on and judged on: the one place they are defined.

A steering method is tuned (which feature, how strong) on some prompts and should then be judged on prompts it never
saw, or its rate says only how well it fits the prompts it was tuned on. So neutral everyday prompts come in two
disjoint sets:

- `SELECTION_PROMPTS` may be used by anything that chooses or calibrates: `steering_search`, `output_scores`,
  strength and fluency calibration, the defaults of every function, docstrings, the README and the tutorials.
  `CONFIRMATION_PROMPTS` are selection prompts too, kept apart so that the benchmark's validation prompts (the
  selection prompts `steering_search` does not try features on) stay what they were: `steering_search` tries its
  best few candidates again on them before it ranks.
- `EVALUATION_PROMPTS` are for judging only (``benchmarks/bench_steering.py``, the demo's reported rate, the Gemma
  acceptance test). Nothing chooses, tunes or defaults on them; ``tests/test_steering_sets.py`` checks that no
  other file spells one out and that no default of the package holds one.

`CONCEPTS` is the benchmark's panel: concepts the demo corpus covers in many contexts, each with the terms whose
mention counts as steering toward it, the phrase `steering_search` looks for in top contexts, and which corpus
documents are about it (the rows a DiffMean `steering_vector` averages).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Prompts for choosing and calibrating. The first ten were already used to choose features before the split (the
#: output-score prompts, the README's, the demo's and the tests'), so they can only ever be selection prompts.
SELECTION_PROMPTS: tuple[str, ...] = (
    "The weather today is",
    "Here is a short story:",
    "She opened the door and",
    "The best thing about this city is",
    "In the news this morning,",
    "My plan for the weekend is to",
    "I went for a walk and saw",
    "My favourite place in the world is",
    "Today I want to write about",
    "Yesterday my friend told me about",
    "The first thing I noticed was",
    "Let me tell you about",
    "After lunch we decided to",
    "The most interesting thing I learned this week is",
)

#: More selection prompts, written on 2026-12-02 when `steering_search` gained a second round of trials: its best
#: few candidates are tried again on these, so that a choice rests on 14 prompts rather than 6. Not part of
#: `SELECTION_PROMPTS`, whose calibrations and validation remainder the benchmark's recorded figures were measured on.
CONFIRMATION_PROMPTS: tuple[str, ...] = (
    "On Sunday mornings I like to",
    "The book I am reading is about",
    "Every evening after work I",
    "What I remember most about that day is",
    "The radio was playing and",
    "My first job was",
    "The garden behind the house",
    "There was a knock at the door, and",
)

#: Selection prompts nothing tries, scores or calibrates on, written on 2026-12-02 because the benchmark's 8
#: validation prompts (the selection prompts `steering_search` does not try features on) tied between two recipes:
#: more prompts to choose a recipe by, so that the evaluation prompts never have to.
TIEBREAK_PROMPTS: tuple[str, ...] = (
    "The phone rang just as",
    "In the morning paper there was",
    "My favourite meal is",
    "The car would not start, so",
    "On the first day of school",
    "The shop around the corner sells",
    "When the rain finally stopped,",
    "My sister sent me a message about",
    "The best part of the holiday was",
    "Before going to bed I",
    "The office was empty except for",
    "The film we watched last night was",
)

#: Held-out prompts: for judging only, never for choosing, tuning or defaults (see the module docstring).
EVALUATION_PROMPTS: tuple[str, ...] = (
    "When I woke up this morning,",
    "The kitchen smelled of",
    "On my way home I",
    "My grandmother always said that",
    "The letter on the table said",
    "Last summer we spent a week",
    "The meeting started late because",
    "He looked out of the window and",
    "Our neighbours have a new",
    "It was a quiet evening, and",
    "The photograph on the wall shows",
    "I have always wanted to",
    "The teacher asked the class to",
    "At the end of the street there is",
    "The best advice I ever got was",
    "We sat down at the table and",
    "My brother called to say that",
    "The old house at the corner",
    "This year I am going to",
    "She wrote in her notebook:",
    "The children were playing in the",
    "For dinner tonight I",
    "Something strange happened on",
    "The package arrived and",
)


@dataclass(frozen=True)
class SteeringConcept:
    """A concept to steer toward.

    Attributes:
        name: shown to people.
        about: the concept in a phrase ("the Golden Gate Bridge"), for an instruction to write about it.
        query: phrase `steering_search` looks for in the features' top contexts.
        terms: what counts as a mention (`mentions`: whole words, any case, plurals too). Specific to the concept:
            "bridge" alone is any bridge, "Golden" alone is also the Golden Temple.
        topic: demo-corpus topic whose documents are about the concept, or None.
        keyword: else, the documents whose text contains this word are.
    """

    name: str
    about: str
    query: str
    terms: tuple[str, ...]
    topic: str | None = None
    keyword: str | None = None

    def documents(self, corpus) -> list[int]:
        """Indices of the documents of ``corpus`` (a demo-corpus `Corpus`) that are about this concept."""
        if self.topic is not None:
            return [i for i, doc in enumerate(corpus.documents) if getattr(doc, "topic", None) == self.topic]
        if self.keyword is None:
            raise ValueError(f"SteeringConcept {self.name!r} names neither a topic nor a keyword: give it one of them.")
        keyword = self.keyword.lower()
        return [i for i, doc in enumerate(corpus.documents) if keyword in doc.text.lower()]


GOLDEN_GATE = SteeringConcept(
    "Golden Gate Bridge",
    "the Golden Gate Bridge",
    "Golden Gate",
    ("Golden Gate", "San Francisco", "Marin", "Sausalito", "Presidio", "Alcatraz", "Bay Area"),
    topic="golden_gate",
)

#: The benchmark's panel of concepts (the Golden Gate Bridge first).
CONCEPTS: tuple[SteeringConcept, ...] = (
    GOLDEN_GATE,
    SteeringConcept(
        "Eiffel Tower / Paris", "the Eiffel Tower in Paris", "Eiffel", ("Eiffel", "Paris", "Parisian"), keyword="Eiffel"
    ),
    SteeringConcept(
        "computer code",
        "computer programming",
        "SQL",
        (
            "code",
            "coding",
            "programming",
            "programmer",
            "Python",
            "JavaScript",
            "SQL",
            "software",
            "database",
            "compiler",
            "function",
        ),
        topic="code",
    ),
    SteeringConcept(
        "honesty and lies",
        "honesty and lying",
        "honest",
        (
            "honest",
            "honesty",
            "dishonest",
            "lie",
            "lied",
            "lying",
            "liar",
            "truth",
            "truthful",
            "deceive",
            "deceived",
            "deception",
            "deceit",
        ),
        topic="honesty",
    ),
    SteeringConcept(
        "trains and transit",
        "trains and public transport",
        "train",
        ("train", "subway", "metro", "tram", "railway", "station", "commute", "commuter", "transit", "bus"),
        topic="cities_transit",
    ),
    SteeringConcept(
        "music",
        "music",
        "music",
        (
            "music",
            "musical",
            "musician",
            "song",
            "singer",
            "piano",
            "guitar",
            "concert",
            "melody",
            "symphony",
            "orchestra",
            "band",
        ),
        topic="music",
    ),
)
