"""The Explorer wired to the real analysis functions on a tiny random model (no mocks): every default callback
(feature_card, steer, attribute, token_activations, search_contexts) runs and lands in its view."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from saewidgets.activations import harvest
from saewidgets.analysis import DEFAULT_CLAMP_MULTIPLE, feature_geometry, feature_stats, logit_effects
from saewidgets.models.tiny import _TRAINING_TEXT
from saewidgets.sae import SAE, SAEConfig
from saewidgets.widgets import Explorer, SteeringPanel
from saewidgets.widgets.static_html import page_data

LAYER = 1


@pytest.fixture(scope="module")
def wired(tiny_gpt2, tmp_path_factory):
    model = tiny_gpt2
    sae = SAE(
        SAEConfig(d_in=model.d_model, n_features=48, architecture="topk", k=6, layer=LAYER),
        generator=torch.Generator().manual_seed(0),
    ).eval()
    acts = harvest(model, _TRAINING_TEXT, LAYER, progress=False)
    stats = feature_stats(model, sae, acts, top_k=4, context=(3, 2), n_bins=8, progress=False)
    geometry = feature_geometry(sae, cache_dir=tmp_path_factory.mktemp("geometry"))
    effects = logit_effects(model, sae, k=3, progress=False)
    ex = Explorer(
        model,
        sae,
        stats,
        geometry,
        effects,
        prompt="The Eiffel Tower is in the city of",
        text="The bridge is red.",
        background=False,
    )
    return ex, stats


def test_explorer_opens_on_the_densest_feature_with_its_real_card(wired):
    ex, stats = wired
    i = int(np.argmax(np.asarray(stats.density)))
    assert ex.selected == i and ex.dashboard.card["feature"] == i
    assert ex.dashboard.card["top"] and ex.dashboard.card["neighbours"] and ex.dashboard.card["promoted"]
    assert ex.map.highlight == [n["feature"] for n in ex.dashboard.card["neighbours"]]


def test_explorer_defaults_run_steer_attribute_heatmap_and_search(wired):
    ex, _ = wired
    ex.select(5)
    assert ex.steering.multiple == DEFAULT_CLAMP_MULTIPLE == SteeringPanel().multiple
    ex.steering.multiple = 8.0
    assert ex.steering.generate(wait=True), ex.steering.error
    assert ex.steering.error == "" and len(ex.steering.steered_texts) == 1 and len(ex.steering.default_texts) == 1
    assert ex.attribution.attribute("", wait=True)  # the model's own top token
    assert ex.attribution.error == "" and ex.attribution.rows and ex.attribution.tokens
    ex.tab = "heatmap"
    assert ex.heatmap.features[0] == 5 and ex.heatmap.acts_shape[0] == len(ex.heatmap.tokens) > 0
    word = ex.dashboard.card["top"][0]["tokens"][ex.dashboard.card["top"][0]["center"]].strip() or "the"
    ex.map.query = word
    assert ex.map.search_results or "No features match" in ex.map.message


def test_real_explorer_exports_a_static_page(wired, tmp_path):
    ex, stats = wired
    doc = ex.to_html()
    data = page_data(doc)
    assert data["cards"]["features"] == list(range(stats.n_features))  # every card embedded (compressed)
