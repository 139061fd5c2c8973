"""Models from the Hugging Face hub or a local checkpoint folder (real loading; needs a network for hub ids)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# What works with no network, named in every "could not find the model" error.
_OFFLINE_NAMES = (
    "load_model() with no argument gives the embedded offline Gemma 3 270M; "
    "load_model('tiny-gpt2') / load_model('tiny-gemma') give tiny random test models."
)


def load_pretrained(name_or_path: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """Load a causal LM and its tokenizer with ``transformers`` and wrap it as a `ModelHandle`."""
    import transformers

    from .handle import ModelHandle

    is_local = Path(name_or_path).expanduser().is_dir()
    if not is_local and _looks_like_a_path(name_or_path):
        raise FileNotFoundError(
            f"No model folder at {name_or_path!r} (resolved from {Path.cwd()}): check the path, or pass a Hugging Face "
            "id such as 'google/gemma-2-2b' (no leading '/', './' or '~', at most one '/'). " + _OFFLINE_NAMES
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
        model = transformers.AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or torch.float32)
    except OSError as err:
        where = "this folder" if is_local else "the Hugging Face hub (is there a network, and is the id spelled right?)"
        raise ValueError(f"Could not load the model {name_or_path!r} from {where}: {err}\n" + _OFFLINE_NAMES) from err
    if device is not None:
        # transformers wraps PreTrainedModel.to with functools.wraps, which typeshed types as a plain callable, not
        # a method: mypy would take ``device`` for ``self``.
        model = model.to(device)  # type: ignore[arg-type]
    return ModelHandle(model, tokenizer, name=name_or_path)


def _looks_like_a_path(name: str) -> bool:
    """Whether ``name`` can only be a filesystem path: an HF id is ``name`` or ``owner/name``, never more."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.endswith("/") or name.count("/") > 1


def load_remote(repo_id: str, mode: bool | str = True):
    """A handle whose traces run on NDIF (the National Deep Inference Fabric): weights stay on NDIF's servers.

    Only the model's config and tokenizer are fetched; nnsight builds the model on the meta device. ``mode="local"``
    runs nnsight's local simulation instead (every trace serialized as for NDIF, then run here; no key needed).
    """
    import nnsight
    import transformers

    from .handle import ModelHandle
    from ..remote import RemoteModelError, require_api_key, scrub

    if mode is True:
        require_api_key()
    # NDIF's servers do not have saewidgets installed: what a trace body uses of it (residual_of, FeatureEdit)
    # ships with each request by value, as nnsight does for a local module.
    nnsight.register(sys.modules["saewidgets"])
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(repo_id)
        envoy = nnsight.TransformersModel(repo_id, tokenizer=tokenizer, task="text-generation")
    except (OSError, ValueError) as err:
        raise RemoteModelError(
            f"Could not find the model {repo_id!r}: NDIF runs models by their Hugging Face hub id, and saewidgets "
            f"reads the config and tokenizer from the hub ({scrub(str(err)).splitlines()[0][:300]}). Check the id "
            "and the network; see which models NDIF serves at https://ndif.us."
        ) from err
    return ModelHandle(envoy._module, envoy.tokenizer, name=repo_id, remote=mode, envoy=envoy)
