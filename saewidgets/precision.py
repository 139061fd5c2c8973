"""Mixed precision: matrix products in bf16 or fp16 under ``torch.autocast``, everything else in float32.

``precision`` is taken by `train_sae` (``TrainConfig.precision``) and by the harvests (`harvest`, `harvest_to_store`;
``saewidgets train --harvest-precision``). ``"fp32"`` is plain float32. ``"bf16"`` and ``"fp16"`` run the work under
``torch.autocast`` (CPU or CUDA), so the matrix products run in 16 bits. In training that is the encoder product
above all (the only dense one of a sparse TopK step), while the weights, their gradients, Adam's state, the loss and
the metrics stay float32: the master weights never lose precision, only each step's products do. In the harvest it
is the model's linear layers (SAELens's ``autocast_lm``), while the stored residuals are float32. fp16's narrow
exponent range needs the loss scaled against gradient underflow (`torch.amp.GradScaler`); bf16 has float32's range
and needs none.

bf16 is only fast where the hardware has bf16 instructions (`native_bf16`): a CUDA GPU that supports it, or a CPU
with AVX512-BF16 or AMX. Elsewhere the CPU emulates it and may well be slower than float32.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Literal, get_args

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str, value: Any) -> str:
    """``value`` if it is one of `PRECISIONS`, else a ValueError that lists them."""
    if value not in PRECISIONS:
        raise ValueError(
            f"{name}={value!r} is not a precision: pass one of {', '.join(map(repr, PRECISIONS))} "
            "(bf16 and fp16 autocast the matrix products; weights and results stay float32)."
        )
    return str(value)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context the work runs in: ``torch.autocast`` to ``precision``'s dtype, or nothing for fp32."""
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


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (a CPU with AVX512-BF16 or AMX, a CUDA GPU with
    bf16 support), where bf16 autocast is faster than float32 rather than emulated."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def warn_if_emulated(device: torch.device, precision: str) -> None:
    """Warn where bf16 is asked for on hardware without bf16 instructions: autocast still runs, emulated, and may
    well be slower than the float32 it was meant to beat."""
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"precision='bf16' on {device}: this hardware has no bf16 instructions, so autocast emulates them and "
            "may be slower than precision='fp32' (time a few batches before relying on it).",
            RuntimeWarning,
            stacklevel=3,
        )
