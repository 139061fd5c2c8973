"""The embedding kept as Q8_0 codes (`saewidgets.models.q8_embedding`) gives exactly the float32 model's numbers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from saewidgets.analysis.logits import direction_logits, extreme_logits
from saewidgets.models import ModelHandle, vocab
from saewidgets.models.tiny import tiny_hf_model
from saewidgets.models.q8_embedding import (
    COMPACT_FILE,
    Q8Embedding,
    Q8Unembedding,
    decode_rows,
    encode_rows,
    split_q8_0,
    use_compact_embedding,
    write_compact_table,
)

if os.environ.get("SAEWIDGETS_REQUIRE_GEMMA"):  # CI installs the demo extra: a missing gguf must fail, not skip
    import gguf
else:
    gguf = pytest.importorskip("gguf")  # the demo extra: pip install "saewidgets[demo]"
Q8_0 = gguf.GGMLQuantizationType.Q8_0


def _quantised(weight: torch.Tensor) -> np.ndarray:
    return gguf.quants.quantize(weight.numpy(), Q8_0)


def test_decoded_rows_equal_gguf_dequantisation():
    torch.manual_seed(0)
    weight = torch.randn(300, 96) * torch.logspace(-3, 1, 300).unsqueeze(1)  # scales over four decades
    raw = _quantised(weight)
    codes, scale_bits = split_q8_0(raw)
    expected = torch.from_numpy(gguf.quants.dequantize(raw, Q8_0))
    assert torch.equal(decode_rows(codes, scale_bits), expected)
    buffer = torch.full((512, 96), torch.nan)
    assert torch.equal(decode_rows(codes[:7], scale_bits[:7], out=buffer), expected[:7])


def test_compact_modules_equal_float_embedding_and_head(monkeypatch):
    monkeypatch.setattr("saewidgets.models.q8_embedding.BLOCK_ROWS", 128)  # 8 blocks through one buffer
    torch.manual_seed(1)
    vocab_rows, d = 1000, 64
    codes, scale_bits = split_q8_0(_quantised(torch.randn(vocab_rows, d)))
    weight = decode_rows(codes, scale_bits)
    scale = torch.tensor(8.0)
    embedding = Q8Embedding(codes, scale_bits, embed_scale=scale)
    head = Q8Unembedding(embedding)
    ids = torch.tensor([[0, 5, 999], [3, 3, 42]])
    assert torch.equal(embedding(ids), torch.nn.functional.embedding(ids, weight) * scale)
    for shape in [(d,), (7, d), (2, 5, d), (300, d)]:
        hidden = torch.randn(shape)
        expected = torch.nn.functional.linear(hidden, weight)
        assert torch.equal(head(hidden), expected), shape
        blocks = [torch.nn.functional.linear(hidden, w) for _, w in head.weight_blocks(rows=256)]
        assert torch.equal(torch.cat(blocks, -1), expected)  # four blocks, the last one partial
    assert torch.equal(head.decoded_weight(), weight)
    hidden = torch.randn(3, d, requires_grad=True)  # attribution's gradient through the head
    (grad,) = torch.autograd.grad(head(hidden)[:, 7].sum() - head(hidden)[:, 900].sum(), hidden)
    assert torch.equal(grad, (weight[7] - weight[900]).expand(3, d))
    mix = torch.randn(3, vocab_rows)
    (grad,) = torch.autograd.grad((head(hidden) * mix).sum(), hidden)
    torch.testing.assert_close(grad, mix @ weight, rtol=1e-5, atol=1e-4)  # |values| ~ 30: float rounding
    assert (head.in_features, head.out_features) == (d, vocab_rows)


@pytest.fixture
def converted(tmp_path):
    """A tiny Gemma 3 saved as a float32 checkpoint whose (tied) embedding holds Q8_0 values, and a GGUF holding
    the same embedding as Q8_0 codes, as the embedded model's conversion leaves them."""
    hf, tokenizer = tiny_hf_model("gemma")
    embedding = hf.get_input_embeddings()
    raw = _quantised(embedding.weight.detach())
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(gguf.quants.dequantize(raw, Q8_0)))
    assert hf.get_output_embeddings().weight is embedding.weight
    folder = tmp_path / "checkpoint"
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, _write_gguf(tmp_path / "model.gguf", raw)


def _write_gguf(path, raw: np.ndarray):
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_tensor("token_embd.weight", raw, raw_dtype=Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _load(folder) -> torch.nn.Module:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def test_head_blocks_are_sized_for_its_device(monkeypatch):
    """The CPU's block size keeps a decoded block in cache; elsewhere (a GPU) blocks stay large: fewer launches."""
    monkeypatch.setattr("saewidgets.models.q8_embedding.BLOCK_ROWS", 64)
    monkeypatch.setattr("saewidgets.models.q8_embedding.ACCELERATOR_BLOCK_ROWS", 256)
    codes, scale_bits = split_q8_0(_quantised(torch.randn(1000, 32)))
    cpu = Q8Unembedding(Q8Embedding(codes, scale_bits))
    assert [len(w) for _, w in cpu.weight_blocks()] == [64] * 15 + [40]
    meta = Q8Unembedding(Q8Embedding(codes, scale_bits).to("meta"))  # a device that is not the CPU
    assert [len(w) for _, w in meta.weight_blocks()] == [256, 256, 256, 232]


def test_compact_model_generates_and_scores_exactly_as_the_float_one(converted, monkeypatch):
    import transformers

    folder, gguf_path = converted
    assert write_compact_table(folder, gguf_path)
    plain, compact = _load(folder), _load(folder)
    assert use_compact_embedding(compact, folder)
    assert isinstance(compact.get_output_embeddings(), Q8Unembedding)
    monkeypatch.setattr(vocab, "VOCAB_BLOCK", 37)  # several blocks, the last one partial
    monkeypatch.setattr("saewidgets.models.q8_embedding.BLOCK_ROWS", 64)  # 8 blocks, the last one partial
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    ids = torch.tensor([tokenizer("The bridge in the fog")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(compact(ids).logits, plain(ids).logits)
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(compact.generate(ids, **kwargs), plain.generate(ids, **kwargs))

    plain_handle = ModelHandle(plain, tokenizer, name="tiny-float32")
    compact_handle = ModelHandle(compact, tokenizer, name="tiny-q8")
    assert (compact_handle.d_model, compact_handle.vocab_size) == (plain_handle.d_model, plain_handle.vocab_size)
    assert torch.equal(compact_handle.unembed, plain_handle.unembed)
    directions = torch.randn(5, plain_handle.d_model)
    assert torch.equal(direction_logits(compact_handle, directions), direction_logits(plain_handle, directions))
    whole = plain_handle.unembed_product(directions)
    for handle in (plain_handle, compact_handle):  # a running top / bottom 6 over 8 head blocks, the last partial
        high_ids, high, low_ids, low = extreme_logits(handle, directions, 6)
        assert torch.equal(high, whole.topk(6).values) and torch.equal(high_ids, whole.topk(6).indices)
        assert torch.equal(low, whole.topk(6, largest=False).values)
        assert torch.equal(low_ids, whole.topk(6, largest=False).indices)
    hidden, index = torch.randn(3, 4, plain_handle.d_model), torch.tensor([[1, 60, 200]])
    assert vocab.lm_head_site(compact_handle) is not None
    assert torch.equal(
        vocab.streamed_logprob_at(compact_handle, hidden, index), vocab.streamed_logprob_at(plain_handle, hidden, index)
    )


def test_encoding_inverts_decoding_and_refuses_other_values():
    torch.manual_seed(3)
    weight = torch.randn(50, 64) * torch.logspace(-5, 1, 50).unsqueeze(1)  # float16 scales down to subnormals
    weight[4, :32] = 0  # a block of zeros has scale 0
    codes, scale_bits = split_q8_0(_quantised(weight))
    again = encode_rows(decode_rows(codes, scale_bits))
    assert torch.equal(again[0], codes) and torch.equal(again[1], scale_bits)
    with pytest.raises(ValueError, match="not Q8_0 values"):
        encode_rows(torch.randn(50, 64))


def test_compact_model_saves_and_loads_a_checkpoint_any_transformers_reads(converted, tmp_path):
    """``save_pretrained`` of the compact model writes the float32 embedding (not codes that transformers would drop
    for a random embedding); its state dict loads back into the compact model; other weights are refused."""
    folder, gguf_path = converted
    assert write_compact_table(folder, gguf_path)
    plain, compact = _load(folder), _load(folder)
    assert use_compact_embedding(compact, folder)
    state = compact.state_dict()
    assert not any("codes" in key or "scale_bits" in key for key in state)
    assert torch.equal(state["model.embed_tokens.weight"], plain.get_input_embeddings().weight)
    compact.save_pretrained(tmp_path / "saved")
    reloaded = _load(tmp_path / "saved")
    ids = torch.tensor([[2, 17, 99, 5]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, plain(ids).logits)

    codes = compact.get_input_embeddings().codes.clone()
    compact.get_input_embeddings().codes.zero_()
    compact.load_state_dict(plain.state_dict())  # strict: every key accounted for
    assert torch.equal(compact.get_input_embeddings().codes, codes)
    with torch.no_grad():
        assert torch.equal(compact(ids).logits, plain(ids).logits)
    fine_tuned = {k: v + 0.01 if k == "model.embed_tokens.weight" else v for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match="not Q8_0 values"):
        compact.load_state_dict(fine_tuned)
    without = {k: v for k, v in plain.state_dict().items() if k != "model.embed_tokens.weight"}
    with pytest.raises(RuntimeError, match="Missing key.*embed_tokens.weight"):
        compact.load_state_dict(without)
    for module in (compact.get_input_embeddings(), compact.get_output_embeddings()):
        with pytest.raises(AttributeError, match="ModelHandle.unembed"):
            getattr(module, "weight")  # noqa: B009 (the attribute access is what is tested)


def test_a_table_that_does_not_match_is_never_written_or_used(converted):
    folder, gguf_path = converted
    weight = _load(folder).get_input_embeddings().weight.detach()
    other = _write_gguf(folder.parent / "other.gguf", _quantised(weight.flip(0)))  # rows in the wrong order
    assert not write_compact_table(folder, other)
    assert not (folder / COMPACT_FILE).exists()
    model = _load(folder)
    assert not use_compact_embedding(model, folder)  # no table: the float32 embedding stays
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)

    assert write_compact_table(folder, gguf_path)
    model = _load(folder)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(2)  # the checkpoint changed after the table was written
    with pytest.warns(UserWarning, match="does not match"):
        assert not use_compact_embedding(model, folder)
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)


def test_a_half_precision_model_keeps_its_own_embedding(converted):
    folder, gguf_path = converted
    assert write_compact_table(folder, gguf_path)
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16)
    assert not use_compact_embedding(model, folder)


def test_lean_gguf_index_finds_what_gguf_reader_finds(tmp_path):
    """`read_tensors` skips the metadata (here a string array standing in for a vocabulary, scalars, a custom
    alignment) and finds every tensor's type and bytes exactly where gguf's own reader does."""
    from saewidgets.models.gguf_checkpoint import read_tensors

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_custom_alignment(64)
    writer.add_array("tokenizer.ggml.tokens", ["<pad>", "a", "ünï", "🌉"] * 50)
    writer.add_array("tokenizer.ggml.scores", [0.5, -1.0] * 100)
    writer.add_float32("gemma3.rope.freq_base", 1e6)
    torch.manual_seed(2)
    writer.add_tensor("output_norm.weight", torch.randn(64).numpy())
    writer.add_tensor("blk.0.attn_k.weight", torch.randn(3, 64).half().numpy())
    writer.add_tensor("token_embd.weight", _quantised(torch.randn(10, 64)), raw_dtype=Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    lean, reference = read_tensors(path), gguf.GGUFReader(str(path))
    assert lean.architecture == "gemma3"
    assert [t.name for t in lean.tensors] == [t.name for t in reference.tensors]
    for ours, theirs in zip(lean.tensors, reference.tensors):
        assert ours.tensor_type == theirs.tensor_type and ours.data.dtype == theirs.data.dtype
        assert ours.data.shape == theirs.data.shape and np.array_equal(ours.data, theirs.data)
    assert read_tensors(path).tensors[2].data.shape == (10, 68)  # 2 blocks of 34 bytes per row


@pytest.mark.parametrize("states_vocab_size", [False, True])
def test_metadata_copy_gives_transformers_the_same_config_without_the_tokenizers_lists(tmp_path, states_vocab_size):
    """The conversion builds the config with transformers' ``load_gguf_checkpoint`` from `metadata_copy` (no
    tokenizer lists, tensor data a hole) instead of the whole file: the same config, vocabulary size and special
    token ids included, whether or not the file states the vocabulary size itself."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from saewidgets.models.gguf_checkpoint import metadata_copy, read_tensors

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_custom_alignment(64)
    for key, value in [("block_count", 2), ("embedding_length", 64), ("feed_forward_length", 128)]:
        writer.add_uint32(f"gemma3.{key}", value)
    writer.add_uint32("gemma3.attention.head_count", 4)
    writer.add_float32("gemma3.rope.freq_base", 1e6)
    if states_vocab_size:
        writer.add_uint32("gemma3.vocab_size", 300)
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(200)])
    writer.add_array("tokenizer.ggml.scores", [0.5] * 200)
    writer.add_array("tokenizer.ggml.merges", ["t a", "t b"])
    writer.add_uint32("tokenizer.ggml.unknown_token_id", 3)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 2)
    torch.manual_seed(3)
    writer.add_tensor("output_norm.weight", torch.randn(64).numpy())
    writer.add_tensor("token_embd.weight", _quantised(torch.randn(200, 64)), raw_dtype=Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    copy = metadata_copy(path, tmp_path / "copy.gguf")
    whole, lean = (load_gguf_checkpoint(str(p), return_tensors=False)["config"] for p in (path, copy))
    assert lean == whole
    assert whole["vocab_size"] == (300 if states_vocab_size else 200) and whole["unk_token_id"] == 3
    fields = gguf.GGUFReader(str(copy)).fields
    assert not any(key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "scores", "merges")) for key in fields)
    assert [t.name for t in read_tensors(copy).tensors] == ["output_norm.weight", "token_embd.weight"]


def test_a_read_only_cache_without_the_compact_table_still_loads_with_a_warning(tmp_path, monkeypatch):
    """A cache converted before the compact table existed gets it added on load; where the folder cannot be
    written (a shared or mounted cache), loading goes on with the float32 embedding and says why."""
    from saewidgets.models import embedded

    if not embedded._has_demo_extra():
        pytest.skip("the demo extra (the embedded GGUF) is not installed")
    target = tmp_path / "models" / embedded.EMBEDDED_NAME
    target.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json"):
        (target / name).write_text("{}")
    monkeypatch.setenv("SAEWIDGETS_CACHE", str(tmp_path))

    def read_only(folder, gguf_path):
        raise PermissionError(13, "Permission denied", str(folder / COMPACT_FILE))

    monkeypatch.setattr(embedded, "write_compact_table", read_only)
    with pytest.warns(UserWarning, match="could not add the compact embedding.*Permission denied.*SAEWIDGETS_CACHE"):
        assert embedded.converted_checkpoint(progress=False) == target
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "tokenizer.json"]
