"""The examples ``saewidgets demo`` shows on top of the cached pipeline: bookmarked concept features and steering.

Bookmarks are checked readers (`reader_writer.checked_reader`): for each concept of the steering panel
(`steering_sets.CONCEPTS`), a feature whose top contexts mention the concept and peak on its words, and whose logits
promote them. The first search hit alone is not enough: on the quick demo SAE the top "Golden Gate" hit once fired on
the "?" and newline after the name, and garbled the text when clamped. A concept with no feature passing the checks
gets no bookmark (`missing_highlights` names them).

The steering example needs the other kind, a feature that makes the model say the concept, so it is chosen by
`steering_search` (context hits ranked by what clamping them does to the model's output).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .._atomic_write import atomic_write_bytes
from ..analysis.results import SteeringExample, describe_features
from ..analysis.steering_sets import CONCEPTS, GOLDEN_GATE, SteeringConcept
from .pipeline import DemoArtifacts
from .writer_search import STEERING_SEARCH, recipe_defaults, writer_search


def highlight_features(art: DemoArtifacts, concepts: Sequence[SteeringConcept] = CONCEPTS) -> dict[str, int]:
    """For each concept, its checked reader (`checked_reader`), if one passes: ``{concept name: feature}``, one
    feature per concept."""
    from .reader_writer import checked_reader

    found: dict[str, int] = {}
    for concept in concepts:
        check = checked_reader(art, concept, exclude=set(found.values()))
        if check is not None:
            found[concept.name] = check.feature
    return found


def missing_highlights(found: dict[str, int], concepts: Sequence[SteeringConcept] = CONCEPTS) -> list[str]:
    """The concepts `highlight_features` found no checked feature for."""
    return [c.name for c in concepts if c.name not in found]


#: Neutral prompts the demo steers (``--n-prompts`` takes the first few).
STEERING_PROMPTS = ("I went for a walk and saw", "My favourite place in the world is", "Today I want to write about")

#: What the demo steers toward: (name shown, phrase searched in top contexts, terms the steered text should say).
STEERING_CONCEPT = ("Golden Gate Bridge", GOLDEN_GATE.query, GOLDEN_GATE.terms)  # the steering benchmark's


def steering_examples(
    art: DemoArtifacts,
    prompts: Sequence[str],
    *,
    concept: tuple[str, str, tuple[str, ...]] = STEERING_CONCEPT,
    max_new_tokens: int = 24,
    progress: bool = True,
) -> list[SteeringExample]:
    """Clamp the concept's best steering feature (or family of features) on neutral prompts; cached beside the SAE.

    Features and strength both come from `steering_search` (context hits and the features that most promote the
    terms, ranked by output score, then tried at each of the `STEERING_SEARCH` multiples on its own neutral
    prompts; run by `writer_search`, cached and shared with `concept_features`), not from the top context hit:
    features that fire on the name's own tokens break the text when clamped instead of steering it, and how hard a
    feature can be pushed before a small model's text breaks down varies with the SAE.
    """
    from ..analysis import DEFAULT_REPETITION_PENALTY, steer
    from ..analysis.steering_sets import EVALUATION_PROMPTS  # judging only: the demo reports its held-out rate

    name, phrase, terms = concept
    if not prompts:
        return []
    key = json.loads(
        json.dumps(
            {
                "concept": [name, phrase, terms],
                "search": STEERING_SEARCH,
                "recipe": recipe_defaults(),
                "prompts": prompts,
                "tokens": max_new_tokens,
                "repetition_penalty": DEFAULT_REPETITION_PENALTY,
                "sae": art.sae.fingerprint(),
                "held_out": len(EVALUATION_PROMPTS),
            }
        )
    )  # as read back
    path = Path(art.folder) / "steering.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return [SteeringExample.from_dict(example) for example in cached["examples"]]
    hits = writer_search(art, phrase, terms, progress=progress)
    if not hits:
        return []
    best = hits[0]
    if progress:
        print(
            f"steering: clamping {describe_features(list(best.clamps))} ({name}) at {best.multiple}x max...", flush=True
        )
    result = steer(art.model, art.sae, list(prompts), best.clamps, stats=art.stats, max_new_tokens=max_new_tokens)
    # The rate to report: on held-out prompts, which neither the search nor the strength was chosen on.
    held_out = steer(
        art.model,
        art.sae,
        list(EVALUATION_PROMPTS),
        best.clamps,
        stats=art.stats,
        max_new_tokens=max_new_tokens,
        terms=terms,
    )
    examples = [
        SteeringExample.from_result(
            result,
            best.multiple,
            name=name,
            output_score=best.output_score,
            steer_rate=best.hit_rate,
            hit_rate=held_out.hit_rate,
            n_evaluation_prompts=len(EVALUATION_PROMPTS),
        )
    ]
    record = {"key": key, "examples": [example.to_dict() for example in examples]}
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())
    return examples
