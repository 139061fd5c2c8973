"""Sparse TopK / BatchTopK training: no dense decoder product, forward or backward.

A TopK SAE step done densely costs ~10 d F FLOP per token (encoder and decoder products, forward and backward).
Only the encoder forward has to be dense (every latent's pre-activation is needed to pick the top k); everything
after it touches just the ``nnz`` active (token, latent) pairs, about ``k`` per token:

    forward                                 backward
    pre     = (x - b_dec) @ W_enc + b_enc   grad W_enc[:, j] = sum_{t: j active} g_pre[t, j] (x - b_dec)[t]
    x_hat_t = sum_j v_tj W_dec[j] + b_dec   grad W_dec[j]    = sum_{t: j active} v_tj grad_x_hat[t]
                                            grad v_tj        = <grad_x_hat[t], W_dec[j]>
                                            grad b_enc[j]    = sum_t g_pre[t, j];  grad b_dec -= W_enc @ grad b_enc

The two "sum over the tokens where latent j is active" products are ``embedding_bag`` over the active pairs
sorted by latent; the decoder forward is ``embedding_bag`` over pairs grouped by token; ``grad v`` is a sampled
dense-dense product (``torch.sparse.sampled_addmm``). So a step costs ~2 d F + O(k d) FLOP per token.

`sparse_training_step` is a drop-in for `architectures.training_step` on ``topk`` and ``batchtopk`` SAEs: same
selection, same loss terms (MSE + AuxK), same gradients within float rounding.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .architectures import StepOutput, auxk_loss, squared_error, update_threshold
from .base import SAE
from ..precision import compute_dtype
from .train_config import TrainConfig

SPARSE_ARCHITECTURES = ("topk", "batchtopk")
_workspace = threading.local()  # .pre: {shape: [batch, n_features] pre-activation buffer}, reused step after step
_BATCHTOPK_CANDIDATES = 4  # per-token candidates for BatchTopK, in multiples of k (exactness is checked)


@dataclass
class ActivePairs:
    """The active (token, latent) pairs of a batch, grouped by token (``rows`` ascending)."""

    rows: torch.Tensor
    """``[nnz]`` int64 token (batch row) of each pair."""
    cols: torch.Tensor
    """``[nnz]`` int64 latent of each pair."""
    row_offsets: torch.Tensor
    """``[n_rows + 1]`` start of each token's pairs (CSR row pointer)."""
    n_features: int
    """Latents in the SAE."""

    @classmethod
    def uniform(cls, cols: torch.Tensor, n_features: int) -> ActivePairs:
        """Pairs from ``cols [n_rows, m]``: the same number ``m`` of latents for every token."""
        n_rows, m = cols.shape
        rows = torch.arange(n_rows, device=cols.device).repeat_interleave(m)
        return cls(rows, cols.reshape(-1), torch.arange(0, n_rows * m + 1, m, device=cols.device), n_features)

    @property
    def n_rows(self) -> int:
        return len(self.row_offsets) - 1

    @cached_property
    def by_latent(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the pairs in stable order by latent, their tokens in that order, start of each latent's run): the bags
        of the transposed products, computed once per batch and shared by the encoder and decoder backward."""
        order, starts = _group_by_key(self.cols, self.n_features)
        return order, self.rows[order], starts


def _group_by_key(keys: torch.Tensor, n_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(stable argsort of integer ``keys`` in ``[0, n_keys)``, start of each key's run in it). On CPU through
    numpy (a radix sort for 16-bit keys, ~1 ms for 131k pairs) where torch's threaded sort and bincount took
    10-600 ms on a busy 2-core machine."""
    if keys.device.type != "cpu":
        counts = torch.bincount(keys, minlength=n_keys)
        return keys.argsort(stable=True), counts.cumsum(0) - counts
    k = keys.numpy()
    run_lengths = np.bincount(k, minlength=n_keys)
    order = np.argsort(k.astype(_key_dtype(n_keys)), kind="stable")
    return torch.from_numpy(order).long(), torch.from_numpy(np.cumsum(run_lengths) - run_lengths)


def _key_dtype(n_keys: int) -> type:
    return np.uint16 if n_keys <= 2**16 else np.int32 if n_keys <= 2**31 else np.int64


# -- selection (no gradient) ----------------------------------------------------------------------------------


def select_topk(pre: torch.Tensor, k: int) -> ActivePairs:
    """Each token's ``k`` largest pre-activations."""
    return ActivePairs.uniform(pre.topk(k, dim=-1, sorted=False).indices, pre.shape[1])


def select_batch_topk(pre: torch.Tensor, k: int) -> ActivePairs:
    """The ``k * n_rows`` largest pre-activations of the whole batch, without a top-k over all ``n_rows * F``.

    Each token offers its ``4 k`` largest as candidates and the batch keeps the best ``k * n_rows`` of those. A
    token all of whose candidates were kept might have more above the cut: such tokens offer their whole row and
    the selection is redone, so the result equals ``pre.flatten().topk(k * n_rows)`` (up to ties)."""
    n_rows, n_features = pre.shape
    total = k * n_rows
    m = min(n_features, _BATCHTOPK_CANDIDATES * k)
    cand_values, cand_cols = pre.topk(m, dim=-1, sorted=False)
    cand_rows = torch.arange(n_rows, device=pre.device).repeat_interleave(m)
    cand_values, cand_cols = cand_values.reshape(-1), cand_cols.reshape(-1)
    kept = cand_values.topk(total, sorted=False).indices
    if m < n_features:
        full = torch.bincount(cand_rows[kept], minlength=n_rows) == m
        if bool(full.any()):
            rows_full = full.nonzero().squeeze(1)
            partial = ~full[cand_rows]
            cand_values = torch.cat([cand_values[partial], pre[rows_full].reshape(-1)])
            every_col = torch.arange(n_features, device=pre.device).repeat(len(rows_full))
            cand_cols = torch.cat([cand_cols[partial], every_col])
            cand_rows = torch.cat([cand_rows[partial], rows_full.repeat_interleave(n_features)])
            kept = cand_values.topk(total, sorted=False).indices
    rows, cols = cand_rows[kept], cand_cols[kept]
    order, starts = _group_by_key(rows, n_rows)
    return ActivePairs(rows[order], cols[order], F.pad(starts, (0, 1), value=total), n_features)


def select_dead_topk(pre: torch.Tensor, dead: torch.Tensor, aux_k: int) -> ActivePairs | None:
    """AuxK's pairs: each token's ``aux_k`` largest pre-activations among ``dead`` latents (None if none is dead).
    Reads only the dead columns of ``pre``."""
    dead_ids = dead.nonzero().squeeze(1)
    if len(dead_ids) == 0:
        return None
    local = pre[:, dead_ids].topk(min(aux_k, len(dead_ids)), dim=-1, sorted=False).indices
    return ActivePairs.uniform(dead_ids[local], pre.shape[1])


# -- differentiable pieces -----------------------------------------------------------------------------------


def _sum_by_latent(table: torch.Tensor, weights: torch.Tensor, pairs: ActivePairs) -> torch.Tensor:
    """``[n_features, d]``: row j = sum over the pairs (t, j) of ``weights[pair] * table[t]`` (0 for idle latents)."""
    order, rows, starts = pairs.by_latent
    return F.embedding_bag(rows, table, starts, mode="sum", per_sample_weights=weights[order])


class _GatherEncoder(torch.autograd.Function):
    """Pre-activations of the active pairs, ``((x - b_dec) @ W_enc + b_enc)[rows, cols]``, read from a ``pre``
    computed without autograd; the backward touches only those pairs (``x`` itself gets no gradient)."""

    @staticmethod
    def forward(
        ctx: Any,
        pre: torch.Tensor,
        x_in: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        b_dec: torch.Tensor,
        pairs: ActivePairs,
        b_dec_in_input: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(x_in, W_enc)
        ctx.pairs, ctx.b_dec_in_input = pairs, b_dec_in_input
        return pre[pairs.rows, pairs.cols].to(W_enc.dtype)  # float32 from here on, when ``pre`` is bf16/fp16

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_in, W_enc = ctx.saved_tensors
        pairs, n_features = ctx.pairs, W_enc.shape[1]
        grad_b_enc = torch.zeros(n_features, dtype=grad.dtype, device=grad.device).index_add_(0, pairs.cols, grad)
        grad_W_enc = _sum_by_latent(x_in, grad, pairs).t() if ctx.needs_input_grad[2] else None
        grad_b_dec = -(W_enc @ grad_b_enc) if ctx.b_dec_in_input and ctx.needs_input_grad[4] else None
        return None, None, grad_W_enc, grad_b_enc, grad_b_dec, None, None


class _SparseDecode(torch.autograd.Function):
    """``out[t] = sum over the pairs (t, j) of values[pair] * W_dec[j]`` (no bias), forward and backward sparse."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, W_dec: torch.Tensor, pairs: ActivePairs) -> torch.Tensor:
        ctx.save_for_backward(values, W_dec)
        ctx.pairs = pairs
        return F.embedding_bag(pairs.cols, W_dec, pairs.row_offsets[:-1], mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        values, W_dec = ctx.saved_tensors
        pairs = ctx.pairs
        grad = grad.contiguous()
        grad_values = _sampled_dot(grad, W_dec, pairs) if ctx.needs_input_grad[0] else None
        grad_W_dec = _sum_by_latent(grad, values, pairs) if ctx.needs_input_grad[1] else None
        return grad_values, grad_W_dec, None


def _sampled_dot(a: torch.Tensor, W: torch.Tensor, pairs: ActivePairs) -> torch.Tensor:
    """``<a[t], W[j]>`` for every pair (t, j): the sampled dense-dense product, via CSR ``sampled_addmm`` (whose
    CPU kernel reads each row's columns in any order, so TopK's unsorted indices need no sort)."""
    ones = torch.ones(len(pairs.cols), dtype=a.dtype, device=a.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(pairs.row_offsets, pairs.cols, ones, size=(pairs.n_rows, W.shape[0]))
        return torch.sparse.sampled_addmm(pattern, a, W.t(), beta=0.0).values()


def sparse_decode_pairs(values: torch.Tensor, W_dec: torch.Tensor, pairs: ActivePairs) -> torch.Tensor:
    """``[n_rows, d]`` reconstruction (no bias) from the active pairs' ``values``; differentiable, sparse both ways."""
    return _SparseDecode.apply(values, W_dec, pairs)


def _encoder_input(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """What the encoder multiplies: ``x - b_dec`` (or ``x``), without autograd (the backward adds b_dec's part)."""
    return x - sae.b_dec.detach() if sae.cfg.apply_b_dec_to_input else x


def gather_pre_activations(sae: SAE, x_in: torch.Tensor, pre: torch.Tensor, pairs: ActivePairs) -> torch.Tensor:
    """The active pairs' pre-activations as a differentiable function of the encoder weights and biases, given
    the encoder input ``x_in`` (`_encoder_input`) and ``pre`` computed from it."""
    return _GatherEncoder.apply(pre, x_in, sae.W_enc, sae.b_enc, sae.b_dec, pairs, sae.cfg.apply_b_dec_to_input)


# -- the training step ---------------------------------------------------------------------------------------


def sparse_training_step(sae: SAE, x: torch.Tensor, tc: TrainConfig, step: int, dead: torch.Tensor) -> StepOutput:
    """`architectures.training_step` for ``topk`` / ``batchtopk`` SAEs, without dense decoder products.

    ``x`` is a batch in the SAE's normalised units, ``dead`` a ``[n_features]`` bool mask of dead latents."""
    arch = sae.cfg.architecture
    if arch not in SPARSE_ARCHITECTURES:
        raise ValueError(f"The sparse training step handles {' and '.join(SPARSE_ARCHITECTURES)} SAEs, not {arch!r}.")
    x_in = _encoder_input(sae, x)
    with torch.no_grad():  # = sae.pre_activations(x), bias fused, into the reused buffer (autocast's dtype, if on)
        dtype = compute_dtype(sae.W_enc)
        b_enc, W_enc = sae.b_enc.to(dtype), sae.W_enc.to(dtype)
        pre = torch.addmm(b_enc, x_in.to(dtype), W_enc, out=_pre_buffer(x.shape[0], W_enc))
    k = sae.cfg.active_k
    pairs = select_topk(pre, k) if arch == "topk" else select_batch_topk(pre, k)
    values = F.relu(gather_pre_activations(sae, x_in, pre, pairs))
    x_hat = sparse_decode_pairs(values, sae.W_dec, pairs) + sae.b_dec
    if arch == "batchtopk":
        update_threshold(sae, values.detach(), tc.threshold_momentum, step)
    mse = squared_error(x, x_hat)
    aux = _sparse_auxk(sae, x, x_in, x_hat, pre, dead, tc.aux_k or max(1, sae.cfg.d_in // 2))
    loss = mse + tc.aux_coefficient * aux
    positive = values.detach() > 0
    fired = torch.zeros(sae.cfg.n_features, dtype=torch.bool, device=x.device).index_fill_(
        0, pairs.cols[positive], True
    )
    l0 = positive.sum().item() / x.shape[0]
    return StepOutput(loss, x_hat.detach(), fired, l0, {"mse": mse.item(), "auxk": aux.item()})


def _pre_buffer(n_rows: int, W_enc: torch.Tensor) -> torch.Tensor:
    """This thread's ``[n_rows, n_features]`` buffer for pre-activations, kept between steps: a fresh 256 MB
    tensor each step cost ~0.1-0.2 s of page faults on CPU (the kernel zeroes every page on first touch). One
    buffer per shape, so SAEs of several widths trained in turn (`saewidgets.sae.family`) each keep theirs."""
    buffers = getattr(_workspace, "pre", None)
    if buffers is None:
        _workspace.pre = buffers = {}
    key = (n_rows, W_enc.shape[1], W_enc.dtype, W_enc.device)
    pre = buffers.get(key)
    if pre is None:
        buffers[key] = pre = torch.empty(key[:2], dtype=W_enc.dtype, device=W_enc.device)
    return pre


def release_workspace() -> None:
    """Free this thread's pre-activation buffers (``batch x n_features x 4`` bytes each), e.g. when training ends."""
    _workspace.pre = None


def _sparse_auxk(
    sae: SAE,
    x: torch.Tensor,
    x_in: torch.Tensor,
    x_hat: torch.Tensor,
    pre: torch.Tensor,
    dead: torch.Tensor,
    aux_k: int,
) -> torch.Tensor:
    """AuxK as `architectures` defines it (dead latents' top ``aux_k`` reconstruct the error, normalised by its
    variance), with the dead latents' pairs going through the same sparse pieces."""
    pairs = select_dead_topk(pre, dead, aux_k)
    if pairs is None:
        return pre.new_zeros(())
    error = (x - x_hat).detach()
    values = F.relu(gather_pre_activations(sae, x_in, pre, pairs))
    error_hat = sparse_decode_pairs(values, sae.W_dec, pairs)
    return auxk_loss(error, error_hat)
