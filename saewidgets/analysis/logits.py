"""Logit effects: which tokens each feature's decoder direction promotes and suppresses when read as logits.

A direction ``d`` added to the final residual changes the logits by ``W_U @ norm(h + d) - W_U @ norm(h)``, which
depends on the token through the norm's per-token scale ``1/rms(h)``. Following the usual choice (sae-vis,
Neuronpedia) we drop that scale and keep everything else the norm does to a direction: its gain (``weight``, or
``1 + weight`` for Gemma's RMSNorm) and, for LayerNorm, the mean-centring. So

    effect(d) = W_U @ (gain * centre(d))        (a norm's bias does not depend on d and drops out)

Rankings of promoted / suppressed tokens are exactly those at any real token, since the dropped scale is one
positive number per token; values are logits per unit of feature activation, before that scale (and before any
logit soft-capping). Which form the model's norm takes is checked numerically, not assumed from its class name.

Those per-unit values are hard to read: Gemma's ``1 + w`` gain puts them in the hundreds, and nothing says how big a
unit is. So `LogitEffects` also keeps ``final_rms``, the median scale the final norm divides by on real tokens, and
``promoted(i, activation=a)`` gives the **logit change when the feature is at activation ``a``** on a token of typical
norm: ``value * a / final_rms`` (the usual linearisation: the added direction is small next to the residual). The
feature card uses the feature's mean activation, so its values read as "Δlogit at mean activation", a few logits for
a strong feature; the ranking is the per-unit one, since each feature's values are scaled by one positive number.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .._atomic_write import atomic_dir
from .._checks import whole_number
from ..models.handle import ModelHandle
from ..progress import progress_bar
from ._common import check_feature, decoder_directions, n_features_of
from .results import TokenLogit

if TYPE_CHECKING:
    from ..sae import SAE

_TENSORS = "logit_effects.safetensors"
_META = "logit_effects.json"


@dataclass(eq=False)
class LogitEffects:
    """Top ``k`` promoted and suppressed tokens of every feature (values: logits per unit activation)."""

    promoted_ids: torch.Tensor  # [F, k] int64, most promoted first
    promoted_values: torch.Tensor  # [F, k]
    suppressed_ids: torch.Tensor  # [F, k] int64, most suppressed first
    suppressed_values: torch.Tensor  # [F, k] (negative)
    token_strings: dict[int, str] = field(repr=False)
    fingerprint: str = ""
    final_rms: float | None = None
    """Median, over sample tokens, of the scale the model's final norm divides the residual by (its rms, centred
    for a LayerNorm); None when unknown (then only per-unit values are available)."""

    @property
    def n_features(self) -> int:
        return int(self.promoted_ids.shape[0])

    def _rows(
        self, ids: torch.Tensor, values: torch.Tensor, feature: int, activation: float | None
    ) -> list[TokenLogit]:
        i = check_feature(self.n_features, feature)
        factor = self.logit_change_factor(activation) if activation is not None else 1.0
        return [TokenLogit(self.token_strings[int(t)], float(v) * factor) for t, v in zip(ids[i], values[i])]

    def logit_change_factor(self, activation: float) -> float:
        """What turns a per-unit value into the logit change at ``activation`` on a token of typical norm:
        ``activation / final_rms``."""
        if self.final_rms is None:
            raise ValueError(
                "these logit effects carry no final_rms (computed by an older saewidgets): compute them "
                "again with logit_effects() to get logit changes."
            )
        return float(activation) / self.final_rms

    @staticmethod
    def unit(at: str | None = None) -> str:
        """How `promoted` / `suppressed` values read: per unit activation, or the logit change at the activation
        named by ``at`` (e.g. ``"mean act"``)."""
        return f"Δlogit @ {at}" if at else "logit / unit act (before the final norm's 1/rms)"

    _TENSOR_FIELDS = ("promoted_ids", "promoted_values", "suppressed_ids", "suppressed_values")

    def save(self, path: str | os.PathLike) -> Path:
        """Write to folder ``path`` (safetensors + json), atomically."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            save_file({k: getattr(self, k).contiguous() for k in self._TENSOR_FIELDS}, str(tmp / _TENSORS))
            meta = {
                "fingerprint": self.fingerprint,
                "final_rms": self.final_rms,
                "token_strings": {str(k): v for k, v in self.token_strings.items()},
            }
            (tmp / _META).write_text(json.dumps(meta))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LogitEffects:
        """Read logit effects written by `save`."""
        path = Path(path)
        try:
            meta = json.loads((path / _META).read_text())
            tensors = load_file(str(path / _TENSORS))
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{path} holds no readable logit effects ({err}); compute them with logit_effects()."
            ) from err
        return cls(
            **{k: tensors[k] for k in cls._TENSOR_FIELDS},
            fingerprint=meta["fingerprint"],
            token_strings={int(k): v for k, v in meta["token_strings"].items()},
            final_rms=meta.get("final_rms"),
        )

    def promoted(self, feature: int, activation: float | None = None) -> list[TokenLogit]:
        """The tokens the feature most promotes. Values are logits per unit activation, or
        with ``activation`` the logit change when the feature is at that activation (see the module docstring)."""
        return self._rows(self.promoted_ids, self.promoted_values, feature, activation)

    def suppressed(self, feature: int, activation: float | None = None) -> list[TokenLogit]:
        """The tokens the feature most suppresses (most negative first); values as in
        `promoted`."""
        return self._rows(self.suppressed_ids, self.suppressed_values, feature, activation)


def norm_gain(norm: torch.nn.Module, d_model: int) -> tuple[torch.Tensor, bool]:
    """The final norm's per-dimension gain and whether it mean-centres, checked against the module itself.

    Tries the forms in use (RMSNorm ``w``, Gemma RMSNorm ``1 + w``, LayerNorm ``w`` with centring) on random
    vectors and keeps the one that reproduces the module's output.
    """
    weight = getattr(norm, "weight", None)
    weight = torch.ones(d_model) if weight is None else weight.detach().float().cpu()
    bias = getattr(norm, "bias", None)
    bias = torch.zeros(d_model) if bias is None else bias.detach().float().cpu()
    x = torch.randn(8, d_model, generator=torch.Generator().manual_seed(0)) * 3 + 1
    param = next(norm.parameters(), None)
    with torch.no_grad():
        y = norm(
            x.to(param.device if param is not None else "cpu", param.dtype if param is not None else torch.float32)
        )
    y = y.float().cpu()
    for gain in (weight, 1.0 + weight):
        for centres in (False, True):
            c = x - x.mean(-1, keepdim=True) if centres else x
            predicted = gain * c / c.pow(2).mean(-1, keepdim=True).sqrt() + bias
            if torch.allclose(predicted, y, rtol=1e-3, atol=1e-4 * float(y.abs().max())):
                return gain, centres
    raise NotImplementedError(
        f"The final norm {type(norm).__name__} is neither an RMSNorm (gain w or 1 + w) nor a LayerNorm: "
        "saewidgets cannot read directions through it as logits."
    )


def _through_final_norm(model: ModelHandle, directions: torch.Tensor) -> torch.Tensor:
    """What the unembedding sees of residual directions ``[n, d_model]``: centred if the final norm centres, times
    its gain (the norm's division by the residual's scale is the same for every token, so it is left out)."""
    if model.remote:
        raise ValueError(
            "Reading directions as logits needs the final norm's and the unembedding's weights, and a remote model "
            "keeps them on NDIF (here they are on the meta device): load the model locally, load_model(name) "
            "without remote=, for logit effects and promoting features."
        )
    gain, centres = norm_gain(model.final_norm, model.d_model)
    d = directions.float().cpu()
    if centres:
        d = d - d.mean(-1, keepdim=True)
    return d * gain


def direction_logits(model: ModelHandle, directions: torch.Tensor) -> torch.Tensor:
    """Logit effect ``[n, vocab]`` of residual directions ``[n, d_model]`` (see the module docstring)."""
    with torch.no_grad():
        return model.unembed_product(_through_final_norm(model, directions))


def direction_logit_z(model: ModelHandle, directions: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """How far each direction's logit effect on the tokens ``ids`` stands out from its effect on the whole
    vocabulary: ``[n, len(ids)]`` z-scores, ``(logit - mean) / std`` over the vocabulary of `direction_logits`.

    Read from the unembedding's mean and covariance (`ModelHandle.unembed_moments`, computed once per model) and
    its rows for ``ids``, so no ``[n, vocab]`` logits are made: all 4,096 directions of an SAE on Gemma's 262k-token
    vocabulary in well under a second once the moments are known."""
    v = _through_final_norm(model, directions).double()
    mean, cov = model.unembed_moments
    spread = ((v @ cov) * v).sum(-1).clamp_min(1e-24).sqrt()
    logits = v @ model.unembed_rows(ids).double().cpu().T
    return (logits - (v @ mean)[:, None]) / spread[:, None]


#: Sentences whose tokens give the typical scale of the final residual (`final_residual_rms`) by default.
TYPICAL_TEXTS = (
    "The Golden Gate Bridge is a suspension bridge spanning the strait between San Francisco Bay and the Pacific.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "She said she would be home by six, but the train was late again and it was raining.",
    "La tour Eiffel a été construite pour l'Exposition universelle de 1889 à Paris.",
    "In 2023 the company reported revenue of $4.2 billion, up 12% from the previous year.",
    "Honesty is the best policy, my grandmother used to say, though she told the occasional white lie.",
)


def final_residual_rms(model: ModelHandle, texts: Any = TYPICAL_TEXTS) -> float:
    """Median, over the tokens of ``texts`` (BOS left out), of the scale the final norm divides the residual by:
    the rms of the residual after the last block (centred first for a LayerNorm)."""
    from ..activations import harvest

    _, centres = norm_gain(model.final_norm, model.d_model)
    x = torch.from_numpy(np.asarray(harvest(model, texts, layer=model.n_layers - 1, progress=False).acts)).double()
    if centres:
        x = x - x.mean(-1, keepdim=True)
    return float(x.pow(2).mean(-1).sqrt().median())


def logit_effects(
    model: ModelHandle,
    sae: SAE,
    k: int = 10,
    batch_size: int = 4096,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    texts: Any = TYPICAL_TEXTS,
) -> LogitEffects:
    """Each feature's ``k`` most promoted and most suppressed tokens, and the final residual's typical scale
    (``final_rms``, measured on ``texts``) that turns their values into logit changes.

    ``batch_size`` features go through the unembedding together, a block of its rows at a time (`extreme_logits`):
    no ``[features, vocab]`` logits are made (4,096 x 2,048 float32, 34 MB, is the largest block), and Gemma's
    compact head is decoded once per ``batch_size`` features. The full demo SAE's 4,096 features took 12-15 s this
    way against 16-34 s going 64 features at a time over the whole vocabulary (benchmarks/README.md), with
    identical results. With ``cache_dir`` the result is kept there, keyed by the SAE's fingerprint, the model and
    ``k``, and loaded on later calls.
    """
    k, batch_size = whole_number("k", k, 1), whole_number("batch_size", batch_size, 1)
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([sae.fingerprint(), model.name, model.vocab_size, k]).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"logit_effects-{key}"
        if (path / _META).exists():
            effects = LogitEffects.load(path)
            if effects.final_rms is not None:
                return effects
            effects.final_rms = final_residual_rms(model, texts)  # cached by an older saewidgets
        else:
            effects = logit_effects(model, sae, k, batch_size, progress, texts=texts)
        effects.save(path)
        return effects
    n = n_features_of(sae)
    k = min(k, model.vocab_size)
    starts = range(0, n, batch_size)
    parts = []
    with progress_bar(len(starts) * model.vocab_size, desc="logit effects", unit="tok", disable=not progress) as bar:
        for start in starts:
            features = torch.arange(start, min(n, start + batch_size))
            directions = _through_final_norm(model, decoder_directions(sae, features))
            parts.append(extreme_logits(model, directions, k, on_block=bar.update))
    promoted_ids, promoted_values, suppressed_ids, suppressed_values = (torch.cat(p) for p in zip(*parts))
    used = torch.cat([promoted_ids.flatten(), suppressed_ids.flatten()]).unique().tolist()
    return LogitEffects(
        promoted_ids,
        promoted_values,
        suppressed_ids,
        suppressed_values,
        token_strings=dict(zip(used, model.tokens_to_str(used))),
        fingerprint=sae.fingerprint(),
        final_rms=final_residual_rms(model, texts),
    )


@torch.no_grad()
def extreme_logits(
    model: ModelHandle, x: torch.Tensor, k: int, on_block: Callable[[int], Any] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest and ``k`` smallest entries of ``x @ unembed.T`` per row of ``x [n, d_model]``: (ids,
    values) largest first, then (ids, values) smallest first, each ``[n, k]``.

    Every row meets each block of the unembedding's rows while that block is at hand (`unembed_blocks`), and only a
    running top and bottom ``k`` are kept: for Gemma's compact head each block is decoded once for all rows, where a
    product per group of rows decoded the whole head again for each group. The blocks are the compact head's own
    (`q8_embedding.product_block_rows`): on the CPU they start on multiples of 16 rows, so the logits are bit for bit
    those of the whole product.
    ``on_block(rows)`` is called after each block (a progress bar's ``update``)."""
    from ..models.q8_embedding import as_head_input, product_block_rows
    from ..models.vocab import unembed_blocks

    head = model.hf.get_output_embeddings()
    x = as_head_input(head, x)
    n, rows = len(x), product_block_rows(x.device)
    high = (torch.full((n, 0), -torch.inf, device=x.device), torch.zeros((n, 0), dtype=torch.long, device=x.device))
    low = (torch.full((n, 0), torch.inf, device=x.device), torch.zeros((n, 0), dtype=torch.long, device=x.device))
    buffer = x.new_empty(n, min(rows, head.out_features))  # reused: a fresh block per product faults it in
    for start, weight, _ in unembed_blocks(head, rows):  # a head's bias is the same for every direction
        logits = torch.mm(x, weight.detach().to(x.dtype).T, out=buffer[:, : len(weight)])
        high = _merge(high, logits, start, k, largest=True)
        low = _merge(low, logits, start, k, largest=False)
        if on_block is not None:
            on_block(len(weight))
    return high[1].cpu(), high[0].float().cpu(), low[1].cpu(), low[0].float().cpu()


def _merge(
    kept: tuple[torch.Tensor, torch.Tensor], logits: torch.Tensor, start: int, k: int, largest: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The running (values, ids) of `extreme_logits` with a block of ``logits`` (its first column is token
    ``start``) taken in: the ``k`` largest (or smallest) of both, in order."""
    values, ids = logits.topk(min(k, logits.shape[-1]), dim=-1, largest=largest)
    values, ids = torch.cat([kept[0], values], -1), torch.cat([kept[1], ids + start], -1)
    best, where = values.topk(min(k, values.shape[-1]), dim=-1, largest=largest)
    return best, ids.gather(-1, where)
