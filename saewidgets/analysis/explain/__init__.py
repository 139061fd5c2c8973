"""Automated interpretability: explanations of features, their scores, and Neuronpedia files.

    labels = explain_features(stats, PatternExplainer(), logit_effects=effects)     # offline, every feature
    search_labels(labels, "bridge")

    chat = ChatExplainer("gpt-4o-mini", base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY")
    labels = labels.merged(explain_features(stats, chat, features=[3, 14], cache_dir="labels-cache"))

Explainers share one interface (`Explainer`): `PatternExplainer` builds labels from the statistics alone;
`ChatExplainer` asks any OpenAI-compatible endpoint (needs ``pip install "saewidgets[explain]"``);
`LocalExplainer` runs a transformers causal LM here. `score_explanations` scores them on `held_out_examples`
(delphi's detection and fuzzing); `export_neuronpedia` / `import_neuronpedia_explanations` speak Neuronpedia.
"""

from .chat import ChatExplainer
from .explainer import CostEstimate, Explainer, ExplainerError, Prompt
from .labels import Explanation, Labels, search_labels
from .local import LocalExplainer
from .neuronpedia import (
    export_neuronpedia,
    import_neuronpedia_explanations,
    read_neuronpedia_dashboards,
)
from .pattern import PatternExplainer
from .records import FeatureRecord, feature_record, marked_text
from .run import cached_labels, estimate_cost, explain_features
from .scoring import Scores, ScoringExamples, held_out_examples, score_explanations

__all__ = [
    "ChatExplainer",
    "CostEstimate",
    "Explainer",
    "ExplainerError",
    "Explanation",
    "FeatureRecord",
    "Labels",
    "LocalExplainer",
    "PatternExplainer",
    "Prompt",
    "Scores",
    "ScoringExamples",
    "cached_labels",
    "estimate_cost",
    "explain_features",
    "export_neuronpedia",
    "feature_record",
    "held_out_examples",
    "import_neuronpedia_explanations",
    "marked_text",
    "read_neuronpedia_dashboards",
    "score_explanations",
    "search_labels",
]
