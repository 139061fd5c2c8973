"""Labels reach the views as plain data: the feature card, the dashboard header, the map's hover and search, the
static page; an LLM label replaces a pattern label and the view says which kind it shows."""

from __future__ import annotations


import pytest
import torch
from test_widgets_static import unpack_cards

from saewidgets.activations import harvest
from saewidgets.analysis import (
    feature_card,
    feature_geometry,
    feature_stats,
    logit_effects,
)
from saewidgets.analysis.explain import (
    Explanation,
    Labels,
    PatternExplainer,
    explain_features,
)
from saewidgets.models.tiny import _TRAINING_TEXT
from saewidgets.sae import SAE, SAEConfig
from saewidgets.widgets import Explorer
from saewidgets.widgets.static_html import page_data


@pytest.fixture(scope="module")
def labelled(tiny_gpt2, tmp_path_factory):
    model = tiny_gpt2
    sae = SAE(
        SAEConfig(d_in=model.d_model, n_features=24, architecture="topk", k=4, layer=1),
        generator=torch.Generator().manual_seed(1),
    ).eval()
    stats = feature_stats(
        model, sae, harvest(model, _TRAINING_TEXT, 1, progress=False), top_k=4, context=(3, 2), progress=False
    )
    effects = logit_effects(model, sae, k=3, progress=False)
    geometry = feature_geometry(sae, cache_dir=tmp_path_factory.mktemp("geometry"))
    pattern = explain_features(stats, PatternExplainer(), logit_effects=effects, progress=False)
    llm = Labels(stats.fingerprint, [Explanation(3, "<b>zeppelins</b> & airships", "llm", "chat", "m", "h", "t")])
    labels = pattern.merged(llm)
    ex = Explorer(model, sae, stats, geometry, effects, labels=labels, selected=3, background=False)
    return ex, stats, labels


def test_every_feature_card_carries_its_label_and_kind(labelled):
    ex, stats, labels = labelled
    assert len(labels) == stats.n_features
    assert ex.dashboard.card["label"] == {"text": "<b>zeppelins</b> & airships", "kind": "llm"}
    assert feature_card(stats, 0, labels=labels)["label"]["kind"] == "pattern"
    assert feature_card(stats, 0)["label"] is None
    with pytest.raises(ValueError, match="labels"):
        feature_card(stats, 0, labels=Labels("another-sae"))


def test_map_hover_and_search_see_the_labels(labelled):
    ex, stats, _ = labelled
    assert len(ex.map.labels) == stats.n_features
    assert ex.map.labels[3] == "LLM: <b>zeppelins</b> & airships" and ex.map.labels[0].startswith("pattern: ")
    ex.map.query = "zeppelins"
    assert ex.map.search_results[0] == 3


def test_static_page_carries_labels_escaped(labelled):
    ex, stats, _ = labelled
    doc = ex.to_html()
    assert "<b>zeppelins</b>" not in doc  # untrusted text never becomes markup
    data = page_data(doc)
    cards = unpack_cards(data["cards"])
    assert cards[3]["label"] == {"text": "<b>zeppelins</b> & airships", "kind": "llm"}
    assert all(card["label"]["text"] for card in cards.values())
    state = data["views"][0]["state"]
    assert state["map_labels"][3].startswith("LLM: ") and len(state["map_labels"]) == stats.n_features
    assert "llm label:" in ex.dashboard._fallback_html()
