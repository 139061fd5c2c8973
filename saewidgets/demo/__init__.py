"""The demo as one subpackage: what ``saewidgets demo``, the tutorials, Binder and the integration tests share.

- `settings` — `DemoSettings` (the cache key), the `FULL` and `QUICK` runs, `settings_from_env`;
- `pipeline` — `demo_artifacts`: model -> harvest -> SAE -> statistics -> metrics -> logit effects -> labels, cached
  (the feature map on first use of ``.geometry``, the model on first use of ``.model``: `LazyModel`); `demo_sae`:
  its first stages alone (harvest, SAE, statistics);
- `reader_writer` — `concept_features`: the tutorials' reader, writer and control feature for a concept;
  `checked_reader`: a context hit checked by its top contexts and its logits (the Explorer's bookmarks);
- `writer_search` — `STEERING_SEARCH` (the README's steering recipe, written out) and `writer_search`: its hits for
  a concept on the demo SAE, searched once and cached (the steering example's and the writer's);
- `examples` — bookmarked concept features (`highlight_features`) and the steering example (`steering_examples`);
- `page` — `write_explorer`: the self-contained Explorer page; `page_examples`: its model work, done before it and cached;
- `run` — `run_demo`: the ``saewidgets demo`` command from start to finish.
"""

from __future__ import annotations

from .reader_writer import ConceptFeatures, ReaderCheck, checked_reader, concept_features
from .examples import STEERING_CONCEPT, STEERING_PROMPTS, highlight_features, missing_highlights, steering_examples
from .page import PageExamples, page_examples, write_explorer
from .pipeline import DemoArtifacts, DemoSAE, demo_artifacts, demo_sae
from .settings import FULL, QUICK, SETTINGS_ENV, DemoSettings, settings_from_env

__all__ = [
    "FULL",
    "QUICK",
    "SETTINGS_ENV",
    "STEERING_CONCEPT",
    "STEERING_PROMPTS",
    "ConceptFeatures",
    "DemoArtifacts",
    "DemoSAE",
    "DemoSettings",
    "PageExamples",
    "ReaderCheck",
    "checked_reader",
    "concept_features",
    "demo_artifacts",
    "demo_sae",
    "highlight_features",
    "missing_highlights",
    "page_examples",
    "settings_from_env",
    "steering_examples",
    "write_explorer",
]
