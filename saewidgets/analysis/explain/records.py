"""What an explainer sees about one feature, and how contexts are written with the activating tokens marked.

A `FeatureRecord` gathers, from `FeatureStats` (and optionally `LogitEffects`), the feature's top contexts, a few
contexts from each activation band, and the tokens it promotes. Prompts mark the tokens on which the feature fires
``<<like this>>`` (consecutive firing tokens share one pair of marks), as delphi and Bills et al. (2023) do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..logits import LogitEffects
from ..results import ContextExample
from ..stats import FeatureStats

OPEN, CLOSE = "<<", ">>"


@dataclass(frozen=True)
class FeatureRecord:
    """One feature as the explainers read it (examples are the card's `ContextExample` items).

    Attributes:
        feature: the feature index.
        max_act, density: from the statistics.
        top: the top activating contexts, highest first.
        bands: ``[(label, examples)]`` sampled contexts per activation band, highest band first.
        promoted: tokens the feature's decoder direction most promotes (empty without logit effects).
    """

    feature: int
    max_act: float
    density: float
    top: list[ContextExample]
    bands: list[tuple[str, list[ContextExample]]] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)

    @property
    def fires(self) -> bool:
        return bool(self.top)

    def shown_examples(self) -> list[ContextExample]:
        """Every context an explanation prompt may show: the top ones, then the band samples."""
        return self.top + [e for _, examples in self.bands for e in examples]


def feature_record(
    stats: FeatureStats, feature: int, logit_effects: LogitEffects | None = None, n_top: int = 10, n_per_band: int = 2
) -> FeatureRecord:
    """The `FeatureRecord` of ``feature``: its ``n_top`` top contexts, ``n_per_band`` samples of each band."""
    i = stats.check_feature(feature)
    if logit_effects is not None and logit_effects.fingerprint != stats.fingerprint:
        raise ValueError(
            f"The logit effects were computed for SAE {logit_effects.fingerprint} but the statistics for "
            f"{stats.fingerprint}: compute both for the same SAE."
        )
    bands = [(band.label, band.examples[:n_per_band]) for band in stats.quantile_examples(i)]
    promoted = [row.token for row in logit_effects.promoted(i)] if logit_effects is not None else []
    return FeatureRecord(
        feature=i,
        max_act=float(stats.max_act[i]),
        density=float(stats.density[i]),
        top=stats.top_examples(i, n_top),
        bands=[b for b in bands if b[1]],
        promoted=promoted,
    )


def marked_text(example: Mapping[str, Any], marked: list[bool] | None = None) -> str:
    """The context's text with the marked tokens (default: those where the feature fires) between ``<< >>``.
    ``example`` is a `ContextExample` or a scoring window (the same keys, and a ``band``)."""
    tokens = example["tokens"]
    if marked is None:
        marked = [a > 0 for a in example["acts"]]
    out, inside = [], False
    for token, mark in zip(tokens, marked):
        if mark and not inside:
            out.append(OPEN)
        elif not mark and inside:
            out.append(CLOSE)
        inside = mark
        out.append(token)
    if inside:
        out.append(CLOSE)
    return "".join(out)


def plain_text(example: Mapping[str, Any]) -> str:
    """The context's text, nothing marked."""
    return "".join(example["tokens"])
