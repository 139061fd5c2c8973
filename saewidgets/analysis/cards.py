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
from typing import TYPE_CHECKING, Any

from .geometry import FeatureGeometry
from .logits import LogitEffects
from .results import Record
from .stats import FeatureStats

if TYPE_CHECKING:
    from .explain.labels import Labels

N_NEIGHBOURS = 10


@dataclass(frozen=True, kw_only=True, eq=False)
class FeatureCard(Record):
    """Everything the dashboard shows about one feature (the schema in this module's docstring).

    ``to_dict()`` is the JSON the dashboard's JavaScript and the static page read, key for key as the schema
    orders them, without ``logit_unit`` when there are no logit effects. The card also reads like that dict
    (``card["top"]``, ``card.get("logit_unit")``, ``dict(card)``) and compares equal to it.
    """

    feature: int
    """The feature's index."""
    density: float
    """Fraction of corpus tokens where it fires (activation > 0)."""
    max_act: float
    """Largest activation seen (SAE units)."""
    mean_act: float
    """Mean activation over the tokens where it fires."""
    top: list[dict[str, Any]]
    """Top activating contexts, highest first: ``{"tokens", "acts", "center", "value"}`` each."""
    quantiles: list[dict[str, Any]]
    """Sampled contexts per band of the max, highest band first: ``{"label", "examples"}`` each."""
    histogram: dict[str, list[Any]]
    """Non-zero activations: ``{"counts", "edges"}``, one more edge than counts."""
    promoted: list[dict[str, Any]]
    """Tokens the feature promotes most, ``{"token", "value"}`` in ``logit_unit`` (empty without logit effects)."""
    suppressed: list[dict[str, Any]]
    """Tokens it suppresses most, most negative first (empty without logit effects)."""
    logit_unit: str | None = None
    """What ``promoted`` / ``suppressed`` values measure (see `analysis.logits`); None without logit effects, and
    then absent from the dict."""
    neighbours: list[dict[str, Any]]
    """Decoder cosine neighbours, ``{"feature", "cosine"}`` each (empty without geometry)."""
    label: dict[str, str] | None
    """Its explanation, ``{"text", "kind"}`` (None without labels)."""

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.logit_unit is None:
            del out["logit_unit"]
        return out

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
    return FeatureCard(
        feature=i,
        density=float(stats.density[i]),
        max_act=float(stats.max_act[i]),
        mean_act=float(stats.mean_act[i]),
        top=stats.top_examples(i),
        quantiles=stats.quantile_examples(i),
        histogram=stats.histogram(i),
        **(
            _logits(logit_effects, i, float(stats.mean_act[i]))
            if logit_effects is not None
            else {"promoted": [], "suppressed": []}
        ),
        neighbours=geometry.neighbours(i, N_NEIGHBOURS) if geometry is not None else [],
        label=labels.view(i) if labels is not None else None,
    )


def _logits(effects: LogitEffects, i: int, mean_act: float) -> dict[str, Any]:
    """The card's logit tables: logit changes at the mean activation when the effects know the final residual's
    scale, per-unit values (and their unit) otherwise."""
    if effects.final_rms is None:
        return {"promoted": effects.promoted(i), "suppressed": effects.suppressed(i), "logit_unit": effects.unit()}
    return {
        "promoted": effects.promoted(i, mean_act),
        "suppressed": effects.suppressed(i, mean_act),
        "logit_unit": effects.unit("mean act"),
    }
