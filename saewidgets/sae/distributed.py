"""Data-parallel SAE training on ``torch.distributed`` (gloo on CPU, NCCL on GPU), equal to one process.

Every rank holds the same rows (an `ActivationStore` on a shared disk, or an in-memory harvest) and the same
initial SAE (same seed, same input statistics). Step ``s`` of a single-process run trains on the global batch
``BatchOrder(n_rows, batch_size, seed).rows(s)``; here rank ``r`` takes the ``r``-th of ``world_size`` equal
slices of it. Gradients are averaged across ranks as soon as backward has accumulated them (a post-accumulate
hook per parameter, as DDP does), so the decoder projection, clipping and Adam then run on the global-batch
gradient, identically on every rank. After each step the dead-latent counters are made global too (a latent fired
if it fired on any rank; every rank counts ``batch_size`` tokens). Rank 0 alone writes checkpoints (atomically,
through `save_checkpoint`); every rank resumes from the same file, so the store and ``checkpoint_dir`` must be on
a filesystem every rank sees (one machine, or a shared mount across nodes).

The result equals single-process `train_sae` on the same rows and settings within float tolerance (summation
order differs) for ``relu``, ``jumprelu`` and ``topk``. Two objectives are batch-global and only approximately
equal: ``batchtopk`` picks the top ``k x batch`` activations per rank (its inference threshold is averaged across
ranks), and the AuxK term of ``topk``/``batchtopk`` normalises by each rank's error variance once latents are dead.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..store import ShardedRows
from .base import SAE
from .config import Architecture, SAEConfig, TrainConfig
from .data import Rows, as_rows, check_finite
from .train import StepCallback, _checkpoint_to_resume, _Trainer, default_lr


class _RankSlice:
    """Rank ``rank``'s slice of every global batch of a `BatchOrder`."""

    def __init__(self, order: Any, rank: int, world_size: int) -> None:
        self.order, self.rank, self.world_size = order, rank, world_size

    def rows(self, step: int) -> np.ndarray:
        return np.array_split(self.order.rows(step), self.world_size)[self.rank]


class DataParallelTrainer(_Trainer):
    """`train_sae`'s trainer with gradients, firing statistics and logged metrics averaged across ranks."""

    def __init__(self, rows: Rows, cfg: SAEConfig, tc: TrainConfig, device: torch.device) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if tc.batch_size % self.world_size:
            raise ValueError(
                f"batch_size={tc.batch_size} is not divisible by the {self.world_size} ranks: every rank must train "
                f"on an equal slice of the global batch. Pass a multiple of {self.world_size}."
            )
        super().__init__(rows, cfg, tc, device)
        self.order = _RankSlice(self.order, self.rank, self.world_size)
        for p in self.sae.parameters():  # identical by construction; broadcasting makes it so whatever happens
            dist.broadcast(p.data, src=0)
            p.register_post_accumulate_grad_hook(self._average_gradient)

    def _average_gradient(self, p: torch.Tensor) -> None:
        dist.all_reduce(p.grad)
        p.grad.div_(self.world_size)

    def _reduced(self, t: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
        """``t`` reduced across ranks (through this rank's device: NCCL reduces GPU tensors only)."""
        on_device = t.to(self.device)
        dist.all_reduce(on_device, op=op)
        return on_device.to(t.device)

    def _one_step(self) -> dict[str, float]:
        counters = self.tokens_since_fired.clone()
        info = super()._one_step()
        # The parent counted this rank's tokens and firings; a latent fired if it fired on any rank.
        fired = self._reduced((self.tokens_since_fired == 0).to(torch.int32), dist.ReduceOp.MAX)
        self.tokens_since_fired = torch.where(fired.bool(), 0, counters + self.tc.batch_size)
        if self.sae.cfg.architecture == "batchtopk":
            dist.all_reduce(self.sae.threshold)
            self.sae.threshold.div_(self.world_size)
        names = sorted(info)
        values = self._reduced(torch.tensor([info[n] for n in names], dtype=torch.float64))
        info = dict(zip(names, (values / self.world_size).tolist()))
        info["dead"] = float((self.tokens_since_fired >= self.tc.dead_after_tokens).float().mean())
        return info


def _rows(activations: Any) -> Rows:
    """`as_rows`, plus an `ActivationStore`, whose sharded rows are read by index like a memory map."""
    if isinstance(getattr(activations, "acts", None), ShardedRows):
        return Rows(activations.acts, activations.model_name, activations.layer, activations.site)
    return as_rows(activations)


def setup_run(caller: str, activations: Any, arch: Architecture, n_features: int, k: int | None, *,
              lr: float | None, batch_size: int, n_steps: int, seed: int,
              **options: Any) -> tuple[Rows, SAEConfig, TrainConfig]:
    """Rows and configs of a run across a process group, checked as `train_sae` checks them."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{caller}() needs a torch.distributed process group: launch with "
            "`torchrun --nproc-per-node N -m saewidgets.train ...`, or call train_sae() in a single process."
        )
    rows = _rows(activations)
    check_finite(rows)
    if n_steps < 1 or batch_size < 1:
        raise ValueError(f"n_steps and batch_size must be positive, got n_steps={n_steps}, batch_size={batch_size}.")
    tc = TrainConfig(n_steps=n_steps, batch_size=batch_size, seed=seed,
                     lr=lr if lr is not None else default_lr(arch, n_features), **options)
    cfg = SAEConfig(d_in=rows.d, n_features=n_features, architecture=arch, k=k, model_name=rows.model_name,
                    layer=rows.layer, site=rows.site)
    return rows, cfg, tc


def resume_from(trainer: Any, checkpoint_dir: str | os.PathLike | None, resume: bool) -> None:
    """Restore ``trainer`` from ``checkpoint_dir``'s checkpoint when there is one and ``resume`` is set."""
    checkpoint = _checkpoint_to_resume(checkpoint_dir, resume)
    if checkpoint is not None:
        trainer.restore(checkpoint)


def train_sae_distributed(
    activations: Any,
    arch: Architecture = "topk",
    n_features: int = 4096,
    k: int | None = None,
    *,
    lr: float | None = None,
    batch_size: int = 4096,
    n_steps: int = 1000,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = True,
    progress: bool = True,
    callback: StepCallback | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> SAE:
    """`saewidgets.sae.train_sae` across the ranks of an initialised ``torch.distributed`` process group.

    Call it on every rank with the same arguments; ``batch_size`` is the global batch (each rank trains on
    ``batch_size / world_size`` rows per step). ``activations`` may also be an `ActivationStore`. Every rank returns
    the same SAE; only rank 0 writes ``checkpoint_dir``. Other arguments are those of `train_sae` (``l1``, ``l0``
    and any `TrainConfig` field go in ``options``). `init_process_group` joins the group torchrun describes (or
    makes a one-process group, so the same script also runs under plain ``python``).
    """
    rows, cfg, tc = setup_run("train_sae_distributed", activations, arch, n_features, k, lr=lr,
                              batch_size=batch_size, n_steps=n_steps, seed=seed, **options)
    trainer = DataParallelTrainer(rows, cfg, tc, torch.device(device or "cpu"))
    resume_from(trainer, checkpoint_dir, resume)
    writer = checkpoint_dir if trainer.rank == 0 else None
    sae = trainer.run(writer, checkpoint_every, progress and trainer.rank == 0, callback)
    sae.cfg.provenance["data_parallel_ranks"] = trainer.world_size
    return sae


def init_process_group() -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes in the environment: (rank, world_size, this rank's device).

    NCCL with one GPU per rank when CUDA is available, gloo on CPU otherwise. Without torchrun's variables
    (a plain ``python -m``), a one-process group is made so the same code path runs.
    """
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = ["DataParallelTrainer", "init_process_group", "train_sae_distributed"]
