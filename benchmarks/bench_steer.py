"""Steered generation time: `saewidgets.steer` (one 16k-feature TopK SAE feature clamped at every step, SAE
error term kept) against plain HF ``generate`` of as many tokens from the same prompts, greedy; and what keeping
the embedded Gemma's embedding compact (`saewidgets.models.q8_embedding`) costs generation: HF ``generate`` on the
loaded model against the same checkpoint with its float32 head, at the batch sizes steering uses."""

from __future__ import annotations

import functools
from typing import Any

import torch

from .fixtures import activations, gemma, random_sae
from .timing import Row, interleaved, median

GOAL_VS_GENERATE = 1.25
PROMPTS = ["The Golden Gate Bridge is", "I went for a walk and saw", "def fibonacci(n):", "Honesty means"]


def run(quick: bool = False) -> list[Row]:
    new_tokens, repeats = (8, 2) if quick else (16, 3)
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


def _generate(hf: Any, batch: Any, new_tokens: int, pad: int, outputs: dict[str, torch.Tensor], name: str) -> None:
    with torch.no_grad():
        outputs[name] = hf.generate(
            **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad
        )


def _compact_head_rows(model: Any, new_tokens: int, repeats: int) -> list[Row]:
    """Generation with the compact (Q8_0) embedding and head against the float32 checkpoint's own, greedy, at 4
    and 32 rows (the steering search's batches); the tokens must be identical."""
    import transformers

    from saewidgets.models.embedded import converted_checkpoint

    float_model = transformers.AutoModelForCausalLM.from_pretrained(str(converted_checkpoint()), dtype=torch.float32)
    pad = model.tokenizer.pad_token_id
    rows = []
    for n_rows in (len(PROMPTS), 32):
        prompts = (PROMPTS * n_rows)[:n_rows]
        batch = model.tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
        outputs: dict[str, torch.Tensor] = {}
        contenders = {
            name: functools.partial(_generate, hf, batch, new_tokens, pad, outputs, name)
            for name, hf in (("compact", model.hf), ("float32", float_model))
        }
        times = interleaved(contenders, repeats)
        same = torch.equal(outputs["compact"], outputs["float32"])
        rows.append(
            Row(
                "steer",
                f"generation with the compact embedding ({n_rows} prompts x {new_tokens} tokens)",
                "s",
                median(times["compact"]),
                median(times["float32"]),
                "the same checkpoint with its float32 head (671 MB resident)",
                "lower",
                None,
                f"Gemma 3 270M on {model.device.type}, HF generate, greedy, median of {repeats}; tokens identical: {same}",
                times,
            )
        )
    return rows
