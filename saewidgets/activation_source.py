"""What every holder of harvested activations offers: `ActivationSource`, which `Activations` (in memory or
memory-mapped) and `ActivationStore` (sharded on disk) both implement.

Training, statistics and metrics take any `ActivationSource`. Only `Activations` can also ``split`` itself by
document, ``save`` and ``load``: a store is already on disk, and ``store.subset(rows)`` gives an `Activations` of
any part of it. Training alone needs less, a `RowSource`: anything with an ``acts`` matrix (its model, layer and
site are read when present).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .activations import Activations


@runtime_checkable
class RowSource(Protocol):
    """An ``[N, d_model]`` matrix of activation rows (a numpy array, a memory map, or a store's sharded rows)."""

    @property
    def acts(self) -> Any: ...


@runtime_checkable
class ActivationSource(RowSource, Protocol):
    """Harvested residual activations with the tokens they came from, row by row in (document, position) order."""

    @property
    def token_ids(self) -> Any: ...
    @property
    def doc_ids(self) -> Any: ...
    @property
    def positions(self) -> Any: ...
    @property
    def model_name(self) -> str: ...
    @property
    def layer(self) -> int: ...
    @property
    def site(self) -> str: ...
    @property
    def d_model(self) -> int: ...

    def __len__(self) -> int: ...

    def torch(self, rows: slice | np.ndarray | None = None) -> torch.Tensor:
        """Rows as a float32 tensor."""
        ...

    def context(self, row: int, before: int = 10, after: int = 4) -> np.ndarray:
        """Token ids around ``row`` within its document."""
        ...

    def subset(self, rows: np.ndarray | slice) -> Activations:
        """The given rows as an in-memory `Activations`."""
        ...


#: What training and evaluation read rows from: a `RowSource` (`Activations`, a store) or a bare ``[N, d_model]``
#: tensor or array (`sae.data.as_rows` takes each).
TrainingRows = Union[RowSource, "torch.Tensor", "np.ndarray"]


def is_activation_source(value: Any) -> bool:
    """Whether ``value`` holds harvested activations (rather than texts to harvest)."""
    return isinstance(value, ActivationSource)
