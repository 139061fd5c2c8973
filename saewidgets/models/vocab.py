"""Log probabilities over a large vocabulary without its logits: the LM head a block of tokens at a time.

Gemma 3's vocabulary has 262,144 tokens, so each scored position's float32 logits take 1 MB: a steering search's
output scores (4 features x 6 prompts x ~10 tokens a pass) held 250 MB of logits and as much again for their
``logsumexp``, which made it the quick demo's peak. A question like "how likely is the next token one of these"
needs only two numbers per position: the log-sum-exp of the chosen tokens' logits and of all of them. Both are
accumulated here over blocks of `VOCAB_BLOCK` rows of the unembedding, from the LM head's input (the trace stops
before the head), so no ``[positions, vocab]`` block ever exists.

The head is applied exactly as the model does (its weight and bias, then Gemma 2/3's final logit soft-capping);
a model whose logits are scaled in some other way, a head that is not a linear layer, or a remote model (whose
weights stay on NDIF) gets the plain path, from the whole logits inside the trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .handle import ModelHandle, get_path
from .q8_embedding import Q8Unembedding, as_head_input

#: Unembedding rows per matrix product: ``[positions, 16384]`` float32 is 64 KB a position.
VOCAB_BLOCK = 16384
#: Config fields that rescale logits after the head in some architectures; streaming does not reproduce them.
_OTHER_LOGIT_SCALES = ("logit_scale", "logits_scaling", "output_multiplier_scale")


def _text_config(model: ModelHandle) -> Any:
    config = model.hf.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def lm_head_site(model: ModelHandle) -> Any | None:
    """The LM head's envoy, whose input `streamed_logprob_at` takes, or None where the plain path must be used."""
    if model.remote:
        return None
    head = model.hf.get_output_embeddings()
    if not isinstance(head, (torch.nn.Linear, Q8Unembedding)):
        return None
    config = _text_config(model)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _OTHER_LOGIT_SCALES):
        return None
    name = next(path for path, module in model.hf.named_modules() if module is head)
    return get_path(model.nn, name)


def unembed_blocks(
    head: torch.nn.Linear | Q8Unembedding, rows: int | None = None
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """``(start, weight, bias)`` of the LM head's rows ``start:start + rows`` (default `VOCAB_BLOCK`), over the
    whole vocabulary; a `Q8Unembedding` decodes each block into a reused buffer, so use it before the next."""
    rows = rows or VOCAB_BLOCK
    if isinstance(head, Q8Unembedding):
        for start, weight in head.weight_blocks(rows):
            yield start, weight, None
        return
    for start in range(0, head.out_features, rows):
        yield start, head.weight[start : start + rows], None if head.bias is None else head.bias[start : start + rows]


def unembed_rows(head: torch.nn.Linear | Q8Unembedding, ids: Sequence[int]) -> torch.Tensor:
    """Float32 rows ``[len(ids), d_model]`` of the LM head's weight for the tokens ``ids``."""
    index = torch.as_tensor(list(ids), dtype=torch.long)
    if isinstance(head, Q8Unembedding):
        return head.rows(index.to(head.device)).float()
    return head.weight.detach()[index.to(head.weight.device)].float()


@torch.no_grad()
def unembed_moments(head: torch.nn.Linear | Q8Unembedding) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[d_model]`` and population covariance ``[d_model, d_model]`` (float64, on the CPU) of the LM head's
    rows over the vocabulary.

    The logits ``W @ v`` of any direction ``v`` then have mean ``mean @ v`` and variance ``v @ cov @ v`` over the
    vocabulary: one ``[d_model, d_model]`` product per direction instead of a ``[vocab]`` row. Each block of rows
    is centred on its own mean before its product and the blocks are merged as in Chan, Golub & LeVeque's parallel
    variance, so no large mean is subtracted from a large second moment."""
    count = 0
    mean = torch.zeros(head.in_features, dtype=torch.float64)
    cov = torch.zeros(head.in_features, head.in_features, dtype=torch.float64)
    for _, weight, _ in unembed_blocks(head):
        block = weight.detach().float()
        n = len(block)
        block_mean = block.mean(0)
        centred = block - block_mean
        delta = block_mean.double().cpu() - mean
        total = count + n
        cov += (centred.T @ centred).double().cpu() + torch.outer(delta, delta) * (count * n / total)
        mean += delta * (n / total)
        count = total
    if not count:
        raise ValueError("The LM head has no rows: an empty vocabulary has no logit statistics.")
    return mean, cov / count


def logprob_at(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log sum_k softmax(logits)[..., index[..., k]]`` from whole logits ``[..., vocab]`` and ``index [..., K]``
    (broadcast to the logits' leading shape): ``[...]``."""
    index = index.expand(*logits.shape[:-1], index.shape[-1])
    return logits.gather(-1, index).logsumexp(-1) - logits.logsumexp(-1)


@torch.no_grad()
def streamed_logprob_at(model: ModelHandle, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`logprob_at` of the logits the LM head makes from ``hidden [..., d]`` (its input), a `VOCAB_BLOCK` of the
    vocabulary at a time: ``[...]`` float32."""
    head = model.hf.get_output_embeddings()
    cap = getattr(_text_config(model), "final_logit_softcapping", None)
    hidden = as_head_input(head, hidden)
    index = index.to(hidden.device).expand(*hidden.shape[:-1], index.shape[-1])
    picked = torch.full(index.shape, -torch.inf, device=hidden.device)
    block_lse = []
    for start, weight, bias in unembed_blocks(head):
        stop = start + len(weight)
        logits = torch.nn.functional.linear(hidden, weight, bias).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        block_lse.append(logits.logsumexp(-1))
        inside = (index >= start) & (index < stop)
        if bool(inside.any()):
            local = logits.gather(-1, (index - start).clamp(0, stop - start - 1))
            picked = torch.where(inside, local, picked)
        del logits
    return picked.logsumexp(-1) - torch.stack(block_lse, -1).logsumexp(-1)
