"""Automated interpretability: explanations of features, their scores, and Neuronpedia files.

    labels = explain_features(stats, PatternExplainer(), logit_effects=effects)     # offline, every feature
    search_labels(labels, "bridge")

Explainers share one interface (`Explainer`): `PatternExplainer` builds labels from the statistics alone.
"""

from .explainer import CostEstimate, Explainer, ExplainerError, Prompt
from .labels import Explanation, Labels, search_labels
from .pattern import PatternExplainer
from .records import FeatureRecord, feature_record, marked_text
from .run import estimate_cost, explain_features

__all__ = [
    "CostEstimate",
    "Explainer",
    "ExplainerError",
    "Explanation",
    "FeatureRecord",
    "Labels",
    "PatternExplainer",
    "Prompt",
    "estimate_cost",
    "explain_features",
    "feature_record",
    "marked_text",
    "search_labels",
]
