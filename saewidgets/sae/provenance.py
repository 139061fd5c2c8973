"""Is this SAE meant for this model and layer? The one check every analysis runs before it reads a residual.

An SAE's features are directions in one model's residual stream at one layer. Used elsewhere it still runs (any
model of the same width fits its matrices) and returns confident-looking nonsense, so a recorded model or layer that
differs from the one in use is an error, not a warning. Pass ``check_provenance=False`` to use an SAE elsewhere on
purpose (e.g. the same model saved under another name, or to study how features transfer between layers).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..activation_source import TrainingRows
    from ..models.handle import ModelHandle
    from .base import SAE
    from .data import Rows

# Names TransformerLens (and so SAELens) gives models whose Hugging Face ids differ by more than the organisation.
_MODEL_ALIASES = {"gpt2-small": "gpt2"}


class SAEMismatchError(ValueError):
    """An SAE used with a model or layer other than the one it was trained on."""


def same_model(recorded: str, in_use: str) -> bool:
    """Whether model names ``recorded`` (in an SAE's config) and ``in_use`` (a model handle's) name the same model.

    Compares the last path component, case-insensitively, so ``google/gemma-2-2b``, ``gemma-2-2b`` and a local
    folder ``/models/gemma-2-2b`` agree; SAELens' ``gpt2-small`` is Hugging Face's ``gpt2``.
    """

    def key(name: str) -> str:
        last = re.split(r"[/\\]", name.strip().rstrip("/\\"))[-1].lower()
        return _MODEL_ALIASES.get(last, last)

    return key(recorded) == key(in_use)


def recorded_layer(sae: SAE) -> int | None:
    """The block whose output the SAE was trained on: its config's ``layer``, else the number in its ``site``."""
    cfg = getattr(sae, "cfg", None)
    layer = getattr(cfg, "layer", None)
    if layer is None:
        match = re.search(r"(?:layers|blocks|h)\.(\d+)", getattr(cfg, "site", "") or "")
        layer = int(match.group(1)) if match else None
    return layer


def check_compatible(sae: SAE, model: Any, layer: Any = None, *, check_provenance: bool = True) -> int:
    """The block index at which ``sae`` reads ``model`` (``layer``, else the one the SAE records), after checking it can.

    Raises `ValueError` when the widths differ (always: the SAE cannot read this model at all), and
    `SAEMismatchError` when the SAE records another model or another layer, unless ``check_provenance=False``.
    """
    cfg = getattr(sae, "cfg", None)
    trained_on = getattr(cfg, "model_name", "") or ""
    d_in = int(sae.W_dec.shape[1])
    if d_in != model.d_model:
        where = (
            f"it was trained on {trained_on}"
            if trained_on and not same_model(trained_on, model.name)
            else "it was not trained on this model's residual stream"
        )
        raise ValueError(
            f"The SAE reads {d_in}-wide activations but {model.name} has d_model={model.d_model}: {where}. Load "
            "the model it was trained on, or train an SAE on this one."
        )
    recorded = recorded_layer(sae)
    if layer is None:
        if recorded is None:
            raise ValueError(
                "This SAE does not record the layer it was trained on: pass layer=... (the block whose "
                "output it reads)."
            )
        layer = recorded
    resolved = model.resolve_layer(layer)
    if not check_provenance:
        return resolved
    if trained_on and not same_model(trained_on, model.name):
        raise SAEMismatchError(
            f"This SAE was trained on {trained_on!r} but the model in use is {model.name!r}: its features are "
            f"directions in the residual stream of {trained_on!r}, so on {model.name!r} they mean nothing. Load "
            f"{trained_on!r}, or pass check_provenance=False if it is the same model under another name."
        )
    if recorded is not None and recorded >= 0 and recorded != resolved:
        site = getattr(cfg, "site", "")
        layer = layer if isinstance(layer, str) else int(layer)  # np.int64(0) reads as 0
        raise SAEMismatchError(
            f"This SAE was trained on layer {recorded}{f' ({site})' if site else ''} but layer={layer!r} reads "
            f"layer {resolved} of {model.name}: its features would read a residual stream they never saw. Leave "
            f"layer out (or pass layer={recorded}), or pass check_provenance=False to use it there on purpose."
        )
    return resolved


def check_activations(
    activations: TrainingRows | Rows,
    sae: SAE,
    model: ModelHandle | None = None,
    layer: int | None = None,
    *,
    check_provenance: bool = True,
) -> None:
    """Raise `SAEMismatchError` if ``activations`` (an `Activations` or store, which record where they were read)
    come from another model or layer than ``model``/``layer`` (default: those the SAE records).

    Plain arrays record nothing and pass; so does everything with ``check_provenance=False``.
    """
    if not check_provenance:
        return
    source_model, source_layer = getattr(activations, "model_name", "") or "", getattr(activations, "layer", None)
    cfg = getattr(sae, "cfg", None)
    expected_model = model.name if model is not None else getattr(cfg, "model_name", "") or ""
    expected_layer = layer if layer is not None else recorded_layer(sae)
    if source_model and expected_model and not same_model(source_model, expected_model):
        raise SAEMismatchError(
            f"These activations were read from {source_model!r} but the SAE is used with {expected_model!r}: "
            f"harvest them from {expected_model!r}, or pass check_provenance=False to mix models on purpose."
        )
    if source_layer is not None and source_layer >= 0 and expected_layer is not None and source_layer != expected_layer:
        raise SAEMismatchError(
            f"These activations were read at layer {source_layer} but the SAE reads layer {expected_layer}: harvest "
            f"layer {expected_layer}, or pass check_provenance=False to mix layers on purpose."
        )
