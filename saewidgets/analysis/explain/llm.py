"""What the language-model explainers share: explaining and judging through one ``complete`` call.

A subclass only says how to send a `Prompt` and get text back (``complete``) and whether its model follows chat
instructions (``chat``) or continues text (a base model). Explaining and the scorers' questions are built here, so
the chat endpoint and the local model explain and score the same way.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .explainer import Explainer, ExplainerError, Prompt
from .prompts import (
    explanation_prompt,
    judge_prompt,
    parse_explanation,
    parse_judgements,
)
from .records import FeatureRecord


class LanguageModelExplainer(Explainer):
    """An explainer backed by a language model (``kind = "llm"``).

    ``chat``: the model follows instructions (chat messages); otherwise it is a base model, sent completion text.
    ``judge_batch_size``: examples per scoring request in chat form (a base model is asked one at a time).
    """

    kind = "llm"
    chat: bool = True
    judge_batch_size: int = 5

    @abstractmethod
    def complete(self, prompt: Prompt, max_tokens: int) -> str:
        """The model's reply to ``prompt`` (at most ``max_tokens`` tokens); `ExplainerError` when there is none."""

    def settings(self) -> dict[str, Any]:
        return {"chat": self.chat, "max_new_tokens": self.max_new_tokens}

    def _request_text(self, prompt: Prompt) -> str:
        return prompt.system + "\n" + prompt.user if self.chat else prompt.completion

    def prompt(self, record: FeatureRecord) -> Prompt:
        return explanation_prompt(record)

    def explain(self, record: FeatureRecord) -> str:
        if not record.fires:
            raise ExplainerError(f"Feature {record.feature} never fires: there is nothing to show a language model.")
        reply = self.complete(self.prompt(record), self.max_new_tokens)
        text = parse_explanation(reply, completion=not self.chat)
        if not text:
            raise ExplainerError(
                f"{self!r} replied to the explanation request for feature {record.feature} with no "
                f"explanation: {reply[:200]!r}."
            )
        return text

    def judge(self, task: str, explanation: str, texts: list[str]) -> list[int | None]:
        """For each text, 1 if the model judges it to fit ``explanation`` (``task`` "detection": the text has the
        feature; "fuzzing": its marked tokens are what the feature fires on), 0 if not, None if it did not say."""
        if self.chat:
            out: list[int | None] = []
            for start in range(0, len(texts), self.judge_batch_size):
                batch = texts[start : start + self.judge_batch_size]
                reply = self.complete(judge_prompt(task, explanation, batch), 8 + 4 * len(batch))
                out += parse_judgements(reply, len(batch), completion=False)
            return out
        return [
            parse_judgements(self.complete(judge_prompt(task, explanation, [t]), 2), 1, completion=True)[0]
            for t in texts
        ]
