"""Training checkpoints and the deterministic batch order that makes resuming exact.

A checkpoint holds everything the next step depends on: weights, optimizer state, the step, dead-latent counters,
the RNG state and the data order (seed + row count; batch ``s`` is a pure function of them). It is one file written
atomically (temporary file in the same folder, fsync, rename) and read back with ``torch.load(weights_only=True)``,
so a crash mid-write leaves the previous checkpoint intact and loading never runs pickled code.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic_write import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "saewidgets.sae.checkpoint/1"


class BatchOrder:
    """Rows of batch ``step``: consecutive slices of per-epoch permutations, each drawn from (seed, epoch).

    Any step's rows can be computed without replaying earlier ones, which is what lets a new process resume a run
    on exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, n_rows: int, batch_size: int, seed: int) -> None:
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self._cache: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache[epoch] = torch.randperm(self.n_rows, generator=g).numpy()
        return self._cache[epoch]

    def rows(self, step: int) -> np.ndarray:
        start, stop = step * self.batch_size, (step + 1) * self.batch_size
        parts = []
        while start < stop:
            epoch, offset = divmod(start, self.n_rows)
            take = min(stop - start, self.n_rows - offset)
            parts.append(self.permutation(epoch)[offset : offset + take])
            start += take
        return np.concatenate(parts)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (removing temporaries that killed writes left beside it)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": _FORMAT, **state}, buffer)
    if path.parent.is_dir():
        # A process killed mid-write (SIGKILL, power loss) leaves its hidden temporary file; nothing else deletes it.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, refusing anything else with a message naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}: pass the checkpoint_dir of an earlier train_sae run.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, ...: all mean "not a checkpoint we can trust"
        raise ValueError(
            f"{path} is not a readable saewidgets checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "It may be truncated or not a checkpoint; delete it or pass resume=False to start over."
        ) from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a saewidgets training checkpoint (expected format {_FORMAT}).")
    return state
