"""Checks and small tensor helpers shared by the analysis modules (no model tracing here).

Everything that validates user input lives here so every function words its errors the same way: what was
expected, what was found, and what to do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..models.handle import ModelHandle
from ..sae.provenance import check_compatible

if TYPE_CHECKING:
    from ..sae import SAE

# Encoding many tokens at once would hold a [tokens, n_features] matrix; this many rows per SAE call keeps it small.
ENCODE_CHUNK_ROWS = 1024


def n_features_of(sae: SAE) -> int:
    """Number of SAE features (latents)."""
    return int(sae.W_dec.shape[0])


def check_feature(sae_or_n: Any, feature: Any, what: str = "feature") -> int:
    """``feature`` as a plain int, or a clear error when it is not an index into the SAE's features."""
    n = sae_or_n if isinstance(sae_or_n, int) else n_features_of(sae_or_n)
    if isinstance(feature, bool) or not isinstance(feature, (int, torch.Tensor)) and not hasattr(feature, "__index__"):
        raise TypeError(f"{what} must be an int feature index, got {type(feature).__name__} ({feature!r}).")
    index = int(feature)
    if not 0 <= index < n:
        raise IndexError(f"{what} {index} is out of range: this SAE has {n:,} features, numbered 0..{n - 1:,}.")
    return index


def check_features(sae_or_n: Any, features: Iterable[Any] | int) -> list[int]:
    """Each of ``features`` checked by `check_feature`; one bare feature id (``features=5``) means ``[5]``."""
    if isinstance(features, (str, bytes)) or not isinstance(features, Iterable) and not hasattr(features, "__index__"):
        raise TypeError(
            f"features must be feature ids, e.g. [3, 17] (or one id), got {type(features).__name__} ({features!r})."
        )
    if not isinstance(features, Iterable) or isinstance(features, torch.Tensor) and features.ndim == 0:
        features = [features]
    return [check_feature(sae_or_n, f) for f in features]


def sae_layer(model: ModelHandle, sae: SAE, layer: Any, check_provenance: bool = True) -> int:
    """The block whose residual the SAE reads: ``layer`` if given, else the SAE's own config; checked by
    `saewidgets.sae.check_compatible` (same width; same model and layer as recorded, unless told otherwise)."""
    return check_compatible(sae, model, layer, check_provenance=check_provenance)


def prompt_ids(
    model: ModelHandle, prompt: str, what: str = "prompt", reserve: int = 0, split_special_tokens: bool = True
) -> torch.Tensor:
    """Token ids ``[1, T]`` of ``prompt`` (BOS in front when the model uses one); refuses empty prompts.

    A prompt longer than the model's context (less ``reserve`` tokens kept free, e.g. for generation) keeps only
    its last tokens, with a warning: the model cannot read more, and the end is what predicts the next token.
    Special-token strings in the prompt stay text unless ``split_special_tokens=False`` (`ModelHandle.encode`).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"{what} must be a str, got {type(prompt).__name__}.")
    ids = model.encode(prompt, split_special_tokens=split_special_tokens)
    n_text = len(ids) - (model.bos_id is not None)
    if not prompt.strip() or n_text < 1:
        raise ValueError(f"The {what} is empty ({prompt!r}): pass some text to analyse.")
    room = model.max_context - reserve - (model.bos_id is not None)
    if n_text > room:
        if room < 1:
            raise ValueError(
                f"{model.name} reads at most {model.max_context} tokens, so {reserve} more cannot be "
                "generated after any prompt: ask for fewer new tokens."
            )
        warnings.warn(
            f"The {what} is {n_text:,} tokens but {model.name} reads at most {model.max_context:,}"
            f"{f' (less {reserve} to generate)' if reserve else ''}: only its last {room:,} tokens are used. "
            "Split long texts yourself (harvest() windows them) to cover all of it.",
            stacklevel=3,
        )
        ids = ids[: len(ids) - n_text] + ids[len(ids) - room :]
    return torch.tensor([ids], dtype=torch.long)


def left_padded_batch(model: ModelHandle, prompts: list[str], reserve: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask of ``prompts`` (BOS in front when the model uses one), each cut to its
    last tokens if it would not leave ``reserve`` tokens of context to generate."""
    rows = [prompt_ids(model, p, reserve=reserve)[0] for p in prompts]
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    return ids, mask


def content_mask(model: ModelHandle, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """True at positions the SAE should see: real tokens other than BOS.

    The SAE never saw BOS in training (`harvest` drops it): its residual is a huge outlier, so features read there
    mean nothing. Padding is not a real token either.
    """
    mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if model.bos_id is not None:
        mask &= ids != model.bos_id
    return mask


@torch.no_grad()
def encode_rows(sae: SAE, x: torch.Tensor, chunk: int = ENCODE_CHUNK_ROWS) -> torch.Tensor:
    """SAE feature activations ``[N, F]`` of residual rows ``x [N, d]``, encoded ``chunk`` rows at a time."""
    parts = [sae.encode(x[i : i + chunk].to(sae.W_dec.dtype)) for i in range(0, len(x), chunk)]
    return torch.cat(parts) if parts else x.new_zeros((0, n_features_of(sae)))


@torch.no_grad()
def decoder_directions(sae: SAE, features: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """What adding one unit of each feature adds to the raw residual: ``decode(e_i) - decode(0)``, ``[n, d]``.

    Equals ``W_dec[i]`` for a plain decoder; also right for SAEs that normalise their inputs internally.
    """
    n = n_features_of(sae)
    index = torch.as_tensor(features, dtype=torch.long)
    basis = torch.zeros(len(index), n, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
    basis[torch.arange(len(index)), index] = 1.0
    zero = sae.decode(torch.zeros(1, n, dtype=sae.W_dec.dtype, device=sae.W_dec.device))
    return sae.decode(basis) - zero


def check_finite(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value}.")
    return value
