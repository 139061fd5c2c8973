"""Training objectives, one per architecture, on inputs already in the SAE's normalised units.

- ``relu``: Scaling Monosemanticity: ||x - x_hat||^2 + lambda * sum_i f_i ||W_dec_i|| (decoder norms free).
- ``topk``: ||x - x_hat||^2 + AuxK (Gao et al. 2024: the top ``aux_k`` dead latents reconstruct the residual error).
- ``batchtopk``: TopK over the whole batch (k * batch latents), same AuxK; tracks a running inference threshold
  (the EMA of the smallest selected pre-activation) that `SAE.encode` uses instead of the batch.
- ``jumprelu``: ||x - x_hat||^2 + lambda * L0, thresholds learnt through straight-through pseudo-derivatives with a
  rectangle kernel of width ``bandwidth`` (Rajamanoharan et al. 2024, as Gemma Scope trains them).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .base import SAE, sparse_decode
from .train_config import TrainConfig


class StepOutput(NamedTuple):
    """What one training step produced."""

    loss: torch.Tensor
    """Total loss to back-propagate."""
    x_hat: torch.Tensor
    """Reconstruction in normalised units (detached)."""
    fired: torch.Tensor
    """``[n_features]`` bool: latents that fired on some token of the batch."""
    l0: float
    """Mean active latents per token."""
    terms: dict[str, float]
    """Named loss terms, for the progress bar and history."""


def _rectangle(z: torch.Tensor) -> torch.Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLU(torch.autograd.Function):
    """``pre * (pre > threshold)``; threshold gradient from the pseudo-derivative -(theta/eps) K((pre-theta)/eps)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = (pre > threshold) * grad
        grad_threshold = (-(threshold / eps) * _rectangle((pre - threshold) / eps) * grad).sum(0)
        return grad_pre, grad_threshold, None


class _Step(torch.autograd.Function):
    """Heaviside ``pre > threshold``; threshold gradient from the pseudo-derivative -(1/eps) K((pre-theta)/eps)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        return None, (-(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad).sum(0), None


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the model dimension, averaged over tokens."""
    return (x_hat - x).pow(2).sum(-1).mean()


def auxk_loss(error: torch.Tensor, error_hat: torch.Tensor) -> torch.Tensor:
    """AuxK's loss: how well the dead latents reconstruct the main error, relative to the error's variance."""
    return squared_error(error, error_hat) / error.sub(error.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)


def _auxk(
    sae: SAE, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor, aux_k: int
) -> torch.Tensor:
    """AuxK: the ``aux_k`` largest pre-activations among dead latents reconstruct the error ``x - x_hat``,
    normalised by the error's variance, so dead latents get gradient and come back to life."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    error = (x - x_hat).detach()
    values, indices = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, n_dead), dim=-1)
    error_hat = sparse_decode(F.relu(values), indices, sae.W_dec)
    return auxk_loss(error, error_hat)


def training_step(sae: SAE, x: torch.Tensor, tc: TrainConfig, step: int, dead: torch.Tensor) -> StepOutput:
    """Loss and bookkeeping of one batch ``x`` (normalised units) at ``step``; ``dead`` marks dead latents."""
    pre = sae.pre_activations(x)
    arch = sae.cfg.architecture
    warm = min(1.0, (step + 1) / max(1.0, tc.sparsity_warmup_fraction * tc.n_steps))
    if arch == "relu":
        f = F.relu(pre)
        x_hat = f @ sae.W_dec + sae.b_dec
        mse = squared_error(x, x_hat)
        sparsity = (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + warm * tc.l1 * sparsity
        active = f > 0
        terms = {"mse": mse.item(), "l1": sparsity.item()}
    elif arch == "jumprelu":
        f = _JumpReLU.apply(pre, sae.threshold, tc.jumprelu_bandwidth)
        x_hat = f @ sae.W_dec + sae.b_dec
        mse = squared_error(x, x_hat)
        l0 = _Step.apply(pre, sae.threshold, tc.jumprelu_bandwidth).sum(-1).mean()
        loss = mse + warm * tc.l0 * l0
        active = pre > sae.threshold
        terms = {"mse": mse.item(), "l0_loss": l0.item()}
    else:
        k = sae.cfg.k
        if k is None:  # SAEConfig refuses a topk or batchtopk config without k; a hand-edited cfg lands here
            raise ValueError(f"A {arch} SAE needs cfg.k, the number of latents kept per token.")
        if arch == "topk":
            values, indices = pre.topk(k, dim=-1, sorted=False)
            values = F.relu(values)
            x_hat = sparse_decode(values, indices, sae.W_dec) + sae.b_dec
            active = torch.zeros_like(pre, dtype=torch.bool).scatter_(-1, indices, values > 0)
        else:
            values, flat = pre.flatten().topk(k * pre.shape[0], sorted=False)
            values = F.relu(values)
            f = torch.zeros_like(pre).flatten().scatter(0, flat, values).view_as(pre)
            x_hat = f @ sae.W_dec + sae.b_dec
            active = f > 0
            update_threshold(sae, values.detach(), tc.threshold_momentum, step)
        mse = squared_error(x, x_hat)
        aux = _auxk(sae, x, x_hat, pre, dead, tc.aux_k or max(1, sae.cfg.d_in // 2))
        loss = mse + tc.aux_coefficient * aux
        terms = {"mse": mse.item(), "auxk": aux.item()}
    return StepOutput(loss, x_hat.detach(), active.any(0), active.sum(-1).float().mean().item(), terms)


@torch.no_grad()
def update_threshold(sae: SAE, selected: torch.Tensor, momentum: float, step: int) -> None:
    """BatchTopK's inference threshold: EMA of the smallest positive activation the batch selection kept."""
    positive = selected[selected > 0]
    if positive.numel() == 0:
        return
    smallest = positive.min()
    if step == 0:
        sae.threshold.fill_(smallest)
    else:
        sae.threshold.mul_(1 - momentum).add_(momentum * smallest)


def needs_unit_decoder(arch: str) -> bool:
    """Whether decoder rows are kept at unit norm (all but ``relu``, whose L1 term is weighted by the norms)."""
    return arch != "relu"
