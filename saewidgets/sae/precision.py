"""Mixed-precision training: the step's matrix products in bf16 or fp16, everything `train_sae` keeps in float32.

``TrainConfig.precision`` picks it. ``"fp32"`` is plain float32. ``"bf16"`` and ``"fp16"`` run the step under
``torch.autocast`` (CPU or CUDA), so the products (the encoder product above all, the only dense one of a sparse
TopK step) run in 16 bits, while the weights, their gradients, Adam's state, the loss and the metrics stay float32:
the master weights never lose precision, only each step's products do. fp16's narrow exponent range needs the loss
scaled against gradient underflow (`torch.amp.GradScaler`); bf16 has float32's range and needs none.
"""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a training step runs in: ``torch.autocast`` to ``precision``'s dtype, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (whose gradients underflow without one), None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def compute_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype autocast gives a matrix product of ``like`` here: its own, or autocast's 16-bit dtype when autocast
    is on for its device. For products written with ``out=`` (which autocast leaves in float32)."""
    device = like.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else like.dtype
