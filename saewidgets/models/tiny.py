"""Tiny random language models for unit tests and CI: built from a config, no download, seconds to make.

Two layouts cover the two families saewidgets must handle: GPT-2 (``transformer.h``, no BOS) and Gemma 3
(``model.layers``, BOS in front of every text). The tokenizer is a byte-level BPE trained in-process on a few
sentences, so any string tokenizes (unknown words fall back to bytes).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch

TinyLayout = Literal["gpt2", "gemma"]

_TRAINING_TEXT = [
    "The Golden Gate Bridge is a suspension bridge in San Francisco.",
    "The Eiffel Tower is in the city of Paris, in France.",
    "I went for a walk and saw the fog roll over the bay.",
    "def add(a, b):\n    return a + b\n",
    "SELECT name FROM users WHERE id = 1;",
    "Le pont est rouge. Die Brücke ist rot. El puente es rojo.",
    "She kept the secret, but honesty mattered more to her.",
    "Trains, buses and ferries carry commuters across the city every morning.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000",
]


@lru_cache(maxsize=None)
def tiny_tokenizer(layout: TinyLayout = "gpt2", vocab_size: int = 512):
    """A byte-level BPE tokenizer trained here on a few sentences, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>"] if layout == "gpt2" else ["<pad>", "<eos>", "<bos>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAINING_TEXT * 4, trainer=trainer)
    if layout == "gpt2":
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
        )
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def tiny_hf_model(layout: TinyLayout = "gpt2", *, n_layers: int = 2, d_model: int = 64, seed: int = 0):
    """A randomly initialised causal LM of the given layout and its tokenizer (``(model, tokenizer)``)."""
    import transformers

    tokenizer = tiny_tokenizer(layout)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    model: transformers.PreTrainedModel
    if layout == "gpt2":
        gpt2 = transformers.GPT2Config(
            vocab_size=vocab,
            n_positions=256,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=4,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = transformers.GPT2LMHeadModel(gpt2)
    elif layout == "gemma":
        gemma = transformers.Gemma3TextConfig(
            vocab_size=vocab,
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=d_model // 4,
            max_position_embeddings=256,
            sliding_window=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = transformers.Gemma3ForCausalLM(gemma)
    else:
        raise ValueError(f"Unknown tiny layout {layout!r}: use 'gpt2' or 'gemma'.")
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    return model.eval(), tokenizer


def tiny_model(layout: TinyLayout = "gpt2", *, n_layers: int = 2, d_model: int = 64, seed: int = 0):
    """A tiny random model of the given layout as a `ModelHandle` (for tests, CI and quick experiments)."""
    from .handle import ModelHandle

    model, tokenizer = tiny_hf_model(layout, n_layers=n_layers, d_model=d_model, seed=seed)
    return ModelHandle(model, tokenizer, name=f"tiny-{layout}")
