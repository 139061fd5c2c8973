"""An SAE is used only with the model and layer it was trained on, unless the caller says otherwise on purpose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saewidgets import analysis, harvest
from saewidgets.models import tiny_model
from saewidgets.analysis.steering import steer_each
from saewidgets.sae import SAE, SAEConfig, SAEMismatchError, check_compatible, evaluate_sae
from saewidgets.sae.provenance import same_model

TEXTS = ["The Golden Gate Bridge is a suspension bridge in San Francisco.", "Le pont est rouge. Die Brücke ist rot."]


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2")


def sae_of(model_name: str = "tiny-gpt2", layer: int | None = 1) -> SAE:
    return SAE(
        SAEConfig(d_in=64, n_features=32, k=4, model_name=model_name, layer=layer), torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize(
    "recorded, in_use, same",
    [
        ("google/gemma-2-2b", "gemma-2-2b", True),
        ("gemma-2-2b", "/models/gemma-2-2b/", True),
        ("gpt2-small", "gpt2", True),
        ("GPT2", "openai-community/gpt2", True),
        ("tiny-gemma", "tiny-gpt2", False),
        ("gemma-2-2b", "gemma-2-9b", False),
    ],
)
def test_model_names_match_across_hub_ids_local_folders_and_saelens_aliases(recorded, in_use, same):
    assert same_model(recorded, in_use) is same


def test_every_analysis_refuses_another_model_and_each_can_be_told_to_proceed(model):
    foreign = sae_of("tiny-gemma")
    acts = harvest(model, TEXTS, layer=1, progress=False)
    stats = analysis.feature_stats(model, foreign, acts, top_k=1, progress=False, check_provenance=False)
    calls = {
        "token_activations": lambda **kw: analysis.token_activations(model, foreign, "The bridge", [0], **kw),
        "steer": lambda **kw: analysis.steer(
            model, foreign, "The bridge", {0: 1.0}, units="activation", max_new_tokens=1, **kw
        ),
        "attribute": lambda **kw: analysis.attribute(model, foreign, "The bridge", **kw),
        "feature_stats": lambda **kw: analysis.feature_stats(model, foreign, acts, top_k=1, progress=False, **kw),
        "features_active_on": lambda **kw: analysis.features_active_on(model, foreign, "The bridge", **kw),
        "contrastive_search": lambda **kw: analysis.contrastive_search(model, foreign, "a bridge", "a cat", **kw),
        "steer_each": lambda **kw: steer_each(
            model, foreign, "The bridge", [{0: 1.0}], units="activation", max_new_tokens=1, **kw
        ),
        "steering_search": lambda **kw: analysis.steering_search(
            model, foreign, stats, "bridge", candidates=2, shortlist=1, max_new_tokens=1, progress=False, **kw
        ),
    }
    for name, call in calls.items():
        with pytest.raises(SAEMismatchError, match=r"trained on 'tiny-gemma' but the model in use is 'tiny-gpt2'"):
            call()
        assert call(check_provenance=False) is not None, name


def test_another_layer_is_refused_and_numpy_layers_are_block_numbers(model):
    sae = sae_of(layer=1)
    with pytest.raises(SAEMismatchError, match=r"trained on layer 1 but layer=0 reads layer 0"):
        analysis.token_activations(model, sae, "The bridge", [0], layer=np.int64(0))
    assert check_compatible(sae, model, np.int64(1)) == 1
    assert check_compatible(sae, model, torch.tensor(-1)) == 1  # counted from the end: the same block
    assert check_compatible(sae, model, 0, check_provenance=False) == 0
    with pytest.raises(TypeError, match=r"layer must be an int, 'middle' or 'late', got float \(1\.0\)"):
        check_compatible(sae, model, 1.0)


def test_activations_from_another_model_or_layer_are_refused(model):
    sae = sae_of(layer=1)
    layer0 = harvest(model, TEXTS, layer=0, progress=False)
    with pytest.raises(SAEMismatchError, match=r"read at layer 0 but the SAE reads layer 1"):
        evaluate_sae(sae, layer0)
    with pytest.raises(SAEMismatchError, match=r"read at layer 0 but the SAE reads layer 1"):
        analysis.feature_stats(model, sae, layer0, progress=False)
    assert evaluate_sae(sae, layer0, check_provenance=False).n_tokens == len(layer0)
    layer1 = harvest(model, TEXTS, layer=1, progress=False)
    layer1.model_name = "tiny-gemma"
    with pytest.raises(SAEMismatchError, match=r"read from 'tiny-gemma' but the SAE is used with 'tiny-gpt2'"):
        analysis.feature_stats(model, sae, layer1, progress=False)


def test_an_sae_that_records_nothing_runs_anywhere(model):
    """Gemma Scope files record neither model nor layer: nothing to enforce, the layer must be given."""
    anonymous = sae_of("", layer=None)
    with pytest.raises(ValueError, match=r"does not record the layer.*pass layer="):
        analysis.token_activations(model, anonymous, "The bridge", [0])
    assert analysis.token_activations(model, anonymous, "The bridge", [0], layer=0).features == [0]
