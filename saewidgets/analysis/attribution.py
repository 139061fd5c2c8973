"""Which SAE features push the model toward a target token: activation x gradient attribution, checked by ablation.

At the SAE's layer the residual is written as ``h = decode(f) + err``, with the error term ``err`` held fixed.
The attribution of feature ``i`` at position ``t`` is ``f[t, i] * d metric / d f[t, i]``, a linear estimate of how
much the metric (the target's logit at the last position, or a logit difference) would drop if the feature were
switched off there. The error term's own attribution, ``err[t] . d metric / d h[t]``, says how much the SAE leaves
unexplained. For the top features the estimate is checked against the real thing: the metric's drop when the
feature is zeroed at every position (error term kept). BOS is left out: the SAE never saw it in training.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..cancel import CancelSignal, check_cancel
from ..models.handle import ModelHandle
from ._common import content_mask, prompt_ids, sae_layer
from ._trace import last_logits_with_delta, residual_and_gradient
from .results import AttributedFeature, PositionAttribution

if TYPE_CHECKING:
    from ..sae import SAE

Target = str | int | tuple[str | int, str | int] | None


@dataclass(eq=False)
class Attribution:
    """Per-feature, per-position attribution of a target at the last position of a prompt.

    Attributes:
        tokens: the prompt's tokens (BOS included when the model uses one; its row of ``scores`` is zero).
        target: the target as text, e.g. ``"' Paris'"`` or ``"' Paris' - ' London'"``.
        target_ids: its token id(s) (two for a logit difference).
        metric: the target logit (or difference) on the unedited prompt.
        scores: ``[T, F]`` activation x gradient, in logits.
        error_attribution: ``[T]`` the SAE error term's attribution, in logits.
        ablations: feature -> metric(clean) - metric(feature zeroed everywhere), for the top ``n_ablate`` features;
            same sign convention as ``scores``, so estimate and ablation agree when they share a sign.
    """

    tokens: list[str]
    target: str
    target_ids: tuple[int, ...]
    metric: float
    scores: torch.Tensor
    error_attribution: torch.Tensor
    ablations: dict[int, float] = field(default_factory=dict)

    @property
    def totals(self) -> torch.Tensor:
        """``[F]`` each feature's attribution summed over positions."""
        return self.scores.sum(0)

    def top(self, n: int = 10, by: str = "attribution") -> list[AttributedFeature]:
        """The ``n`` features that most support the target (``by="attribution"``), most oppose it
        (``"negative"``) or matter most either way (``"abs"``), each an `AttributedFeature` (``feature``,
        ``attribution``, ``ablation``: None for features that were not ablated, ``positions``)."""
        totals = self.totals
        key = {"attribution": totals, "negative": -totals, "abs": totals.abs()}.get(by)
        if key is None:
            raise ValueError(f"by={by!r} is not understood: use 'attribution', 'negative' or 'abs'.")
        order = [i for i in key.argsort(descending=True).tolist() if totals[i] != 0]
        return [self._row(i) for i in order[:n]]

    def _row(self, feature: int) -> AttributedFeature:
        column = self.scores[:, feature]
        positions = [int(t) for t in column.abs().argsort(descending=True) if column[t] != 0]
        return AttributedFeature(
            feature=feature,
            attribution=float(column.sum()),
            ablation=self.ablations.get(feature),
            positions=[PositionAttribution(t, self.tokens[t], float(column[t])) for t in positions],
        )

    def __repr__(self) -> str:
        return (
            f"Attribution(target {self.target}, metric {self.metric:.3f}, {len(self.tokens)} tokens, "
            f"features {float(self.totals.sum()):+.3f}, error {float(self.error_attribution.sum()):+.3f})"
        )


def target_token(model: ModelHandle, target: str | int) -> int:
    """One token id for ``target`` (a token string or an id); a string of several tokens uses its first, with a
    warning that says how it tokenizes."""
    if isinstance(target, bool) or not isinstance(target, (str, numbers.Integral)):
        raise TypeError(f"target must be a token string or id, got {type(target).__name__} ({target!r}).")
    if not isinstance(target, str):  # an int, numpy's too
        target = int(target)
        if not 0 <= target < model.vocab_size:
            raise ValueError(f"target id {target} is out of range: the vocabulary has ids 0..{model.vocab_size - 1}.")
        return target
    ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"target {target!r} is empty: pass the next token you want to explain, e.g. ' Paris'.")
    if len(ids) > 1:
        pieces = model.tokens_to_str(ids)
        warnings.warn(
            f"target {target!r} is {len(ids)} tokens {pieces}; attributing to the first, {pieces[0]!r} (id {ids[0]}). "
            "Pass a single token (or its id) to choose another.",
            stacklevel=3,
        )
    return int(ids[0])


def _resolve_target(model: ModelHandle, ids: torch.Tensor, layer: int, target: Target) -> tuple[tuple[int, ...], str]:
    if target is None:
        logits = last_logits_with_delta(model, ids, layer, torch.zeros(1, ids.shape[1], model.d_model))
        best = int(logits[0].argmax())
        return (best,), repr(model.tokens_to_str([best])[0])
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(f"A logit-difference target is a pair (good, bad), got {len(target)} items.")
        a, b = target_token(model, target[0]), target_token(model, target[1])
        sa, sb = model.tokens_to_str([a, b])
        return (a, b), f"{sa!r} - {sb!r}"
    t = target_token(model, target)
    return (t,), repr(model.tokens_to_str([t])[0])


def _metric(target_ids: Sequence[int]):
    def metric(logits: torch.Tensor) -> torch.Tensor:
        value = logits[..., target_ids[0]]
        return value - logits[..., target_ids[1]] if len(target_ids) == 2 else value

    return metric


def attribute(
    model: ModelHandle,
    sae: SAE,
    prompt: str,
    target: Target = None,
    layer: int | str | None = None,
    n_ablate: int = 10,
    cancel: CancelSignal | None = None,
    check_provenance: bool = True,
) -> Attribution:
    """Attribute ``target`` at the last position of ``prompt`` to every SAE feature at every position.

    Args:
        target: the next token to explain: a token string (mind the leading space: ``" Paris"``), a token id, a
            pair ``(good, bad)`` for the logit difference ``good - bad``, or None for the model's own top token.
        layer: the block the SAE reads (default: ``sae.cfg.layer``).
        n_ablate: how many top features (by attribution) to also ablate, to compare estimate and reality.
        cancel: a `threading.Event` (see `saewidgets.cancel`), checked before each model pass (the gradient
            pass, the ablations); once set, raises `saewidgets.cancel.Cancelled`.
        check_provenance: refuse an SAE trained on another model or layer (False: use it anyway).
    """
    what = "the attribution"
    layer = sae_layer(model, sae, layer, check_provenance)
    ids = prompt_ids(model, prompt)
    check_cancel(cancel, what)
    target_ids, label = _resolve_target(model, ids, layer, target)
    check_cancel(cancel, what)
    metric = _metric(target_ids)
    hidden, grad, value = residual_and_gradient(model, ids, layer, metric)
    mask = content_mask(model, ids)[0]

    with torch.enable_grad():
        f = sae.encode(hidden.to(sae.W_dec.dtype)).detach().requires_grad_(True)
        recon = sae.decode(f)
        # autograd.grad, not .backward()/.grad: nnsight patches both process-wide (see model.NNSIGHT_LOCK), and
        # this runs outside the model lock.
        (f_grad,) = torch.autograd.grad((recon * grad.to(recon.dtype)).sum(), f)
    f = f.detach()
    scores = (f * f_grad).float() * mask[:, None]
    error = ((hidden - recon.detach().float()) * grad).sum(-1) * mask

    result = Attribution(model.tokens_to_str(ids[0]), label, target_ids, value, scores, error)
    if n_ablate > 0:
        check_cancel(cancel, what)
        features = result.totals.argsort(descending=True)[:n_ablate].tolist()
        result.ablations = _ablate(model, sae, ids, layer, f, mask, features, metric)
    check_cancel(cancel, what)
    return result


def _ablate(
    model: ModelHandle,
    sae: SAE,
    ids: torch.Tensor,
    layer: int,
    f: torch.Tensor,
    mask: torch.Tensor,
    features: list[int],
    metric,
) -> dict[int, float]:
    """metric(clean) - metric(feature zeroed at every non-BOS position, error term kept), per feature."""
    with torch.no_grad():
        base = sae.decode(f)
        ablated = f.expand(len(features), -1, -1).clone()
        for row, i in enumerate(features):
            ablated[row, mask, i] = 0.0
        delta = sae.decode(ablated) - base  # [n, T, d]: the error term cancels, h' = h + delta
        delta = torch.cat([torch.zeros_like(delta[:1]), delta]).float()
    values = metric(last_logits_with_delta(model, ids, layer, delta))
    return {i: float(values[0] - values[row + 1]) for row, i in enumerate(features)}
