"""Steered generation time: `saewidgets.steer` (one 16k-feature TopK SAE feature clamped at every step, SAE
error term kept) against plain HF ``generate`` of as many tokens from the same prompts, greedy; and what keeping
the embedded Gemma's embedding compact (`saewidgets.models.q8_embedding`) costs generation: HF ``generate`` on the
loaded model against the same checkpoint with its float32 head, and against the compact head decoded 8,192 rows at a
time (its block size until 2026-12-03), at the batch sizes steering uses."""

from __future__ import annotations

import functools
from typing import Any

import torch

from .fixtures import activations, gemma, random_sae
from .timing import Row, interleaved, median

GOAL_VS_GENERATE = 1.25
PROMPTS = ["The Golden Gate Bridge is", "I went for a walk and saw", "def fibonacci(n):", "Honesty means"]


def run(quick: bool = False) -> list[Row]:
    new_tokens, repeats = (8, 2) if quick else (16, 5)  # 5: single runs on a shared 2-core VM vary ~2x
    from saewidgets import steer

    model = gemma()
    sae = random_sae(16_384, acts=activations(1024))
    batch = model.tokenizer(PROMPTS, return_tensors="pt", padding=True).to(model.device)
    pad = model.tokenizer.pad_token_id

    def plain() -> None:
        with torch.no_grad():
            model.hf.generate(
                **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad
            )

    contenders = {
        "hf-generate": plain,
        "ours": lambda: steer(
            model,
            sae,
            PROMPTS,
            {123: 5.0},
            units="activation",
            max_new_tokens=new_tokens,
            repetition_penalty=1.0,
            include_default=False,
        ),
    }
    times = interleaved(contenders, repeats)
    return [
        Row(
            "steer",
            f"steered generation time ({len(PROMPTS)} prompts x {new_tokens} tokens)",
            "s",
            median(times["ours"]),
            median(times["hf-generate"]),
            "HF generate, same prompts, greedy",
            "lower",
            GOAL_VS_GENERATE,
            f"Gemma 3 270M fp32 on {model.device.type}, layer 9, clamp mode, median of {repeats}",
            times,
        ),
        *_compact_head_rows(model, new_tokens, repeats),
    ]


def _generate(
    hf: Any,
    batch: Any,
    new_tokens: int,
    pad: int,
    outputs: dict[str, torch.Tensor],
    name: str,
    block_rows: int | None = None,
) -> None:
    """HF ``generate`` into ``outputs[name]``; ``block_rows`` sets the compact head's rows per product meanwhile."""
    from saewidgets.models import q8_embedding

    default = q8_embedding.BLOCK_ROWS
    q8_embedding.BLOCK_ROWS = block_rows or default
    try:
        with torch.no_grad():
            outputs[name] = hf.generate(
                **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad
            )
    finally:
        q8_embedding.BLOCK_ROWS = default


def _compact_head_rows(model: Any, new_tokens: int, repeats: int) -> list[Row]:
    """Generation with the compact (Q8_0) embedding and head against the float32 checkpoint's own, and against the
    compact head at 8,192-row blocks, greedy, at 4 and 32 rows (the steering search's batches); the tokens must be
    identical."""
    import transformers

    from saewidgets.models.embedded import converted_checkpoint

    float_model = transformers.AutoModelForCausalLM.from_pretrained(str(converted_checkpoint()), dtype=torch.float32)
    pad = model.tokenizer.pad_token_id
    rows = []
    for n_rows in (len(PROMPTS), 32):
        prompts = (PROMPTS * n_rows)[:n_rows]
        batch = model.tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
        outputs: dict[str, torch.Tensor] = {}
        runs = [("compact", model.hf, None), ("float32", float_model, None)]
        references = {"float32": "the same checkpoint with its float32 head (671 MB resident)"}
        if model.device.type == "cpu":  # BLOCK_ROWS is the CPU's (a GPU's blocks were and are 8,192 rows)
            runs.append(("compact-8192", model.hf, 8192))
            references["compact-8192"] = "the compact head decoded 8,192 rows per product (until 2026-12-03)"
        contenders = {
            name: functools.partial(_generate, hf, batch, new_tokens, pad, outputs, name, block_rows)
            for name, hf, block_rows in runs
        }
        times = interleaved(contenders, repeats)
        same = all(torch.equal(outputs["compact"], tokens) for tokens in outputs.values())
        notes = (
            f"Gemma 3 270M on {model.device.type}, HF generate, greedy, median of {repeats}; tokens identical: {same}"
        )
        figure = f"generation with the compact embedding ({n_rows} prompts x {new_tokens} tokens)"
        for reference, name in references.items():
            rows.append(
                Row(
                    "steer",
                    figure,
                    "s",
                    median(times["compact"]),
                    median(times[reference]),
                    name,
                    "lower",
                    None,
                    notes,
                    {"compact": times["compact"], reference: times[reference]},
                )
            )
    return rows
