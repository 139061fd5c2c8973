"""`TrainConfig`: the one place training defaults live, for `train_sae`, ``saewidgets train`` and torchrun runs.

Every field is checked when the config is made, so a nonsense setting fails at once with the argument, the value
and what to pass instead, never minutes into a run or silently (``l1=-5`` rewarding density, ``n_steps=2.5``,
``checkpoint_every=-1`` never checkpointing). A learning rate too large to train is caught by the trainer, which
stops when the reconstruction error explodes. The command line derives its ``train`` options
from these fields and their docstrings (`saewidgets.cli`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .._checks import real_number, whole_number
from ..precision import Precision, check_precision
from .config import ARCHITECTURES, Architecture

#: Architectures with a ``k`` (exact per token for topk, a batch average for batchtopk).
K_ARCHITECTURES = ("topk", "batchtopk")


def default_lr(n_features: int) -> float:
    """Learning rate that works for short CPU runs: 2e-4 / sqrt(F / 16384) (Gao et al.'s scaling), capped at 1e-3."""
    return min(1e-3, 2e-4 / math.sqrt(n_features / 2**14))


@dataclass(frozen=True)
class TrainConfig:
    """What `train_sae` trains and how: the dictionary, optimisation, sparsity pressure and bookkeeping.

    Stored in every checkpoint. ``train_sae(acts, **fields)``, ``saewidgets train --field value`` and the
    torchrun entry all start from these defaults.
    """

    arch: Architecture = "topk"
    """SAE architecture: relu (L1, Scaling Monosemanticity), topk, batchtopk or jumprelu."""
    n_features: int = 4096
    """Number of latents (dictionary size)."""
    k: int | None = 32
    """Active latents per token (topk; a batch average for batchtopk). Ignored by relu and jumprelu."""
    n_steps: int = 1000
    """Optimizer steps (batches) in the whole run."""
    batch_size: int = 4096
    """Tokens per step (over all ranks when training data-parallel; divisible by their number)."""
    lr: float | None = None
    """Peak Adam learning rate (None: 2e-4 / sqrt(n_features / 16384), at most 1e-3)."""
    lr_warmup_steps: int = 100
    """Linear learning-rate warm-up from 0 over this many steps."""
    lr_decay_fraction: float = 0.2
    """Fraction of the run, at its end, over which the learning rate decays linearly to 0."""
    l1: float = 5.0
    """relu: coefficient of sum_i f_i ||W_dec_i|| (inputs scaled to mean norm sqrt(d_in))."""
    sparsity_warmup_fraction: float = 0.05
    """relu/jumprelu: fraction of the run over which the L1 / L0 coefficient ramps up linearly from 0."""
    l0: float = 1.0
    """jumprelu: coefficient of the L0 penalty (active latents per token, against the summed squared error)."""
    jumprelu_bandwidth: float = 0.05
    """jumprelu: kernel width of the straight-through pseudo-derivative, in the SAE's units (mean input norm
    sqrt(d_in)); widen it if thresholds barely move, narrow it for a sharper estimate."""
    jumprelu_init_threshold: float = 0.1
    """jumprelu: initial threshold of every latent."""
    aux_k: int | None = None
    """topk/batchtopk: dead latents used by the AuxK loss (None: d_in // 2)."""
    aux_coefficient: float = 1 / 32
    """topk/batchtopk: weight of the AuxK loss."""
    dead_after_tokens: int = 1_000_000
    """A latent that has not fired for this many training tokens counts as dead."""
    threshold_momentum: float = 0.01
    """batchtopk: EMA rate of the running inference threshold (minimum selected pre-activation)."""
    sparse_kernels: bool = True
    """topk/batchtopk: train without the dense decoder product (same results within float rounding, ~2x faster on
    CPU at 4k latents, more for wider SAEs)."""
    precision: Precision = "fp32"
    """Precision of the step's matrix products: fp32, or bf16 / fp16 under autocast (CPU or CUDA; weights, Adam
    state and loss stay float32; fp16 scales the loss). bf16 needs CPU or GPU support to be faster, see benchmarks."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 to disable)."""
    seed: int = 0
    """Seeds initialisation and the batch order (each epoch a permutation from (seed, epoch))."""
    n_scale_samples: int = 20_000
    """Rows used to estimate the input scale and the initial b_dec (the data mean)."""
    checkpoint_every: int = 1000
    """Steps between checkpoints when a checkpoint folder is given (0: only when interrupted)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            check = _CHECKS.get(f.name)
            if check is not None and not (value is None and f.name in _OPTIONAL):
                object.__setattr__(self, f.name, check(f.name, value))

    @property
    def peak_lr(self) -> float:
        """``lr``, or the default for this dictionary size when it is None."""
        return self.lr if self.lr is not None else default_lr(self.n_features)

    @property
    def sae_k(self) -> int | None:
        """The ``k`` the SAE gets: ``k`` for topk/batchtopk, None for the architectures that have none."""
        return self.k if self.arch in K_ARCHITECTURES else None

    def with_options(self, **options: Any) -> TrainConfig:
        """A copy with the given fields changed (None leaves a field as it is); unknown names are refused."""
        unknown = sorted(set(options) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(
                f"train_sae() got unknown options {unknown}; see saewidgets.sae.TrainConfig for the fields."
            )
        return replace(self, **{name: value for name, value in options.items() if value is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _architecture(name: str, value: Any) -> str:
    if value not in ARCHITECTURES:
        raise ValueError(f"{name}={value!r} is not an SAE architecture: pass one of {', '.join(ARCHITECTURES)}.")
    return str(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not True or False.")
    return value


_LR_WHY = " (1e-4 to 1e-3 suit most runs; lr=None picks one from n_features)"
_CHECKS = {
    "arch": _architecture,
    "n_features": lambda n, v: whole_number(n, v, 1),
    "k": lambda n, v: whole_number(n, v, 1),
    "n_steps": lambda n, v: whole_number(n, v, 1),
    "batch_size": lambda n, v: whole_number(n, v, 1),
    "lr": lambda n, v: real_number(n, v, 0.0, low_open=True, why=_LR_WHY),
    "lr_warmup_steps": lambda n, v: whole_number(n, v, 0),
    "lr_decay_fraction": lambda n, v: real_number(n, v, 0.0, 1.0),
    "l1": lambda n, v: real_number(n, v, 0.0, why=" (a negative penalty rewards dense codes)"),
    "sparsity_warmup_fraction": lambda n, v: real_number(n, v, 0.0, 1.0),
    "l0": lambda n, v: real_number(n, v, 0.0, why=" (a negative penalty rewards dense codes)"),
    "jumprelu_bandwidth": lambda n, v: real_number(n, v, 0.0, low_open=True),
    "jumprelu_init_threshold": lambda n, v: real_number(n, v, 0.0),
    "aux_k": lambda n, v: whole_number(n, v, 1),
    "aux_coefficient": lambda n, v: real_number(n, v, 0.0),
    "dead_after_tokens": lambda n, v: whole_number(n, v, 1),
    "threshold_momentum": lambda n, v: real_number(n, v, 0.0, 1.0, low_open=True),
    "sparse_kernels": _flag,
    "precision": check_precision,
    "grad_clip": lambda n, v: real_number(n, v, 0.0),
    "seed": lambda n, v: whole_number(n, v, 0),
    "n_scale_samples": lambda n, v: whole_number(n, v, 1),
    "checkpoint_every": lambda n, v: whole_number(n, v, 0),
}
_OPTIONAL = ("k", "lr", "aux_k")
