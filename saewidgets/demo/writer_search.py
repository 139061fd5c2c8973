"""The demo's steering search, run once per concept and SAE and cached beside the SAE.

The demo's steering example (`steering_examples`), the tutorials' writer (`concept_features`) and the Gemma
acceptance tests all ask the same question of the same SAE: which features (or family of features), clamped at
which strength, make the model talk about a concept. `writer_search` answers it with `steering_search` at the
demo's settings (`STEERING_SEARCH`, the README's recipe) and keeps every hit, so the two to three minutes that
search costs on two cores are spent once, not once per caller.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Sequence

from .._atomic_write import atomic_write_bytes
from ..analysis.output_score import (
    DEFAULT_CONFIRM,
    DEFAULT_FAMILY,
    DEFAULT_PROMOTERS,
    SteeringCandidate,
    steering_search,
)
from .pipeline import DemoArtifacts

#: How the demo searches for its steering feature: clamp strengths tried (multiples of max activation; the demo
#: calibrates the strength per SAE), context hits scored per search, features added by what they make the model say
#: (`promoting_features`), best-scored features tried by generating, how many of those that steered are tried
#: again on more prompts, and how many that steered alone are also tried clamped together. Written out in full, so a
#: change of the recipe's defaults also changes the cached choice's key.
STEERING_SEARCH: dict[str, Any] = {
    "multiples": (1.0, 1.5, 2.0),
    "candidates": 50,
    "promoters": DEFAULT_PROMOTERS,
    "shortlist": 6,
    "confirm": DEFAULT_CONFIRM,
    "family": DEFAULT_FAMILY,
}


def recipe_defaults() -> dict[str, str]:
    """The defaults of `steering_search`'s parameters (its prompts, lengths, ...), so a change of the recipe
    invalidates every cached choice that rests on it."""
    return {
        name: repr(p.default)
        for name, p in inspect.signature(steering_search).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def writer_search(
    art: DemoArtifacts, query: str, terms: Sequence[str], *, progress: bool = True
) -> list[SteeringCandidate]:
    """Every hit of ``steering_search(art.model, art.sae, art.stats, query, terms=terms, **STEERING_SEARCH)``, best
    first; searched once, then read back from ``steering_search-<key>.json`` beside the SAE.

    The key is the SAE's fingerprint, the query, the terms, `STEERING_SEARCH` and the recipe's defaults
    (`recipe_defaults`): any of them changing runs the search again. Empty when no candidate steered in the
    search's trials (its warning says why).
    """
    key = json.loads(
        json.dumps(
            {
                "query": query,
                "terms": list(terms),
                "search": STEERING_SEARCH,
                "recipe": recipe_defaults(),
                "sae": art.sae.fingerprint(),
            }
        )
    )  # as read back
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(art.folder) / f"steering_search-{digest}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return [SteeringCandidate.from_dict(hit) for hit in cached["hits"]]
    # every hit: the shortlist's single features and the families of 2 .. `family` tried beside them
    every = STEERING_SEARCH["shortlist"] + STEERING_SEARCH["family"] - 1
    hits = steering_search(
        art.model, art.sae, art.stats, query, n=every, terms=list(terms), progress=progress, **STEERING_SEARCH
    )
    atomic_write_bytes(path, json.dumps({"key": key, "hits": [hit.to_dict() for hit in hits]}, indent=1).encode())
    return hits
