"""How good an SAE is, in one call: reconstruction and sparsity on held-out tokens, and the language model's loss
with the SAE spliced into the residual stream (traced with nnsight).

CE loss recovered = (L_zero - L_sae) / (L_zero - L_clean): 1 when splicing the SAE's reconstruction costs the model
nothing, 0 when it is as bad as zeroing the layer's output. Splices and ablations apply to real, non-BOS tokens (the
SAE never trains on BOS, whose residual is a huge outlier); padding never counts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import torch

from ..activation_source import TrainingRows
from .base import SAE
from .data import as_rows, check_finite
from .provenance import check_activations, check_compatible

if TYPE_CHECKING:
    from ..models.handle import ModelHandle

DENSE_THRESHOLD = 0.1  # a latent firing on more than this fraction of tokens counts as dense
_Splice = Literal["clean", "sae", "zero"]
_SPLICES: tuple[_Splice, ...] = ("clean", "sae", "zero")


@dataclass
class SAEMetrics:
    """Quality of an SAE on held-out tokens (and, optionally, inside the model)."""

    n_tokens: int
    """Held-out tokens the reconstruction metrics use."""
    l0: float
    """Mean active latents per token."""
    mse: float
    """Mean squared error per activation element, in raw residual units."""
    fve: float
    """Fraction of variance explained: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2."""
    dead_fraction: float
    """Latents that never fired on these tokens."""
    dense_fraction: float
    """Latents firing on more than 10% of tokens."""
    density_histogram: dict[str, list[float]] = field(repr=False)
    """``counts`` and ``edges`` of log10(firing density) over the latents that fired."""
    sae_fingerprint: str = ""
    """`SAE.fingerprint` of the SAE measured."""
    ce_clean: float | None = None
    """Model's next-token cross-entropy (nats/token) without intervention."""
    ce_with_sae: float | None = None
    """... with the layer's output replaced by the SAE reconstruction."""
    ce_zero_ablation: float | None = None
    """... with the layer's output set to zero."""
    ce_loss_recovered: float | None = None
    """(L_zero - L_sae) / (L_zero - L_clean)."""
    delta_lm_loss: float | None = None
    """L_sae - L_clean (nats/token)."""
    n_ce_tokens: int | None = None
    """Predicted tokens the CE numbers average over."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"SAE metrics on {self.n_tokens:,} held-out tokens (SAE {self.sae_fingerprint})",
            f"  L0                       {self.l0:.2f} active latents / token",
            f"  variance explained       {self.fve:.2%}",
            f"  MSE                      {self.mse:.4g} per element",
            f"  dead / dense latents     {self.dead_fraction:.1%} / {self.dense_fraction:.1%}",
        ]
        if self.ce_clean is not None:
            lines += [
                f"  CE loss clean / SAE / 0  {self.ce_clean:.4f} / {self.ce_with_sae:.4f} / {self.ce_zero_ablation:.4f} "
                f"nats on {self.n_ce_tokens:,} tokens",
                f"  CE loss recovered        {self.ce_loss_recovered:.2%}",
                f"  delta LM loss            {self.delta_lm_loss:+.4f} nats",
            ]
        return "\n".join(lines)


@torch.no_grad()
def evaluate_sae(
    sae: SAE,
    activations: TrainingRows,
    model: ModelHandle | None = None,
    texts: Sequence[str] | None = None,
    *,
    layer: int | str | None = None,
    batch_size: int = 4096,
    context_len: int = 128,
    text_batch_size: int | None = None,
    density_bins: int = 40,
    progress: bool = False,
    check_provenance: bool = True,
) -> SAEMetrics:
    """Measure ``sae`` on held-out ``activations`` (``[N, d]`` tensor/array or `Activations`) and, given a model
    handle and texts, the model's loss with the SAE spliced in at ``layer`` (default: the layer it was trained on).
    ``progress`` shows a bar over the text batches (three traces each: clean, SAE spliced, zero-ablated);
    ``text_batch_size`` texts go per trace (default: as many as keep one batch's logits near 128 MB, see
    `lm_loss_with_sae`). Activations, model and layer must be those the SAE was trained on (`check_compatible`), unless
    ``check_provenance=False``."""
    rows = as_rows(activations)
    if len(rows) < 2:
        raise ValueError(
            f"evaluate_sae() got {len(rows)} row of activations: the fraction of variance explained "
            "compares the error with the variance across rows, so pass at least 2 (a held-out split of "
            "thousands of tokens gives a meaningful figure)."
        )
    check_activations(rows, sae, check_provenance=check_provenance)
    check_finite(rows)
    if rows.d != sae.cfg.d_in:
        raise ValueError(
            f"The activations are {rows.d} wide but the SAE expects d_in={sae.cfg.d_in}: "
            "evaluate it on activations from the layer and model it was trained on."
        )
    metrics = _reconstruction_metrics(sae, rows, batch_size, density_bins)
    if model is not None and texts is not None:
        ce = lm_loss_with_sae(
            sae,
            model,
            texts,
            layer=layer,
            context_len=context_len,
            batch_size=text_batch_size,
            progress=progress,
            check_provenance=check_provenance,
        )
        metrics.ce_clean, metrics.ce_with_sae, metrics.ce_zero_ablation, metrics.n_ce_tokens = ce
        gap = metrics.ce_zero_ablation - metrics.ce_clean
        metrics.ce_loss_recovered = (metrics.ce_zero_ablation - metrics.ce_with_sae) / gap if gap != 0 else math.nan
        metrics.delta_lm_loss = metrics.ce_with_sae - metrics.ce_clean
    return metrics


def _reconstruction_metrics(sae: SAE, rows: Any, batch_size: int, density_bins: int) -> SAEMetrics:
    n, d = len(rows), rows.d
    sse = sum_x2 = l0 = 0.0
    fires = torch.zeros(sae.cfg.n_features, dtype=torch.float64)
    device = sae.W_enc.device
    sum_x = torch.zeros(d, dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        x = rows.take(np.arange(start, min(n, start + batch_size))).to(device)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        active = f != 0
        sse += float((x - x_hat).double().pow(2).sum())
        sum_x = sum_x + x.double().sum(0)
        sum_x2 += float(x.double().pow(2).sum())
        l0 += float(active.sum())
        fires += active.sum(0).double().cpu()
    total_var = sum_x2 - float(sum_x.pow(2).sum()) / n
    density = (fires / n).numpy()
    fired = density[density > 0]
    counts, edges = np.histogram(np.log10(fired), bins=density_bins) if fired.size else (np.zeros(0), np.zeros(0))
    return SAEMetrics(
        n_tokens=n,
        l0=l0 / n,
        mse=sse / (n * d),
        fve=1 - sse / total_var if total_var > 0 else math.nan,
        dead_fraction=float((density == 0).mean()),
        dense_fraction=float((density > DENSE_THRESHOLD).mean()),
        density_histogram={"counts": counts.tolist(), "edges": edges.tolist()},
        sae_fingerprint=sae.fingerprint(),
    )


#: Bytes of float32 logits one LM-loss batch may hold by default: a ``[batch, context, vocab]`` block is 134 MB per
#: 128-token text for Gemma's 262k-token vocabulary, so a fixed batch of 8 peaked at 5 GB with its copies.
LOGITS_BUDGET = 2**27


@torch.no_grad()
def lm_loss_with_sae(
    sae: SAE,
    model: Any,
    texts: Sequence[str],
    *,
    layer: int | str | None = None,
    context_len: int = 128,
    batch_size: int | None = None,
    progress: bool = False,
    check_provenance: bool = True,
) -> tuple[float, float, float, int]:
    """(CE clean, CE with the SAE spliced in, CE with the layer zero-ablated, predicted tokens), in nats/token.

    ``batch_size`` texts go per trace; by default as many as keep the batch's ``[batch, context, vocab]`` float32
    logits within `LOGITS_BUDGET` (at least one). A local model's logits are never made whole: the trace stops at
    the LM head's input and the next tokens' log probabilities are streamed over the vocabulary
    (`saewidgets.models.vocab`); otherwise only the ``[batch, context]`` log probabilities leave the trace.
    """
    layer = check_compatible(sae, model, layer, check_provenance=check_provenance)
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings.")
    inputs = [model.encode(t)[:context_len] for t in texts]
    if batch_size is None:
        width = max(len(i) for i in inputs)
        batch_size = max(1, LOGITS_BUDGET // (width * model.vocab_size * 4))
    totals = {mode: 0.0 for mode in _SPLICES}
    count = 0
    from ..progress import progress_iter

    batches = range(0, len(inputs), batch_size)
    for b in progress_iter(batches, desc="CE loss with SAE", unit="batch", disable=not progress):
        ids, mask = _left_pad(inputs[b : b + batch_size], model)
        splice = mask.bool() & (ids != model.bos_id if model.bos_id is not None else True)
        targets = mask[:, 1:].bool() & mask[:, :-1].bool()
        for mode in totals:
            logprob = _next_token_logprobs(sae, model, layer, ids, mask, splice, mode)
            totals[mode] -= float(logprob[targets].sum())
        count += int(targets.sum())
    if count == 0:
        raise ValueError("The texts give no next-token predictions (each needs at least two tokens).")
    return totals["clean"] / count, totals["sae"] / count, totals["zero"] / count, count


def _left_pad(inputs: list[list[int]], model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(i) for i in inputs)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(inputs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, seq in enumerate(inputs):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def _next_token_logprobs(
    sae: SAE, model: Any, layer: int, ids: torch.Tensor, mask: torch.Tensor, splice: torch.Tensor, mode: _Splice
) -> torch.Tensor:
    """Log probability of each next token ``[B, T - 1]`` of one left-padded batch, with block ``layer``'s output
    replaced at ``splice`` positions per ``mode``."""
    from nnsight import save  # `.save()` as a function: nnsight mounts the method at run time, unseen by mypy

    from ..models.handle import residual_of, with_residual
    from ..models.vocab import lm_head_site, logprob_at, streamed_logprob_at

    block, head = model.block(layer), lm_head_site(model)
    device = model.device
    targets = ids[:, 1:, None].to(device)
    with (
        model.lock,
        model.nn.trace(
            {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, **model.trace_kwargs
        ) as tracer,
    ):
        if mode != "clean":
            out = block.output
            h = residual_of(out)
            new = sae(h).to(h.dtype) if mode == "sae" else torch.zeros_like(h)
            block.output = with_residual(out, torch.where(splice.to(h.device)[..., None], new, h))
        if head is not None:
            final = save(head.input)
            tracer.stop()
        else:
            logprob = save(logprob_at(model.nn.output.logits[:, :-1].float(), targets))
    if head is None:
        return logprob.detach().cpu()
    return streamed_logprob_at(model, final.detach()[:, :-1], targets).cpu()
