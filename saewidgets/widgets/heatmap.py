"""TokenHeatmap: text coloured by a feature's activation on each token.

Takes a ``TokenActivations`` (``tokens: list[str]``, ``acts: float32 [T, n_sel]``, ``features: list[int]``)
or the same three things as keywords. Activations travel as float32 bytes; the JS builds the token DOM in one
pass with one delegated hover handler, so 10,000 tokens stay responsive.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import traitlets as t

from ._base import ViewWidget
from .serializers import array_to_bytes, bytes_to_array

if TYPE_CHECKING:
    from ..analysis import TokenActivations

# Tokens shown in the script-free fallback (the live view shows all of them).
FALLBACK_TOKENS = 2000


class TokenHeatmap(ViewWidget):
    """Tokens coloured by one feature's activation; hover shows token, value and position.

    ``feature`` is the feature id shown (one of ``features``); the picker in the view switches it. ``scales``
    (one per feature, e.g. each feature's max activation over the corpus) sets full colour; without them a
    column is coloured on its own maximum in this text.
    """

    _view = "heatmap"
    tokens = t.List(t.Unicode()).tag(sync=True)
    acts = t.Bytes(b"").tag(sync=True)
    acts_shape = t.List(t.Int(), default_value=[0, 0]).tag(sync=True)
    features = t.List(t.Int()).tag(sync=True)
    scales = t.List(t.Float()).tag(sync=True)
    feature = t.Int(-1).tag(sync=True)
    title = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        activations: TokenActivations | None = None,
        *,
        tokens: Sequence[str] | None = None,
        acts: Any = None,
        features: Sequence[int] | None = None,
        feature: int | None = None,
        title: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(title=title, **kwargs)
        if activations is not None or tokens is not None:
            self.set_activations(activations, tokens=tokens, acts=acts, features=features, feature=feature)

    def set_activations(
        self,
        activations: TokenActivations | None = None,
        *,
        tokens: Sequence[str] | None = None,
        acts: Any = None,
        features: Sequence[int] | None = None,
        feature: int | None = None,
        scales: Sequence[float] | None = None,
    ) -> None:
        """Show new text: a ``TokenActivations``-like object, or ``tokens`` + ``acts`` ([T] or [T, n]) +
        ``features`` (the feature id of each column; default 0..n-1, or ``[feature]`` for a 1-D ``acts``); ``scales``:
        the activation of full colour for each column (default: the column's own maximum)."""
        if activations is not None:
            tokens = list(activations.tokens)
            acts = activations.acts
            features = list(getattr(activations, "features", []) or [])
        # .float(): numpy has no bfloat16, so a bf16 tensor (a bf16 model's activations) must be cast first
        arr = np.asarray(acts.detach().float().cpu().numpy() if hasattr(acts, "detach") else acts, dtype=np.float32)
        tokens = [str(tok) for tok in (tokens or [])]
        if arr.ndim == 1:
            arr = arr[:, None]
            if not features and feature is not None:
                features = [int(feature)]
        if arr.ndim != 2 or arr.shape[0] != len(tokens):
            raise ValueError(
                f"TokenHeatmap: acts must have shape [T] or [T, n_features] with T = {len(tokens)} tokens; "
                f"got {arr.shape}."
            )
        features = [int(f) for f in (features or range(arr.shape[1]))]
        if len(features) != arr.shape[1]:
            raise ValueError(f"TokenHeatmap: {len(features)} feature ids for {arr.shape[1]} activation columns.")
        scale_list = [float(v) for v in scales] if scales is not None else []
        if scale_list and len(scale_list) != len(features):
            raise ValueError(f"TokenHeatmap: {len(scale_list)} scales for {len(features)} features.")
        shown = (
            int(feature)
            if feature is not None and int(feature) in features
            else (self.feature if self.feature in features else (features[0] if features else -1))
        )
        with self.hold_sync():
            self.tokens = tokens
            self.acts = array_to_bytes(arr)
            self.acts_shape = [int(arr.shape[0]), int(arr.shape[1])]
            self.features = features
            self.scales = scale_list
            self.feature = shown

    @property
    def values(self) -> np.ndarray:
        """The activations shown, float32 ``[T, n_features]``."""
        return bytes_to_array(self.acts, np.float32, self.acts_shape)

    def _fallback_html(self) -> str:
        text = "".join(self.tokens[:FALLBACK_TOKENS])
        more = " …" if len(self.tokens) > FALLBACK_TOKENS else ""
        return (
            f"<p>Token heatmap of feature #{self.feature} (interactive view needs JavaScript).</p>"
            f'<pre style="white-space:pre-wrap">{html.escape(text)}{more}</pre>'
        )
