"""Per-token feature activations of one text, for heatmaps (tokens coloured by how much a feature fires)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._checks import whole_number
from ..cancel import CancelSignal, check_cancel
from ..models.handle import ModelHandle
from ._common import check_features, sae_layer
from ._trace import prompt_features

if TYPE_CHECKING:
    from ..sae import SAE


@dataclass(eq=False)
class TokenActivations:
    """``acts[t, j]`` is feature ``features[j]``'s activation on ``tokens[t]`` (BOS left out)."""

    tokens: list[str]
    acts: np.ndarray  # float32 [T, n_selected]
    features: list[int]


def token_activations(
    model: ModelHandle,
    sae: SAE,
    text: str,
    features: Sequence[int] | None = None,
    n: int = 10,
    layer: int | str | None = None,
    cancel: CancelSignal | None = None,
    check_provenance: bool = True,
    split_special_tokens: bool = True,
) -> TokenActivations:
    """Activations of ``features`` on every token of ``text``; by default the ``n`` features that peak highest.

    ``cancel`` (a `threading.Event`, see `saewidgets.cancel`) is checked before and after the model pass; once
    set, `saewidgets.cancel.Cancelled` is raised instead of returning. The SAE must have been trained on this
    model and layer (``check_provenance=False`` to use it elsewhere). Special-token strings in ``text``
    (``"<bos>"``) are shown as the text they are, unless ``split_special_tokens=False`` turns them into the
    special tokens (which are then left out, as BOS is).
    """
    n = whole_number("n", n, 1)
    check_cancel(cancel, "the token activations")
    tokens, f = prompt_features(
        model, sae, text, sae_layer(model, sae, layer, check_provenance), "text", split_special_tokens
    )
    check_cancel(cancel, "the token activations")
    if features is None:
        peak = f.max(0).values
        chosen = [i for i in peak.argsort(descending=True)[:n].tolist() if peak[i] > 0]
    else:
        chosen = check_features(sae, features)
    return TokenActivations(tokens, f[:, chosen].numpy().astype(np.float32), chosen)
