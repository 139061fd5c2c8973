"""Integration tests on the real embedded Gemma 3 270M: what only a real model shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saewidgets import harvest

pytestmark = pytest.mark.gemma


def test_embedded_gemma_has_the_expected_shape(gemma):
    assert (gemma.n_layers, gemma.d_model, gemma.vocab_size) == (18, 640, 262144)
    assert gemma.resolve_layer("middle") == 9
    assert gemma.resolve_layer("late") == 12


def test_greedy_next_token_knows_where_the_golden_gate_bridge_is(gemma):
    ids = torch.tensor([gemma.encode("The Golden Gate Bridge is located in the city of")])
    with gemma.lock, torch.no_grad(), gemma.nn.trace(ids):
        logits = gemma.nn.output.logits.save()
    assert gemma.tokenizer.decode([int(logits[0, -1].argmax())]) == " San"


def test_middle_layer_harvest_is_finite_and_640_wide(gemma):
    texts = ["The Golden Gate Bridge opened in 1937.", "Le pont du Golden Gate se trouve à San Francisco."]
    acts = harvest(gemma, texts, layer="middle", progress=False)
    assert acts.acts.shape[1] == 640 and len(acts) > 10
    assert np.isfinite(acts.acts).all()
    assert acts.site == "model.layers.9"
