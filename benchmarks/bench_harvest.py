"""Harvest tokens/s on Gemma 3 270M: `saewidgets.harvest` against plain HF forwards on the same padded batches.

References (no nnsight, inputs already tokenized and padded, so they time the model alone):
- ``hf-hook-stop``: a forward hook on block ``layer`` copies its output and raises to end the forward there — the
  least work any harvester can do; ours should reach >= 0.9x of it.
- ``hf-full``: the whole forward (every layer and the 262k-vocabulary unembedding) with the same hook — what
  harvesting costs without stopping early.
Ours includes everything `harvest` does: tokenizing, windowing, tracing, dropping BOS/padding, writing rows.

A third row times ``harvest(..., precision="bf16")`` (the model's products under bf16 autocast) against the fp32
harvest of the same texts in the same rounds, and states how far its rows move from fp32's: the speed-up is worth
having only if the residuals an SAE is trained on stay the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from saewidgets.precision import Precision, native_bf16

from .fixtures import LAYER, gemma, harvest_texts
from .timing import Row, interleaved, median

GOAL_VS_HOOKED_FORWARD = 0.9
BATCH_SIZE = 16


class _Stop(Exception):
    """Raised by the hook to end a forward pass after the layer."""


def padded_batches(model: Any, texts: list[str], n_tokens: int) -> list[dict[str, torch.Tensor]]:
    """The batches `harvest` traces, built here independently: windows longest first, left-padded."""
    from saewidgets.activations import DEFAULT_CONTEXT_LEN, plan_harvest

    windows = plan_harvest(model, texts, DEFAULT_CONTEXT_LEN, n_tokens, BATCH_SIZE, drop_bos=True)
    windows = sorted(windows, key=lambda w: -len(w.ids))
    pad = model.tokenizer.pad_token_id or 0
    batches = []
    for b in range(0, len(windows), BATCH_SIZE):
        group = [w.ids for w in windows[b : b + BATCH_SIZE]]
        width = max(map(len, group))
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, w in enumerate(group):
            ids[row, width - len(w) :], mask[row, width - len(w) :] = torch.tensor(w), 1
        batch = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        batches.append({name: t.to(model.device) for name, t in batch.items()})
    return batches


def hf_forward(model: Any, batches: list[dict[str, torch.Tensor]], stop: bool) -> Callable[[], None]:
    """A contender: plain HF forwards with a hook on block ``LAYER`` (raising after it when ``stop``)."""
    block = model.hf.model.layers[LAYER]
    kept: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        kept.append((output[0] if isinstance(output, tuple) else output).float().clone())
        if stop:
            raise _Stop

    def run() -> None:
        kept.clear()
        handle = block.register_forward_hook(hook)
        try:
            with torch.no_grad():
                for batch in batches:
                    try:
                        model.hf(**batch, use_cache=False)
                    except _Stop:
                        pass
        finally:
            handle.remove()

    return run


def relative_drift(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean over rows of ``|other - reference| / |reference|`` (Euclidean norms): how far a harvest's residuals
    moved from the reference harvest's, as a fraction of each residual's size."""
    if reference.shape != other.shape:
        raise ValueError(f"The harvests differ in shape: {reference.shape} against {other.shape}.")
    moved = np.linalg.norm(other - reference, axis=1)
    return float(np.mean(moved / np.maximum(np.linalg.norm(reference, axis=1), 1e-12)))


def run(quick: bool = False) -> list[Row]:
    n_tokens, repeats = (1024, 2) if quick else (2048, 3)
    model = gemma()
    texts = harvest_texts(model, n_tokens)
    from saewidgets import harvest

    def ours(precision: Precision = "fp32") -> Any:
        return harvest(
            model, texts, layer=LAYER, n_tokens=n_tokens, batch_size=BATCH_SIZE, progress=False, precision=precision
        )

    batches = padded_batches(model, texts, n_tokens)
    contenders = {
        "hf-hook-stop": hf_forward(model, batches, stop=True),
        "ours": ours,
        "hf-full": hf_forward(model, batches, stop=False),
        "ours-bf16": lambda: ours("bf16"),
    }
    times = interleaved(contenders, repeats)
    rate = {name: n_tokens / median(t) for name, t in times.items()}
    settings = (
        f"Gemma 3 270M fp32 on {model.device.type}, layer {LAYER} of 18, {n_tokens:,} tokens of the demo corpus, context 128, "
        f"batch {BATCH_SIZE}, median of {repeats}"
    )
    drift = relative_drift(ours().acts, ours("bf16").acts)
    hardware = "native bf16 instructions" if native_bf16(model.device) else "no bf16 instructions: emulated"
    return [
        Row(
            "harvest",
            "harvest tokens/s vs the same forward stopped at the layer by a hook",
            "tokens/s",
            rate["ours"],
            rate["hf-hook-stop"],
            "HF forward + hook raising after the layer",
            "higher",
            GOAL_VS_HOOKED_FORWARD,
            settings,
            {k: times[k] for k in ("ours", "hf-hook-stop")},
        ),
        Row(
            "harvest",
            "harvest tokens/s vs a full forward (gain from stopping early)",
            "tokens/s",
            rate["ours"],
            rate["hf-full"],
            "HF full forward + hook (all layers and logits)",
            "higher",
            None,
            settings,
            {k: times[k] for k in ("ours", "hf-full")},
        ),
        Row(
            "harvest",
            "harvest tokens/s, bf16 autocast vs fp32",
            "tokens/s",
            rate["ours-bf16"],
            rate["ours"],
            "the same harvest in fp32",
            "higher",
            None,
            f"{settings}; {hardware}; bf16 rows differ from fp32's by {drift:.2%} of each row's norm (mean)",
            {k: times[k] for k in ("ours-bf16", "ours")},
        ),
    ]
