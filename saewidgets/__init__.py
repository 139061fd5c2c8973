"""saewidgets: find, read and steer the features sparse autoencoders extract from language models, in Jupyter.

The public API is small; each name is imported on first use so ``import saewidgets`` stays fast:

    model = saewidgets.load_model()                       # embedded offline Gemma 3 270M (or any HF model)
    acts = saewidgets.harvest(model, saewidgets.demo_corpus(), layer="late")
    sae = saewidgets.train_sae(acts, arch="topk", n_features=4096, k=32)
    stats = saewidgets.feature_stats(model, sae, acts)
    saewidgets.Explorer(model, sae, stats)                # linked widgets: map, dashboard, attribution, steering
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "saewidgets.models",
    "ModelHandle": "saewidgets.models",
    "demo_corpus": "saewidgets.corpus",
    "load_corpus": "saewidgets.corpus",
    "Corpus": "saewidgets.corpus",
    "harvest": "saewidgets.activations",
    "Activations": "saewidgets.activations",
    "harvest_to_store": "saewidgets.store",
    "ActivationStore": "saewidgets.store",
    "SAE": "saewidgets.sae",
    "SAEConfig": "saewidgets.sae",
    "train_sae": "saewidgets.sae",
    "load_sae": "saewidgets.sae",
    "save_sae": "saewidgets.sae",
    "evaluate_sae": "saewidgets.sae",
    "SAEMetrics": "saewidgets.sae",
    "SAEFileError": "saewidgets.sae",
    "SAEMismatchError": "saewidgets.sae",
    "check_compatible": "saewidgets.sae",
    "train_family": "saewidgets.sae",
    "sweep": "saewidgets.sae",
    "SAEFamily": "saewidgets.sae",
    "feature_stats": "saewidgets.analysis",
    "FeatureStats": "saewidgets.analysis",
    "logit_effects": "saewidgets.analysis",
    "attribute": "saewidgets.analysis",
    "steer": "saewidgets.analysis",
    "feature_geometry": "saewidgets.analysis",
    "map_quality": "saewidgets.analysis",
    "token_activations": "saewidgets.analysis",
    "search_contexts": "saewidgets.analysis",
    "steering_search": "saewidgets.analysis",
    "steering_vector": "saewidgets.analysis",
    "GOLDEN_GATE": "saewidgets.analysis",
    "steer_vector": "saewidgets.analysis",
    "fit_scaling_laws": "saewidgets.analysis",
    "match_features": "saewidgets.analysis",
    "joint_geometry": "saewidgets.analysis",
    "Explorer": "saewidgets.widgets",
    "demo_artifacts": "saewidgets.demo",
    "concept_features": "saewidgets.demo",
    "Cancelled": "saewidgets.cancel",
    "training_curves": "saewidgets.figures",
    "sparsity_frontier": "saewidgets.figures",
    "density_histogram": "saewidgets.figures",
    "scaling_laws": "saewidgets.figures",
}

if TYPE_CHECKING:  # what editors and type checkers see; at run time __getattr__ imports each name on first use
    from .models import ModelHandle, load_model
    from .corpus import Corpus, demo_corpus, load_corpus
    from .activations import Activations, harvest
    from .store import ActivationStore, harvest_to_store
    from .sae import (
        SAE,
        SAEConfig,
        SAEFamily,
        SAEFileError,
        SAEMetrics,
        SAEMismatchError,
        check_compatible,
        evaluate_sae,
        load_sae,
        save_sae,
        sweep,
        train_family,
        train_sae,
    )
    from .analysis import (
        GOLDEN_GATE,
        FeatureStats,
        attribute,
        feature_geometry,
        feature_stats,
        fit_scaling_laws,
        joint_geometry,
        logit_effects,
        map_quality,
        match_features,
        search_contexts,
        steer,
        steer_vector,
        steering_search,
        steering_vector,
        token_activations,
    )
    from .widgets import Explorer
    from .demo import concept_features, demo_artifacts
    from .cancel import Cancelled
    from .figures import density_histogram, scaling_laws, sparsity_frontier, training_curves

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'saewidgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
