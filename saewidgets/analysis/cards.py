"""The feature card: one `FeatureCard` per feature, the contract between analysis and the dashboard widget.

Its ``to_dict()`` follows this schema (every number a plain float/int, every token a raw string: escape it before it becomes HTML)::

    {
      "feature": int,                      # feature index
      "density": float,                    # fraction of corpus tokens where it fires (activation > 0)
      "max_act": float,                    # largest activation seen (SAE units)
      "mean_act": float,                   # mean activation over the tokens where it fires
      "top": [                             # top activating contexts, highest first
        {"tokens": [str, ...],             #   the window of tokens (clipped to the document)
         "acts": [float, ...],             #   the feature's activation on each of them
         "center": int,                    #   index in "tokens" of the activating token
         "value": float}                   #   its activation (= acts[center])
      ],
      "quantiles": [                       # sampled contexts per band of the max, highest band first
        {"label": "0.80-1.00 of max", "examples": [same items as "top"]}
      ],
      "histogram": {"counts": [int, ...], "edges": [float, ...]},   # non-zero activations; len(edges) = len(counts)+1
      "promoted": [{"token": str, "value": float}],    # logit effects (empty without logit_effects), in logit_unit
      "suppressed": [{"token": str, "value": float}],  # most negative first
      "logit_unit": str,                   # "Δlogit @ mean act": the logit change when the feature is at its mean
                                           #   activation on a typical token (see analysis.logits); absent without
                                           #   logit_effects
      "neighbours": [{"feature": int, "cosine": float}], # decoder cosine neighbours (empty without geometry)
      "label": {"text": str, "kind": "pattern" | "llm"} | None   # its explanation (None without labels)
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .geometry import FeatureGeometry
from .logits import LogitEffects
from .results import ContextExample, FeatureLabel, Histogram, Neighbour, QuantileBand, Record, TokenLogit
from .stats import FeatureStats

if TYPE_CHECKING:
    from .explain.labels import Labels

N_NEIGHBOURS = 10


@dataclass(frozen=True, kw_only=True, eq=False)
class FeatureCard(Record):
    """Everything the dashboard shows about one feature (the schema in this module's docstring).

    ``to_dict()`` is the JSON the dashboard's JavaScript and the static page read, key for key as the schema
    orders them (nested results as dicts too), without ``logit_unit`` when there are no logit effects. The card
    also reads like that dict (``card["top"][0]["tokens"]``, ``card.get("logit_unit")``, ``dict(card)``) and
    compares equal to it.
    """

    feature: int
    """The feature's index."""
    density: float
    """Fraction of corpus tokens where it fires (activation > 0)."""
    max_act: float
    """Largest activation seen (SAE units)."""
    mean_act: float
    """Mean activation over the tokens where it fires."""
    top: list[ContextExample]
    """Top activating contexts, highest first."""
    quantiles: list[QuantileBand]
    """Sampled contexts per band of the max, highest band first."""
    histogram: Histogram
    """Non-zero activations binned, one more edge than counts."""
    promoted: list[TokenLogit]
    """Tokens the feature promotes most, values in ``logit_unit`` (empty without logit effects)."""
    suppressed: list[TokenLogit]
    """Tokens it suppresses most, most negative first (empty without logit effects)."""
    logit_unit: str | None = None
    """What ``promoted`` / ``suppressed`` values measure (see `analysis.logits`); None without logit effects, and
    then absent from the dict."""
    neighbours: list[Neighbour]
    """Decoder cosine neighbours (empty without geometry)."""
    label: FeatureLabel | None
    """Its explanation (None without labels)."""

    def _names(self) -> tuple[str, ...]:
        names = super()._names()
        return names if self.logit_unit is not None else tuple(n for n in names if n != "logit_unit")


def feature_card(
    stats: FeatureStats,
    i: int,
    logit_effects: LogitEffects | None = None,
    geometry: FeatureGeometry | None = None,
    labels: Labels | None = None,
) -> FeatureCard:
    """Everything the dashboard shows about feature ``i`` (schema in the module docstring); ``to_dict()`` for JSON."""
    i = stats.check_feature(i)
    for other, what in ((logit_effects, "logit effects"), (geometry, "geometry"), (labels, "labels")):
        if other is not None and other.fingerprint != stats.fingerprint:
            raise ValueError(
                f"The {what} were computed for SAE {other.fingerprint} but the statistics for "
                f"{stats.fingerprint}: compute both for the same SAE."
            )
    promoted, suppressed, logit_unit = (
        _logits(logit_effects, i, float(stats.mean_act[i])) if logit_effects is not None else ([], [], None)
    )
    return FeatureCard(
        feature=i,
        density=float(stats.density[i]),
        max_act=float(stats.max_act[i]),
        mean_act=float(stats.mean_act[i]),
        top=stats.top_examples(i),
        quantiles=stats.quantile_examples(i),
        histogram=stats.histogram(i),
        promoted=promoted,
        suppressed=suppressed,
        logit_unit=logit_unit,
        neighbours=geometry.neighbours(i, N_NEIGHBOURS) if geometry is not None else [],
        label=labels.view(i) if labels is not None else None,
    )


def _logits(effects: LogitEffects, i: int, mean_act: float) -> tuple[list[TokenLogit], list[TokenLogit], str]:
    """The card's logit tables and their unit: logit changes at the mean activation when the effects know the
    final residual's scale, per-unit values otherwise."""
    if effects.final_rms is None:
        return effects.promoted(i), effects.suppressed(i), effects.unit()
    return effects.promoted(i, mean_act), effects.suppressed(i, mean_act), effects.unit("mean act")
