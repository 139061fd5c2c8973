"""Explanations of features, kept per SAE: the record of how each was made, a store, and search by label.

A `Labels` holds at most one `Explanation` per feature for one SAE (by its fingerprint). Views read
`Labels.for_views()`: ``{feature: {"text", "kind"}}``, where ``kind`` is ``"pattern"`` (built from statistics, no
language model) or ``"llm"`` (written by a language model). `Labels.merged` puts LLM labels over pattern labels.

On disk a `Labels` is one JSON file (written atomically)::

    {"format_version": 1, "fingerprint": str,
     "explanations": [{"feature": int, "text": str, "kind": "pattern" | "llm", "explainer": str, "model": str,
                       "prompt_hash": str, "created": ISO-8601 str}, ...]}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._atomic_write import atomic_write_bytes
from ..results import FeatureLabel, LabelHit

if TYPE_CHECKING:
    from ...sae import SAE

_FORMAT_VERSION = 1
KINDS = ("pattern", "llm")


@dataclass(frozen=True)
class Explanation:
    """One feature's explanation and how it was made.

    Attributes:
        feature: the feature index.
        text: the explanation (raw and untrusted: escape it before it becomes HTML).
        kind: ``"pattern"`` (from the statistics, no language model) or ``"llm"``.
        explainer: what made it (``"pattern"``, ``"chat"``, ``"local"``, ``"neuronpedia"``).
        model: the language model that wrote it ("" for pattern labels).
        prompt_hash: hash of the exact prompt (or, for pattern labels, the labeller's settings).
        created: when it was made (UTC, ISO 8601).
    """

    feature: int
    text: str
    kind: str
    explainer: str
    model: str
    prompt_hash: str
    created: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"An explanation's kind is one of {KINDS}, got {self.kind!r}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        return cls(
            feature=int(d["feature"]),
            text=str(d["text"]),
            kind=str(d["kind"]),
            explainer=str(d["explainer"]),
            model=str(d.get("model", "")),
            prompt_hash=str(d.get("prompt_hash", "")),
            created=str(d.get("created", "")),
        )


class Labels:
    """The explanations of one SAE's features, by feature index."""

    def __init__(self, fingerprint: str, explanations: Iterable[Explanation] = ()):
        self.fingerprint = fingerprint
        self._by_feature: dict[int, Explanation] = {}
        for e in explanations:
            self._by_feature[e.feature] = e

    def __len__(self) -> int:
        return len(self._by_feature)

    def __contains__(self, feature: object) -> bool:
        return feature in self._by_feature

    def __getitem__(self, feature: int) -> Explanation:
        if feature not in self._by_feature:
            raise KeyError(f"Feature {feature} has no explanation here ({len(self)} features are explained).")
        return self._by_feature[feature]

    def __iter__(self) -> Iterator[Explanation]:
        return iter(sorted(self._by_feature.values(), key=lambda e: e.feature))

    def get(self, feature: int) -> Explanation | None:
        return self._by_feature.get(feature)

    def __repr__(self) -> str:
        kinds = {k: sum(e.kind == k for e in self._by_feature.values()) for k in KINDS}
        return f"Labels({len(self):,} features of sae {self.fingerprint}: {kinds['pattern']:,} pattern, {kinds['llm']:,} llm)"

    def merged(self, other: Labels) -> Labels:
        """These labels with ``other``'s added; for a feature explained in both, an LLM label beats a pattern label,
        and between two of the same kind ``other``'s wins."""
        if other.fingerprint != self.fingerprint:
            raise ValueError(
                f"These labels describe SAE {self.fingerprint} but the others SAE {other.fingerprint}: "
                "feature numbers would point at the wrong features."
            )
        out = dict(self._by_feature)
        for e in other:
            mine = out.get(e.feature)
            if mine is None or not (mine.kind == "llm" and e.kind == "pattern"):
                out[e.feature] = e
        return Labels(self.fingerprint, out.values())

    def view(self, feature: int) -> FeatureLabel | None:
        """``feature``'s label (text and kind), or None: what a view shows for one feature."""
        e = self._by_feature.get(feature)
        return None if e is None else FeatureLabel(e.text, e.kind)

    def for_views(self) -> dict[int, dict[str, str]]:
        """``{feature: {"text", "kind"}}``, the plain data the dashboard, map and static page show."""
        return {e.feature: {"text": e.text, "kind": e.kind} for e in self}

    def save(self, path: str | os.PathLike) -> Path:
        """Write to the JSON file ``path`` (schema in the module docstring), atomically."""
        path = Path(path)
        blob = {
            "format_version": _FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "explanations": [asdict(e) for e in self],
        }
        atomic_write_bytes(path, json.dumps(blob, indent=1).encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, sae: SAE | None = None) -> Labels:
        """Read labels written by `save`; with ``sae``, also check they belong to it."""
        path = Path(path)
        try:
            blob = json.loads(path.read_text())
            labels = cls(blob["fingerprint"], (Explanation.from_dict(d) for d in blob["explanations"]))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"There are no saved labels at {path}; make them with explain_features(...) and labels.save(path)."
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"The labels in {path} are unreadable ({err!r}); make them again.") from err
        if blob.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path} was written in labels format {blob.get('format_version')}, this saewidgets "
                f"reads format {_FORMAT_VERSION}."
            )
        if sae is not None and sae.fingerprint() != labels.fingerprint:
            raise ValueError(f"These labels describe SAE {labels.fingerprint}, but this SAE is {sae.fingerprint()}.")
        return labels


def search_labels(labels: Labels, query: str, n: int = 10) -> list[LabelHit]:
    """Features whose label contains every word of ``query`` (case-insensitive), best first.

    A label that contains the whole query as one phrase ranks above one that only has its words; then LLM labels
    before pattern labels, then shorter (more specific) labels. Returns `LabelHit` results (``feature``, ``text``,
    ``kind``).
    """
    words = re.findall(r"\w+", query.lower())
    if not words:
        raise ValueError("search_labels() needs a query with at least one word, e.g. 'bridge'.")
    phrase = query.strip().lower()
    hits = []
    for e in labels:
        text = e.text.lower()
        if all(w in text for w in words):
            hits.append(((phrase not in text), e.kind != "llm", len(text), e.feature, e))
    hits.sort(key=lambda h: h[:4])
    return [LabelHit(e.feature, e.text, e.kind) for *_, e in hits[:n]]
