"""Latent-sharded TopK training for SAEs too wide for one device: each rank holds ``n_features / world_size``
latents (their encoder columns, encoder biases and decoder rows) and the top k is taken across the shards.

Every rank reads the same batch. A step, per rank: pre-activations of its own latents; its local top k; an
all-gather of every rank's local top-k values gives each token's global k-th largest value, and the rank keeps the
local candidates at or above it (together, exactly the k latents single-process TopK picks); a sparse decode of
those; the partial reconstructions are summed across ranks. Two autograd functions carry gradients across the
shards (Megatron's f and g): the centred input is copied into the shards (its gradient summed back), the partial
reconstructions are summed out of them (gradient passed through), so ``b_dec`` -- replicated on every rank -- gets
its full gradient everywhere. AuxK picks dead latents across shards the same way; gradient clipping uses the
global norm. The result equals single-process TopK `train_sae` within float tolerance.

Checkpoints are gathered: rank 0 writes the same ``checkpoint.pt`` single-process training writes (full weights,
Adam state, dead-latent counters), so a run can resume on any number of ranks, or in one process. That needs the
full SAE in CPU memory on each rank at start and at checkpoints; accelerator memory holds only the shard.
"""

from __future__ import annotations

import operator
from functools import reduce
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..activation_source import TrainingRows
from .architectures import auxk_loss, squared_error
from .base import SAE, sparse_decode
from .data import Rows
from .distributed import asked_on_any_rank, require_process_group
from .train import Trainer, lr_factor, remove_parallel_gradient, train_sae
from .train_config import TrainConfig

_SHARDED = ("W_enc", "b_enc", "W_dec")  # parameters split across ranks along the latent axis; b_dec is replicated


class _CopyToShards(torch.autograd.Function):
    """Identity forward; backward sums the gradient every shard sends back (Megatron's ``f``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class _SumOverShards(torch.autograd.Function):
    """Sum across ranks forward; identity backward, since every rank computes the same loss (Megatron's ``g``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def _global_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This shard's share of each row's top ``k`` over all shards: (ReLU'd values, local indices), ``[B, k]``,
    with value 0 for local candidates that did not make the global top k."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    gathered = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, values.detach().contiguous())
    kth = torch.cat(gathered, dim=-1).topk(k, dim=-1).values[..., -1:]
    return F.relu(torch.where(values >= kth, values, torch.zeros_like(values))), indices


def _written_grad(param: torch.Tensor) -> torch.Tensor:
    """``param.grad``, which every training step's backward pass writes before the step clips it."""
    assert param.grad is not None, "the backward pass writes every parameter's gradient"
    return param.grad


class LatentShardedTrainer(Trainer):
    """TopK SAE training with the latents split across the ranks of a process group.

    The `Trainer` it extends holds the gathered view on the CPU: the same initialisation and input statistics as
    one process, and the checkpoint format; `sync` gathers the shards into it (a collective: every rank calls it).
    """

    def __init__(self, rows: Rows, config: TrainConfig, device: torch.device) -> None:
        require_process_group("Latent-sharded training")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        width = config.n_features // self.world_size
        if config.arch != "topk" or config.n_features % self.world_size or (config.k or 0) > width:
            raise ValueError(
                f"Latent sharding trains TopK SAEs whose n_features divides by the {self.world_size} ranks into "
                f"shards of at least k latents; got {config.arch} with n_features={config.n_features}, k={config.k}."
            )
        if config.precision != "fp32":
            raise ValueError(
                f"Latent-sharded training runs in fp32 only (got precision={config.precision!r}): pass "
                "precision='fp32', or train data-parallel (parallel='data'), which supports bf16 and fp16."
            )
        super().__init__(rows, config, torch.device("cpu"))
        self.shard_device = device
        self.lo, self.hi = self.rank * width, (self.rank + 1) * width
        self.params = {
            name: torch.nn.Parameter(self._local(name, p.detach()).to(device).clone())
            for name, p in self.sae.named_parameters()
        }
        self.shard_optimizer = torch.optim.Adam(self.params.values(), lr=self.tc.peak_lr)
        self.shard_tokens_since_fired = torch.zeros(width, dtype=torch.long)

    def extra_provenance(self) -> dict[str, Any]:
        return {"latent_shards": self.world_size}

    def any_rank(self, asked: bool) -> bool:
        return asked_on_any_rank(asked, self.shard_device)

    def _local(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a full ``[d, F]`` / ``[F]`` / ``[F, d]`` tensor of parameter ``name``."""
        if name not in _SHARDED:
            return tensor
        return tensor[:, self.lo : self.hi] if name == "W_enc" else tensor[self.lo : self.hi]

    def _gathered(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The full tensor of parameter ``name`` (or of its optimizer state) from every rank's slice."""
        if name not in _SHARDED:
            return tensor.detach().cpu()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.detach().contiguous())
        return torch.cat(parts, dim=1 if name == "W_enc" else 0).cpu()

    # -- checkpoints: through the gathered view -------------------------------------------------------------

    def sync(self) -> None:
        """Copy the gathered weights, Adam state and counters into the gathered view (collective)."""
        with torch.no_grad():
            for name, p in self.sae.named_parameters():
                p.copy_(self._gathered(name, self.params[name]))
        state = self.shard_optimizer.state_dict()
        for i, name in enumerate(self.params):
            if i in state["state"]:
                state["state"][i] = {
                    key: self._gathered(name, value) if value.dim() else value
                    for key, value in state["state"][i].items()
                }
        self.optimizer.load_state_dict(state)
        self.tokens_since_fired = self._gathered("b_enc", self.shard_tokens_since_fired)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a (single-process or sharded) checkpoint: every rank takes its slice."""
        super().restore(checkpoint)
        with torch.no_grad():
            for name, p in self.sae.named_parameters():
                self.params[name].copy_(self._local(name, p.detach()))
        state = self.optimizer.state_dict()
        for i, name in enumerate(self.params):
            if i in state["state"]:
                state["state"][i] = {
                    key: self._local(name, value).to(self.shard_device) if value.dim() else value
                    for key, value in state["state"][i].items()
                }
        self.shard_optimizer.load_state_dict(state)
        self.shard_tokens_since_fired = self._local("b_enc", self.tokens_since_fired).clone()

    # -- the step -----------------------------------------------------------------------------------------------

    def one_step(self) -> dict[str, float]:
        tc, p, step = self.tc, self.params, self.step
        cfg = self.sae.cfg
        x = self.rows.take(self.batch_rows(step)).to(self.shard_device) * cfg.input_scale
        dead = (self.shard_tokens_since_fired >= tc.dead_after_tokens).to(self.shard_device)
        pre = _CopyToShards.apply(x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
        values, indices = _global_topk(pre, cfg.active_k)
        x_hat = _SumOverShards.apply(sparse_decode(values, indices, p["W_dec"])) + p["b_dec"]
        mse = squared_error(x, x_hat)
        aux = self._auxk(x, x_hat, pre, dead, tc.aux_k or max(1, cfg.d_in // 2))
        loss = mse + tc.aux_coefficient * aux
        self.shard_optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)  # not loss.backward(), nnsight's patched method (see sae/train.py)
        remove_parallel_gradient(p["W_dec"])
        if tc.grad_clip > 0:
            self._clip(tc.grad_clip)
        for group in self.shard_optimizer.param_groups:
            group["lr"] = tc.peak_lr * lr_factor(step, tc)
        self.shard_optimizer.step()
        with torch.no_grad():
            p["W_dec"].div_(p["W_dec"].norm(dim=1, keepdim=True).clamp_min(1e-8))
        fired = torch.zeros_like(pre, dtype=torch.bool).scatter_(-1, indices, values > 0)
        self.shard_tokens_since_fired += x.shape[0]
        self.shard_tokens_since_fired[fired.any(0).cpu()] = 0
        self.step += 1
        l0 = _SumOverShards.apply(fired.sum(-1).float()).mean()
        dead_count = (self.shard_tokens_since_fired >= tc.dead_after_tokens).sum().to(self.shard_device)
        dead_fraction = _SumOverShards.apply(dead_count)
        variance = x.sub(x.mean(0)).pow(2).sum(-1).mean().item()
        return {
            "loss": loss.item(),
            "mse": mse.item(),
            "auxk": aux.item(),
            "l0": l0.item(),
            "fve": 1 - mse.item() / max(variance, 1e-12),
            "dead": dead_fraction.item() / cfg.n_features,
        }

    def _auxk(
        self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor, aux_k: int
    ) -> torch.Tensor:
        """AuxK over the dead latents of all shards (as `train_sae` computes it over the whole SAE)."""
        n_dead = int(_SumOverShards.apply(dead.sum().to(self.shard_device)))
        if n_dead == 0:
            return pre.new_zeros(())
        error = (x - x_hat).detach()
        masked = pre.masked_fill(~dead, float("-inf"))
        values, indices = _global_topk(masked, min(aux_k, n_dead, pre.shape[-1]))
        error_hat = _SumOverShards.apply(sparse_decode(values, indices, self.params["W_dec"]))
        return auxk_loss(error, error_hat)

    @torch.no_grad()
    def _clip(self, max_norm: float) -> None:
        """`clip_grad_norm_` with the norm of the whole SAE's gradient (sharded parts summed, ``b_dec`` once)."""
        grads = {name: _written_grad(param) for name, param in self.params.items()}
        sharded = reduce(operator.add, (grads[n].pow(2).sum() for n in _SHARDED))
        total = (_SumOverShards.apply(sharded) + grads["b_dec"].pow(2).sum()).sqrt()
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for grad in grads.values():
            grad.mul_(scale)


def train_sae_latent_sharded(
    activations: TrainingRows, n_features: int | None = None, k: int | None = None, **kwargs: Any
) -> SAE:
    """``train_sae(activations, "topk", ..., parallel="latents")``: a TopK SAE with its ``n_features`` latents
    split across the ranks of an initialised ``torch.distributed`` group.

    Call on every rank with the same arguments (``batch_size`` rows per step, the same on every rank); every rank
    returns the full SAE; rank 0 writes ``checkpoint_dir``. ``activations`` may be an `ActivationStore`. Equal to
    ``train_sae(activations, "topk", n_features, k, ...)``.
    """
    require_process_group("train_sae_latent_sharded()")
    return train_sae(activations, "topk", n_features, k, parallel="latents", **kwargs)
