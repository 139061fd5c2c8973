"""Training FLOPs of an SAE step, counted per architecture from what the `Trainer` actually computes.

Counted: the matrix products (2 FLOP per multiply-add), which are all of a step's cost but O(batch x F)
element-wise work (activations, top-k selection, Adam). For a batch of ``B`` tokens, ``d`` = d_in, ``F`` latents:

    dense step (relu, jumprelu; topk/batchtopk with sparse_kernels=False):
        forward      encoder x @ W_enc  2BdF      decoder f @ W_dec (relu, jumprelu, batchtopk)  2BdF
        backward     grad f  2BdF,  grad W_dec  2BdF,  grad W_enc  2BdF,
                     grad of the encoder input (x - b_dec, for b_dec's gradient)  2BdF
        = 12 BdF;  dense topk decodes its k latents with an embedding bag instead: 6BdF + 6Bdk
    sparse TopK / BatchTopK step (`saewidgets.sae.sparse`, the default):
        encoder forward 2BdF; over the ``nnz = kB`` active pairs: grad W_enc 2d nnz, decoder forward 2d nnz,
        grad values 2d nnz, grad W_dec 2d nnz; b_dec's gradient through the encoder W_enc @ grad b_enc  2dF
        = 2BdF + 8dkB + 2dF
    AuxK (topk, batchtopk), on steps where some latent is dead, with ``a = min(aux_k, dead latents)`` per token:
        dense step 6Bda (an embedding-bag decode and its two gradients);  sparse step 8Bda + 2dF

The `Trainer` knows ``a`` at every step; `step_flops` takes it, so a run's total counts AuxK only on the steps where
it ran. With F >> k this is the anchor's "~10-12 d F per token dense, ~2 d F + 8 k d sparse".
"""

from __future__ import annotations

from .sparse import SPARSE_ARCHITECTURES


def step_flops(
    arch: str,
    d_in: int,
    n_features: int,
    batch_size: int,
    k: int | None = None,
    *,
    aux: int = 0,
    sparse_kernels: bool = True,
    b_dec_in_input: bool = True,
) -> int:
    """FLOPs of one training step's matrix products (see the module docstring for the count).

    Args:
        arch: ``relu``, ``jumprelu``, ``topk`` or ``batchtopk``.
        d_in, n_features, batch_size: d, F and B.
        k: active latents per token (topk; batch average for batchtopk).
        aux: dead latents AuxK used per token at this step (0: none dead, AuxK skipped).
        sparse_kernels: the `TrainConfig` switch (topk/batchtopk only).
        b_dec_in_input: whether the encoder reads ``x - b_dec`` (the trainer's SAEs do).
    """
    d, F, B = int(d_in), int(n_features), int(batch_size)
    if arch in ("relu", "jumprelu"):
        return _dense(d, F, B, b_dec_in_input)
    if arch not in SPARSE_ARCHITECTURES:
        raise ValueError(f"arch={arch!r} is not an SAE architecture: pass relu, jumprelu, topk or batchtopk.")
    if k is None:
        raise ValueError(f"a {arch} SAE's FLOPs depend on k: pass k=.")
    k, aux = int(k), int(aux)
    bias = 2 * d * F if b_dec_in_input else 0  # W_enc @ grad b_enc, once per encoder pass over pairs
    if sparse_kernels:
        flops = 2 * B * d * F + 8 * d * k * B + bias
        return flops + (8 * B * d * aux + bias if aux else 0)
    if arch == "batchtopk":  # the dense step scatters the batch's choice into f and multiplies by W_dec
        flops = _dense(d, F, B, b_dec_in_input)
    else:
        flops = (6 if b_dec_in_input else 4) * B * d * F + 6 * B * d * k
    return flops + 6 * B * d * aux


def _dense(d: int, F: int, B: int, b_dec_in_input: bool) -> int:
    return (12 if b_dec_in_input else 10) * B * d * F
