"""Feature analysis: plain functions over a model, an SAE and a corpus; results are small frozen dataclasses
(``to_dict()`` for JSON; result rows also read like the dicts they replaced, ``hit["feature"]``).

    stats = feature_stats(model, sae, acts)              # top contexts, bands, histograms (one streaming pass)
    card = feature_card(stats, i, logit_effects(model, sae), feature_geometry(sae))
    attribute(model, sae, "The Eiffel Tower is in the city of", target=" Paris").top(10)
    search_contexts(stats, "Golden Gate")
    hit = steering_search(model, sae, stats, "Golden Gate", terms=GOLDEN_GATE.terms, multiples=(1, 1.5, 2))[0]
    steer(model, sae, "I went for a walk and saw", hit.clamps, stats=stats)  # at the strength its trials chose
    vector = steering_vector(acts, [i for i, d in enumerate(corpus.documents) if d.topic == "golden_gate"])
    steer_vector(model, "I went for a walk and saw", vector, alpha=0.5)  # DiffMean, the baseline to beat

Nothing here imports widgets; widgets render these results.
"""

from .attribution import Attribution, attribute
from .cards import FeatureCard, feature_card
from .geometry import FeatureGeometry, MapQuality, feature_geometry, map_quality
from .logits import LogitEffects, logit_effects
from .output_score import (
    DEFAULT_CONFIRM,
    DEFAULT_FAMILY,
    DEFAULT_PROMOTERS,
    SteeringCandidate,
    output_scores,
    promoting_features,
    steering_candidates,
    steering_search,
)
from .results import (
    ActiveFeature,
    AttributedFeature,
    ContextExample,
    ContextHit,
    ContrastHit,
    FeatureLabel,
    Histogram,
    LabelHit,
    Neighbour,
    PositionAttribution,
    QuantileBand,
    SteeringExample,
    TokenLogit,
)
from .search import contrastive_search, features_active_on, search_contexts
from .stats import FeatureStats, feature_stats
from .steering import DEFAULT_CLAMP_MULTIPLE, DEFAULT_REPETITION_PENALTY, SteeringResult, generate, steer, steer_vector
from .steering_judge import FluencyThreshold, SteeringJudgement, calibrate_fluency, judge_steering, mentions
from .steering_sets import CONCEPTS, CONFIRMATION_PROMPTS, GOLDEN_GATE, SELECTION_PROMPTS, SteeringConcept
from .diffmean import SteeringVector, steering_vector
from .tokens import TokenActivations, token_activations
from .scaling import PowerLaw, ScalingFit, fit_scaling_laws
from .splitting import FeatureTree, JointGeometry, joint_geometry, match_features

__all__ = [
    "CONCEPTS",
    "DEFAULT_CLAMP_MULTIPLE",
    "DEFAULT_CONFIRM",
    "DEFAULT_FAMILY",
    "DEFAULT_PROMOTERS",
    "DEFAULT_REPETITION_PENALTY",
    "ActiveFeature",
    "AttributedFeature",
    "Attribution",
    "ContextExample",
    "ContextHit",
    "ContrastHit",
    "FeatureLabel",
    "Histogram",
    "LabelHit",
    "Neighbour",
    "PositionAttribution",
    "QuantileBand",
    "TokenLogit",
    "FeatureCard",
    "FeatureGeometry",
    "FeatureTree",
    "JointGeometry",
    "PowerLaw",
    "ScalingFit",
    "FeatureStats",
    "FluencyThreshold",
    "GOLDEN_GATE",
    "LogitEffects",
    "MapQuality",
    "CONFIRMATION_PROMPTS",
    "SELECTION_PROMPTS",
    "SteeringCandidate",
    "SteeringConcept",
    "SteeringJudgement",
    "SteeringExample",
    "SteeringResult",
    "SteeringVector",
    "TokenActivations",
    "attribute",
    "calibrate_fluency",
    "contrastive_search",
    "feature_card",
    "fit_scaling_laws",
    "joint_geometry",
    "match_features",
    "feature_geometry",
    "feature_stats",
    "features_active_on",
    "generate",
    "judge_steering",
    "logit_effects",
    "map_quality",
    "mentions",
    "output_scores",
    "promoting_features",
    "search_contexts",
    "steer",
    "steer_vector",
    "steering_candidates",
    "steering_search",
    "steering_vector",
    "token_activations",
]
