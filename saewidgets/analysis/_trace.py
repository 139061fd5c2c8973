"""The few nnsight traces analysis needs: residuals of a prompt, and logits with the residual edited.

Every trace holds ``model.lock`` (widget callbacks run on threads; one model must not be traced concurrently).
The envoys a trace body uses are bound to locals before the ``with``: a remote (NDIF) trace serializes every
object its body references, and the `ModelHandle` itself (which holds a lock) cannot be serialized.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..models.handle import ModelHandle, residual_of, with_residual
from ..models.vocab import lm_head_site, logprob_at, streamed_logprob_at
from ._common import content_mask, encode_rows, prompt_ids

if TYPE_CHECKING:
    from ..sae import SAE


def residuals(
    model: ModelHandle, ids: torch.Tensor, layer: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The residual stream after block ``layer``, ``[B, T, d]`` float32 on CPU; the trace stops there."""
    from nnsight import save  # `.save()` as a function: nnsight mounts the method at run time, unseen by mypy

    inputs: Any = ids if attention_mask is None else {"input_ids": ids, "attention_mask": attention_mask}
    block = model.block(layer)
    with model.lock, torch.no_grad(), model.nn.trace(inputs, **model.trace_kwargs) as tracer:
        hidden = save(residual_of(block.output))
        tracer.stop()
    return hidden.detach().float().cpu()


def last_logits_with_delta(model: ModelHandle, ids: torch.Tensor, layer: int, delta: torch.Tensor) -> torch.Tensor:
    """Last-position logits ``[B, vocab]`` of ``ids [1, T]`` repeated per row of ``delta [B, T, d]``, with
    ``delta[b]`` added to the residual after block ``layer`` in row ``b`` (one batched trace)."""
    batch = ids.expand(len(delta), -1)
    delta = delta.to(model.device)
    nn, block = model.nn, model.block(layer)
    with model.lock, torch.no_grad(), nn.trace(batch, **model.trace_kwargs):
        out = block.output
        hidden = residual_of(out)
        block.output = with_residual(out, hidden + delta.to(hidden.dtype))
        logits = nn.output.logits[:, -1, :].save()
    return logits.detach().float().cpu()


def token_logprob_with_delta(
    model: ModelHandle,
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int,
    delta: torch.Tensor,
    token_ids: list[int],
) -> torch.Tensor:
    """Log of the next-token probability that falls on any of ``token_ids``, at every position: ``[B, T]``.

    ``ids``/``attention_mask [P, T]`` are repeated ``B // P`` times to match ``delta [B, T, d]``, which is added to
    the residual after block ``layer`` (one batched trace). Only the ``[B, T]`` result leaves the trace, never the
    ``[B, T, vocab]`` logits.
    """
    repeat = len(delta) // len(ids)
    inputs = {"input_ids": ids.repeat(repeat, 1), "attention_mask": attention_mask.repeat(repeat, 1)}
    index = torch.tensor(token_ids, dtype=torch.long, device=model.device)[None, None, :]
    return _logprob_at(model, inputs, layer, delta, index, drop_last=False)


def next_token_logprobs_with_delta(
    model: ModelHandle, ids: torch.Tensor, attention_mask: torch.Tensor, layer: int, delta: torch.Tensor
) -> torch.Tensor:
    """`next_token_logprobs` with ``delta [B, T, d]`` added to the residual after block ``layer``; ``ids`` and
    ``attention_mask [P, T]`` are repeated ``B // P`` times to match it (one batched trace): ``[B, T - 1]``."""
    repeat = len(delta) // len(ids)
    ids, attention_mask = ids.repeat(repeat, 1), attention_mask.repeat(repeat, 1)
    inputs = {"input_ids": ids, "attention_mask": attention_mask}
    return _logprob_at(model, inputs, layer, delta, ids[:, 1:, None].to(model.device), drop_last=True)


def next_token_logprobs(model: ModelHandle, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Log probability the unedited model gives each next token of ``ids [B, T]``: ``[B, T - 1]``, where entry
    ``t`` is ``log p(ids[:, t + 1] | ids[:, :t + 1])`` (meaningless where ``attention_mask`` marks padding).

    Only the ``[B, T - 1]`` result leaves the trace, never the ``[B, T, vocab]`` logits."""
    inputs = {"input_ids": ids, "attention_mask": attention_mask}
    return _logprob_at(model, inputs, None, None, ids[:, 1:, None].to(model.device), drop_last=True)


def _logprob_at(
    model: ModelHandle,
    inputs: dict[str, torch.Tensor],
    layer: int | None,
    delta: torch.Tensor | None,
    index: torch.Tensor,
    drop_last: bool,
) -> torch.Tensor:
    """`logprob_at` of the next-token distribution at every position of ``inputs`` (all but the last with
    ``drop_last``), ``index [B, T, K]`` (or broadcastable); ``delta [B, T, d]``, when given, is added to the
    residual after block ``layer``.

    A local model's trace stops at the LM head's input and the log probabilities are streamed over the vocabulary
    (`streamed_logprob_at`): no ``[B, T, vocab]`` logits are made. Otherwise (`lm_head_site` is None) they are taken
    from the whole logits inside the trace, and only the ``[B, T]`` result leaves it.
    """
    from nnsight import save  # `.save()` as a function: nnsight mounts the method at run time, unseen by mypy

    nn, head = model.nn, lm_head_site(model)
    block = None if delta is None or layer is None else model.block(layer)
    shift = None if delta is None else delta.to(model.device)
    with model.lock, torch.no_grad(), nn.trace(inputs, **model.trace_kwargs) as tracer:
        if block is not None and shift is not None:
            out = block.output
            hidden = residual_of(out)
            block.output = with_residual(out, hidden + shift.to(hidden.dtype))
        if head is not None:
            final = save(head.input)
            tracer.stop()
        else:
            logits = nn.output.logits[:, :-1] if drop_last else nn.output.logits
            logprob = save(logprob_at(logits.float(), index))
    if head is None:
        return logprob.detach().cpu()
    final = final.detach()[:, :-1] if drop_last else final.detach()
    return streamed_logprob_at(model, final, index).cpu()


def residual_and_gradient(
    model: ModelHandle, ids: torch.Tensor, layer: int, metric_of_logits: Any
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Residual ``[T, d]`` after block ``layer``, the gradient of ``metric_of_logits(last logits)`` with respect
    to it, and the metric's value, from one forward and backward pass.

    The residual is replaced by a detached leaf that requires grad, so the gradient exists even when the model's
    parameters are frozen, and flows no further back than this layer. A local model's gradient is taken with
    ``torch.autograd.grad`` after the trace; only a remote one (whose graph stays on NDIF) uses nnsight's
    ``with metric.backward():``, which swaps ``torch.Tensor.grad`` for the whole process while it runs and would
    break any other thread reading a ``.grad`` meanwhile (an optimizer step, say).
    """
    from nnsight import save  # `.save()` as a function: nnsight mounts the method at run time, unseen by mypy

    nn, block, remote = model.nn, model.block(layer), bool(model.remote)
    with model.lock, torch.enable_grad():
        with nn.trace(ids, **model.trace_kwargs):
            out = block.output
            leaf = residual_of(out).detach().requires_grad_(True)
            block.output = with_residual(out, leaf)
            hidden = save(leaf)
            metric = metric_of_logits(nn.output.logits[0, -1, :])
            value = save(metric)
            if remote:
                with metric.backward():
                    grad = save(leaf.grad)
        if not remote:
            (grad,) = torch.autograd.grad(value, hidden)
    return hidden.detach()[0].float().cpu(), grad.detach()[0].float().cpu(), float(value.detach())


def prompt_features(
    model: ModelHandle, sae: SAE, prompt: str, layer: int, what: str = "prompt", split_special_tokens: bool = True
) -> tuple[list[str], torch.Tensor]:
    """The prompt's tokens without BOS and the SAE feature activations on them, ``[T, F]``."""
    ids = prompt_ids(model, prompt, what, split_special_tokens=split_special_tokens)
    keep = content_mask(model, ids)[0]
    hidden = residuals(model, ids, layer)[0][keep]
    return model.tokens_to_str(ids[0][keep]), encode_rows(sae, hidden).float()
