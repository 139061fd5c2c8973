"""Steered generation time: `saewidgets.steer` (one 16k-feature TopK SAE feature clamped at every step, SAE
error term kept) against plain HF ``generate`` of as many tokens from the same prompts, greedy."""

from __future__ import annotations

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
        )
    ]
