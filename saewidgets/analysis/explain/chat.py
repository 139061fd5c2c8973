"""Explanations from any OpenAI-compatible chat endpoint: hosted APIs, or a local vLLM, llama.cpp or ollama server.

Requests go through the ``openai`` client library (``pip install "saewidgets[explain]"``). Failures that can pass
(connection errors, timeouts, rate limits, 5xx, a reply that is not text) are retried with exponential backoff;
failures that cannot (a refused key, an unknown model, a malformed request) stop the run at once. Either way the
error says what happened and what to do.
"""

from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING, Any, cast

from .explainer import ExplainerError, Prompt
from .llm import LanguageModelExplainer

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam


class ChatExplainer(LanguageModelExplainer):
    """Explains (and judges, for scoring) through a chat-completions endpoint.

    Args:
        model: the model name the endpoint knows, e.g. ``"gpt-4o-mini"`` or ``"llama3.1:8b"``.
        base_url: the endpoint's ``/v1`` URL, e.g. ``"http://127.0.0.1:8000/v1"`` for a local vLLM server.
        api_key_env: environment variable holding the key (never pass the key itself: it would be saved with the
            notebook); ``None`` for local servers that need no key.
        max_concurrency: requests in flight at once.
        max_retries: retries of a request that failed in a way that can pass; waits ``backoff * 2**attempt``
            seconds (plus jitter) between tries.
        timeout: seconds to wait for one reply.
        max_new_tokens: reply budget of an explanation request (room to think before the last line).
        temperature: sampling temperature (0: the most likely reply).
    """

    name = "chat"
    chat = True

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        *,
        max_concurrency: int = 8,
        max_retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 60.0,
        max_new_tokens: int = 200,
        temperature: float = 0.0,
    ):
        try:
            import openai
        except ImportError as err:
            raise ImportError(
                'ChatExplainer needs the openai client: pip install "saewidgets[explain]" (or pip install openai).'
            ) from err
        if not model:
            raise ValueError("ChatExplainer needs the model name the endpoint serves, e.g. model='gpt-4o-mini'.")
        if api_key_env is None:
            key = "no-key"  # local servers accept any key; the client refuses to send none
        else:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise ValueError(
                    f"The API key is read from the environment variable ${api_key_env}, which is not set. "
                    f"Set it (os.environ[{api_key_env!r}] = ... or export {api_key_env}=...), name "
                    "another variable with api_key_env=..., or pass api_key_env=None for a local server "
                    "that needs no key."
                )
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError(
                f"max_concurrency must be >= 1 and max_retries >= 0, got {max_concurrency}, {max_retries}."
            )
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.max_concurrency, self.max_retries, self.backoff = max_concurrency, max_retries, backoff
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self._openai = openai
        self._client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "base_url": self.base_url, "temperature": self.temperature}

    def __repr__(self) -> str:
        return f"ChatExplainer(model={self.model!r}, base_url={self.base_url!r})"

    def complete(self, prompt: Prompt, max_tokens: int) -> str:
        errors = self._openai
        # Plain role/content dicts, which openai types as a union of TypedDicts a dict[str, str] cannot name.
        messages = cast("list[ChatCompletionMessageParam]", prompt.messages())
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, temperature=self.temperature
                )
            except errors.AuthenticationError as err:
                key = f"from ${self.api_key_env}" if self.api_key_env else "(none: api_key_env=None)"
                raise ExplainerError(
                    f"{self.base_url} refused the API key {key} (HTTP {err.status_code}): check the "
                    "key, or that it is the key of this endpoint."
                ) from None
            except (
                errors.PermissionDeniedError,
                errors.NotFoundError,
                errors.BadRequestError,
                errors.UnprocessableEntityError,
            ) as err:
                raise ExplainerError(
                    f"{self.base_url} rejected the request for model {self.model!r} (HTTP "
                    f"{err.status_code}): {_message(err)}. Check the model name and base_url."
                ) from None
            except (
                errors.APIConnectionError,
                errors.RateLimitError,
                errors.InternalServerError,
                errors.APIStatusError,
            ) as err:
                failure = _describe(err, self.base_url)
            else:
                text = _reply_text(response)
                if text is not None:
                    return text
                failure = f"{self.base_url} sent a reply that is not text: {str(response)[:200]!r}"
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2**attempt * (1 + 0.25 * random.random()))
        raise ExplainerError(
            f"{failure} (after {self.max_retries + 1} tries). Check that the server runs and "
            "answers OpenAI chat-completion requests at this base_url."
        )


def _reply_text(response: Any) -> str | None:
    """The text of a chat-completions reply, or None when the reply does not hold any."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError, KeyError):
        return None
    return content if isinstance(content, str) and content.strip() else None


def _message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        body = body.get("error", body)
        if isinstance(body, dict):
            body = body.get("message", body)
    return str(body or err)[:300]


def _describe(err: Any, base_url: str) -> str:
    status = getattr(err, "status_code", None)
    if status is None:
        return f"Could not reach {base_url} ({type(err).__name__}: {err})"
    return f"{base_url} kept failing (HTTP {status}: {_message(err)})"
