"""The interface every explainer shares, and what a run costs before it starts.

An explainer turns a `FeatureRecord` into a short text. `explain_features` calls ``explain`` for each feature,
``max_concurrency`` at a time, and records ``kind``, ``name``, ``model`` and the hash of ``prompt(record)`` with
each result. Language-model explainers (`LanguageModelExplainer`) also answer the scorers' questions through
``complete``, so a model that explains can score too (delphi's detection and fuzzing).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from .records import FeatureRecord

PROMPT_VERSION = 1  # bump when a prompt's wording changes: cached explanations of older prompts are not reused


class ExplainerError(RuntimeError):
    """An explainer could not do its job (endpoint unreachable, key refused, reply unusable): nothing was kept
    for the feature that failed."""


@dataclass(frozen=True)
class Prompt:
    """One request to a language model, in both forms: chat messages for instruction-tuned endpoints and a single
    completion text for base models (which continue text rather than follow instructions)."""

    system: str
    user: str
    completion: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


@dataclass(frozen=True)
class CostEstimate:
    """Tokens a run will send and at most receive (prompt tokens counted by the explainer's ``count_tokens``)."""

    n_requests: int
    prompt_tokens: int
    max_completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.max_completion_tokens

    def __str__(self) -> str:
        return (
            f"{self.n_requests:,} requests, ~{self.prompt_tokens:,} prompt tokens + at most "
            f"{self.max_completion_tokens:,} completion tokens"
        )


def hash_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Explainer(ABC):
    """Makes one explanation per feature. Subclasses set ``kind`` ("pattern" or "llm"), ``name`` and ``model``."""

    kind: str = "llm"
    name: str = ""
    model: str = ""
    max_concurrency: int = 1
    max_new_tokens: int = 0

    @abstractmethod
    def prompt(self, record: FeatureRecord) -> Prompt:
        """The request ``explain`` makes for ``record`` (its hash is recorded with the explanation)."""

    @abstractmethod
    def explain(self, record: FeatureRecord) -> str:
        """The explanation of ``record``'s feature; raises `ExplainerError` when none can be had."""

    def settings(self) -> dict[str, Any]:
        """Everything besides the prompt that changes the explanations (part of the cache key)."""
        return {}

    def cache_key(self) -> str:
        """A short hash naming this explainer's results in a cache (kind, name, model, settings, prompt version)."""
        blob = json.dumps([self.kind, self.name, self.model, self.settings(), PROMPT_VERSION], sort_keys=True)
        return hash_text(blob)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` for cost estimates; without a tokenizer, ~4 characters per token."""
        return max(1, len(text) // 4)

    def estimate(self, records: list[FeatureRecord]) -> CostEstimate:
        """What explaining ``records`` will cost, before anything is sent."""
        prompt = sum(self.count_tokens(self._request_text(self.prompt(r))) for r in records)
        return CostEstimate(len(records), prompt, len(records) * self.max_new_tokens)

    def _request_text(self, prompt: Prompt) -> str:
        return prompt.system + "\n" + prompt.user

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"
