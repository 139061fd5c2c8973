"""Explanations from a Hugging Face causal LM run here through transformers (no server, no network).

A base model (such as the embedded Gemma 3 270M) gets completion-style prompts with a worked example and is read
up to the end of its first line; a model whose tokenizer has a chat template gets the chat messages through it.
Generation is greedy, so the same model and prompt give the same explanation.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import torch

from .explainer import ExplainerError, Prompt
from .llm import LanguageModelExplainer


class LocalExplainer(LanguageModelExplainer):
    """Explains (and judges, for scoring) with a local causal LM.

    Args:
        model: a `ModelHandle` (e.g. ``load_model()``: the embedded Gemma) or a Hugging Face model id / folder.
        chat: use the tokenizer's chat template (default: when it has one) instead of completion prompts.
        max_new_tokens: tokens generated for an explanation.
    """

    name = "local"

    def __init__(self, model: Any, *, chat: bool | None = None, max_new_tokens: int = 24):
        if isinstance(model, str):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._hf = AutoModelForCausalLM.from_pretrained(model).eval()
            self._tokenizer = AutoTokenizer.from_pretrained(model)
            self._lock: Any = threading.RLock()
            self.model = model
        elif hasattr(model, "hf") and hasattr(model, "tokenizer"):
            if getattr(model, "remote", False):
                raise ValueError(
                    "LocalExplainer generates with the model's weights here, but this model runs on "
                    "NDIF: load it locally, or use ChatExplainer with a served model."
                )
            self._hf, self._tokenizer, self._lock, self.model = model.hf, model.tokenizer, model.lock, model.name
        else:
            raise TypeError(
                f"LocalExplainer takes a ModelHandle or a Hugging Face model id, got {type(model).__name__}."
            )
        has_template = bool(getattr(self._tokenizer, "chat_template", None))
        self.chat = has_template if chat is None else chat
        if self.chat and not has_template:
            raise ValueError(
                f"chat=True, but the tokenizer of {self.model} has no chat template: it is a base model; "
                "leave chat=None to give it completion prompts."
            )
        self.max_new_tokens = max_new_tokens

    def _ids(self, prompt: Prompt) -> torch.Tensor:
        if self.chat:
            encoded = self._tokenizer.apply_chat_template(
                prompt.messages(), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            assert isinstance(encoded, Mapping), "return_dict=True gives the tokenizer's BatchEncoding"
            ids = encoded["input_ids"]
        else:
            ids = self._tokenizer(prompt.completion, return_tensors="pt")["input_ids"]
        return ids.to(next(self._hf.parameters()).device)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def complete(self, prompt: Prompt, max_tokens: int) -> str:
        ids = self._ids(prompt)
        limit = getattr(self._hf.config, "max_position_embeddings", None)
        if limit is not None and ids.shape[1] + max_tokens > limit:
            raise ExplainerError(
                f"The prompt is {ids.shape[1]:,} tokens but {self.model} reads at most {limit:,}: "
                "show fewer or shorter contexts."
            )
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self._tokenizer.eos_token_id
        with self._lock:
            out = self._hf.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad
            )
        return self._tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)[0]
