"""Training and evaluation inputs: rows of activations from a tensor, an array or an `Activations` object.

Anything with an ``.acts`` matrix is a `RowSource` (an `Activations`, an `ActivationStore`; this module never imports
the harvesting code), and its ``model_name``, ``layer`` and ``site`` are carried into the SAE's config.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..activation_source import RowSource, TrainingRows

_SCAN_ROWS = 65_536  # rows checked for NaN/inf at a time (bounded memory on memory-mapped harvests)


@dataclass
class Rows:
    """An ``[N, d]`` float matrix (numpy, maybe memory-mapped) plus where it was read, if known."""

    matrix: np.ndarray | torch.Tensor
    model_name: str = ""
    layer: int | None = None
    site: str = ""

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def d(self) -> int:
        return int(self.matrix.shape[1])

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """The given rows as a float32 tensor (indices are read in sorted order: fast on memory maps)."""
        rows = np.sort(rows)
        if isinstance(self.matrix, torch.Tensor):
            return self.matrix[torch.from_numpy(rows)].float()
        return torch.from_numpy(np.ascontiguousarray(self.matrix[rows], dtype=np.float32))

    def fingerprint(self) -> str:
        """A cheap identity of the data (shape and a few rows), so a checkpoint is not resumed on other data."""
        n = len(self)
        probe = np.unique(np.array([0, n // 3, n // 2, n - 1]))
        h = hashlib.sha256(f"{n}x{self.d}".encode())
        h.update(self.take(probe).numpy().tobytes())
        return h.hexdigest()[:16]


def _is_row_matrix(matrix: Any) -> bool:
    """A numpy-like matrix read by row indexing (e.g. the disk store's `ShardedRows`)."""
    return all(hasattr(matrix, a) for a in ("shape", "dtype", "ndim", "__getitem__"))


def as_rows(activations: TrainingRows) -> Rows:
    """Accept an ``[N, d]`` tensor / ndarray or anything with an ``.acts`` matrix (an `Activations`)."""
    meta: dict[str, Any] = {}
    matrix: Any = activations  # an ndarray, a tensor, or a numpy-like matrix (a store's sharded rows)
    if isinstance(activations, RowSource):
        matrix = activations.acts
        layer = getattr(activations, "layer", None)
        meta = {
            "model_name": getattr(activations, "model_name", "") or "",
            "layer": layer if isinstance(layer, int) and layer >= 0 else None,
            "site": getattr(activations, "site", "") or "",
        }
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach()
    elif not isinstance(matrix, np.ndarray) and not _is_row_matrix(matrix):
        raise TypeError(
            f"Expected activations as an [N, d] tensor, a numpy array or an Activations object, got "
            f"{type(activations).__name__}. Harvest some with saewidgets.harvest(model, texts)."
        )
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(
            f"Expected activations of shape [n_tokens, d_model] with at least one row, got shape {tuple(matrix.shape)}. "
            "Flatten [batch, tokens, d] activations with .reshape(-1, d)."
        )
    if not (
        matrix.dtype.is_floating_point if isinstance(matrix, torch.Tensor) else np.issubdtype(matrix.dtype, np.floating)
    ):
        raise TypeError(f"Expected floating-point activations, got dtype {matrix.dtype}.")
    return Rows(matrix, **meta)


def check_finite(rows: Rows) -> None:
    """Raise `FloatingPointError` naming the row and column of the first NaN/inf value, if there is one."""
    for start in range(0, len(rows), _SCAN_ROWS):
        block = rows.matrix[start : start + _SCAN_ROWS]
        finite = torch.isfinite(block) if isinstance(block, torch.Tensor) else np.isfinite(block)
        if not bool(finite.all()):
            bad = np.argwhere(~np.asarray(finite))[0]
            row, col = start + int(bad[0]), int(bad[1])
            raise FloatingPointError(
                f"The activations contain {float(block[bad[0], bad[1]])} at row {row}, column {col} "
                f"(first non-finite value of {len(rows):,} x {rows.d}). Drop or re-harvest those rows "
                "(a float16 model overflows: load it in float32 or bfloat16)."
            )
