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

import atexit
import gc
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

# Imported before any process group exists, on purpose: torch.distributed.nn.functional binds the default group as
# default arguments (``group=group.WORLD``) when first imported, and torch imports it lazily with torch._dynamo (at
# the first optimizer made). Imported after init_process_group, it keeps the group alive past destroy_process_group,
# with gloo's threads running, until interpreter teardown, where destroying it aborted finished runs now and then
# ("terminate called without an active exception"). Imported now, its defaults are None: the group at call time.
import torch.distributed.nn.functional  # noqa: F401

from ..activation_source import TrainingRows
from .base import SAE
from .data import Rows
from .train import Trainer, train_sae
from .train_config import TrainConfig

LAUNCH_HINT = "launch with `torchrun --nproc-per-node N -m saewidgets.training_run ...`"


def require_process_group(what: str) -> None:
    """Raise a clear error when ``what`` runs outside an initialised ``torch.distributed`` process group."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{what} needs a torch.distributed process group: {LAUNCH_HINT}, or train in one process with train_sae()."
        )


class DataParallelTrainer(Trainer):
    """`Trainer` with gradients, firing statistics and logged metrics averaged across ranks."""

    def __init__(self, rows: Rows, config: TrainConfig, device: torch.device) -> None:
        require_process_group("Data-parallel training")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if config.batch_size % self.world_size:
            raise ValueError(
                f"batch_size={config.batch_size} is not divisible by the {self.world_size} ranks: every rank must "
                f"train on an equal slice of the global batch. Pass a multiple of {self.world_size}."
            )
        super().__init__(rows, config, device)
        for p in self.sae.parameters():  # identical by construction; broadcasting makes it so whatever happens
            dist.broadcast(p.data, src=0)
            p.register_post_accumulate_grad_hook(self._average_gradient)

    def batch_rows(self, step: int) -> np.ndarray:
        """This rank's slice of the global batch."""
        return np.array_split(self.order.rows(step), self.world_size)[self.rank]

    def extra_provenance(self) -> dict[str, Any]:
        return {"data_parallel_ranks": self.world_size}

    def any_rank(self, asked: bool) -> bool:
        return asked_on_any_rank(asked, self.device)

    def _average_gradient(self, p: torch.Tensor) -> None:
        grad = p.grad
        assert grad is not None, "a post-accumulate-grad hook runs after the gradient is written"
        dist.all_reduce(grad)
        grad.div_(self.world_size)

    def _reduced(self, t: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
        """``t`` reduced across ranks (through this rank's device: NCCL reduces GPU tensors only)."""
        on_device = t.to(self.device)
        dist.all_reduce(on_device, op=op)
        return on_device.to(t.device)

    def one_step(self) -> dict[str, float]:
        counters = self.tokens_since_fired.clone()
        info = super().one_step()
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


def asked_on_any_rank(asked: bool, device: torch.device) -> bool:
    """Whether ``asked`` is True on any rank of the group (a collective: every rank calls it at the same step, so
    a stop asked for on one rank, e.g. by its Ctrl-C, stops them all there instead of leaving the others waiting
    in the next step's all-reduce). ``device``: this rank's (NCCL reduces GPU tensors only)."""
    flag = torch.tensor([int(asked)], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def train_sae_distributed(
    activations: TrainingRows, arch: Any = None, n_features: int | None = None, k: int | None = None, **kwargs: Any
) -> SAE:
    """``train_sae(..., parallel="data")``: `train_sae` across the ranks of an initialised process group.

    Call it on every rank with the same arguments; ``batch_size`` is the global batch (each rank trains on
    ``batch_size / world_size`` rows per step). ``activations`` may also be an `ActivationStore`. Every rank returns
    the same SAE; only rank 0 writes ``checkpoint_dir``. `init_process_group` joins the group torchrun describes
    (or makes a one-process group, so the same script also runs under plain ``python``).
    """
    require_process_group("train_sae_distributed()")
    return train_sae(activations, arch, n_features, k, parallel="data", **kwargs)


def init_process_group() -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes in the environment: (rank, world_size, this rank's device).

    NCCL with one GPU per rank when CUDA is available, gloo on CPU otherwise. Without torchrun's variables
    (a plain ``python -m``), a one-process group is made so the same code path runs.
    """
    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
        )
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
        atexit.register(_leave_process_group)
    return dist.get_rank(), dist.get_world_size(), device


#: How long `_leave_process_group` waits for gloo's threads to end after destroying the group.
GLOO_EXIT_WAIT_S = 5.0


def _leave_process_group() -> None:
    """Destroy the group this process joined, if still there, while the interpreter is whole: gloo's threads end
    here, not during teardown, where they aborted runs that had finished (see the torch.distributed.nn import).
    A gloo device's loop thread ends when its last reference goes, which can be just after the destroy returns
    (a CI run once found ``gloo_tcp_loop`` still there at exit), so this collects garbage and waits for the threads
    (Linux, where ``/proc`` lists them), at most `GLOO_EXIT_WAIT_S`."""
    if dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()
        deadline = time.monotonic() + GLOO_EXIT_WAIT_S
        while _gloo_threads() and time.monotonic() < deadline:
            time.sleep(0.02)


def _gloo_threads() -> list[str]:
    """The names of this process's threads that are gloo's (empty where ``/proc`` does not list threads)."""
    names = []
    for comm in Path(f"/proc/{os.getpid()}/task").glob("*/comm"):
        try:
            names.append(comm.read_text().strip())
        except OSError:  # a thread that ended while being listed
            continue
    return [name for name in names if "gloo" in name]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = [
    "DataParallelTrainer",
    "asked_on_any_rank",
    "init_process_group",
    "require_process_group",
    "train_sae_distributed",
]
