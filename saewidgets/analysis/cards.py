"""The feature card: one JSON-able dict per feature, the contract between analysis and the dashboard widget.

Schema (every number a plain float/int, every token a raw string: escape it before it becomes HTML)::

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

from typing import TYPE_CHECKING, Any, TypedDict, cast

from .geometry import FeatureGeometry
from .logits import LogitEffects
from .stats import FeatureStats

if TYPE_CHECKING:
    from .explain.labels import Labels

N_NEIGHBOURS = 10


class _CardBody(TypedDict):
    """The keys every card has."""

    feature: int
    density: float
    max_act: float
    mean_act: float
    top: list[dict[str, Any]]
    quantiles: list[dict[str, Any]]
    histogram: dict[str, list[Any]]
    promoted: list[dict[str, Any]]
    suppressed: list[dict[str, Any]]
    neighbours: list[dict[str, Any]]
    label: dict[str, str] | None


class FeatureCard(_CardBody, total=False):
    """A feature card as a type (the schema in this module's docstring): still a plain dict, because it is the JSON
    the dashboard's JavaScript and the static page read."""

    logit_unit: str
    """Present with logit effects."""


def feature_card(
    stats: FeatureStats,
    i: int,
    logit_effects: LogitEffects | None = None,
    geometry: FeatureGeometry | None = None,
    labels: Labels | None = None,
) -> FeatureCard:
    """Everything the dashboard shows about feature ``i`` (schema in the module docstring)."""
    i = stats.check_feature(i)
    for other, what in ((logit_effects, "logit effects"), (geometry, "geometry"), (labels, "labels")):
        if other is not None and other.fingerprint != stats.fingerprint:
            raise ValueError(
                f"The {what} were computed for SAE {other.fingerprint} but the statistics for "
                f"{stats.fingerprint}: compute both for the same SAE."
            )
    return cast(
        FeatureCard,
        {
            "feature": i,
            "density": float(stats.density[i]),
            "max_act": float(stats.max_act[i]),
            "mean_act": float(stats.mean_act[i]),
            "top": stats.top_examples(i),
            "quantiles": stats.quantile_examples(i),
            "histogram": stats.histogram(i),
            **(
                _logits(logit_effects, i, float(stats.mean_act[i]))
                if logit_effects is not None
                else {"promoted": [], "suppressed": []}
            ),
            "neighbours": geometry.neighbours(i, N_NEIGHBOURS) if geometry is not None else [],
            "label": labels.view(i) if labels is not None else None,
        },
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
