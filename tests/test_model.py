"""The model handle: layouts, layer resolution, block outputs, loading errors."""

from __future__ import annotations

import pytest
import torch

from saewidgets import load_model
from saewidgets.models import residual_of, with_residual


def test_residual_of_tensor_output_is_the_tensor_not_batch_row_zero():
    hidden = torch.randn(3, 5, 8)
    assert residual_of(hidden) is hidden


def test_residual_of_tuple_output_is_its_first_item():
    hidden = torch.randn(3, 5, 8)
    assert residual_of((hidden, "cache")) is hidden
    assert with_residual((hidden, "cache"), hidden * 2)[1] == "cache"
    assert torch.equal(with_residual(hidden, hidden * 2), hidden * 2)


@pytest.mark.parametrize(
    "name, site, bos", [("tiny-gpt2", "transformer.h.1", False), ("tiny-gemma", "model.layers.1", True)]
)
def test_tiny_models_expose_their_layout(name, site, bos):
    model = load_model(name)
    assert model.n_layers == 2 and model.d_model == 64
    assert model.site_name("middle") == site
    assert (model.bos_id is not None) == bos
    assert model.unembed.shape == (model.vocab_size, 64)
    assert model.tokenizer.padding_side == "left"


def test_layer_resolution_accepts_negative_and_middle(tiny_gemma):
    assert tiny_gemma.resolve_layer(-1) == 1
    assert tiny_gemma.resolve_layer("middle") == 1
    assert tiny_gemma.resolve_layer("late") == 1  # 2 * 2 // 3
    assert tiny_gemma.resolve_layer(0) == 0


@pytest.mark.parametrize("bad", [2, -3, 100])
def test_layer_out_of_range_names_the_valid_range(tiny_gpt2, bad):
    with pytest.raises(ValueError, match=r"0\.\.1"):
        tiny_gpt2.resolve_layer(bad)


def test_layer_of_wrong_type_is_refused(tiny_gpt2):
    with pytest.raises(TypeError):
        tiny_gpt2.resolve_layer(1.5)
    with pytest.raises(ValueError, match="middle"):
        tiny_gpt2.resolve_layer("top")


def test_logits_of_residual_match_the_model_head(tiny):
    ids = torch.tensor([tiny.encode("The Golden Gate Bridge")])
    with torch.no_grad():
        out = tiny.hf(ids, output_hidden_states=True)
    # hidden_states[-1] is already normed in HF; recompute from the last block's raw output instead
    with tiny.nn.trace(ids):
        last = residual_of(tiny.block(-1).output).save()
        logits = tiny.nn.output.logits.save()
    assert torch.allclose(tiny.logits_of_residual(last), logits, atol=1e-4)
    assert torch.allclose(logits, out.logits, atol=1e-4)


def test_loaded_hf_model_needs_its_tokenizer():
    from saewidgets.models.tiny import tiny_hf_model

    model, tokenizer = tiny_hf_model("gpt2")
    with pytest.raises(ValueError, match="tokenizer"):
        load_model(model)
    assert load_model(model, tokenizer).n_layers == 2


def test_unknown_local_model_name_says_which_names_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model folder at .*tiny-gpt2"):
        load_model(str(tmp_path / "no-such-model"))
