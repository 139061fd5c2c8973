"""Feature-statistics tokens/s for a 16,384-feature SAE: `saewidgets.feature_stats` (top contexts, quantile-band
samples, histograms, densities, in one streaming pass) against encoding the same rows alone — the floor any
statistics pass pays. The SAEs are untrained (random directions); the pass's cost does not depend on training, only
on how many features fire per token: a TopK SAE (k 32, the sparse path from `encode_topk`), and a JumpReLU SAE
whose thresholds let ~32 features fire per token (the dense path)."""

from __future__ import annotations

import torch

from .fixtures import activations, gemma, random_sae
from .timing import Row, interleaved, median

N_FEATURES = 16_384
BATCH_ROWS = 1024  # feature_stats' default batch


def run(quick: bool = False) -> list[Row]:
    n_tokens, repeats = (2048, 2) if quick else (4096, 5)  # the ratio moves with the load: 5 rounds steady it
    from saewidgets import feature_stats

    model, acts = gemma(), activations(n_tokens)
    rows = []
    for architecture, path in (("topk", "TopK k 32, sparse path"), ("jumprelu", "JumpReLU ~32 active, dense path")):
        sae = random_sae(N_FEATURES, acts=acts, architecture=architecture)

        def encode_only(sae=sae) -> None:
            with torch.no_grad():
                for start in range(0, n_tokens, BATCH_ROWS):
                    sae.encode(acts.torch(slice(start, start + BATCH_ROWS)).to(sae.W_enc.device))

        contenders = {
            "encode": encode_only,
            "ours": lambda sae=sae: feature_stats(model, sae, acts, batch_size=BATCH_ROWS, progress=False),
        }
        times = interleaved(contenders, repeats)
        l0 = float((sae.encode(acts.torch(slice(0, BATCH_ROWS)).to(sae.W_enc.device)) > 0).sum(1).float().mean())
        rows.append(
            Row(
                "stats",
                f"feature statistics tokens/s ({N_FEATURES:,} features, {architecture})",
                "tokens/s",
                n_tokens / median(times["ours"]),
                n_tokens / median(times["encode"]),
                "SAE encode of the same rows alone",
                "higher",
                0.8 if architecture == "topk" else None,
                f"{n_tokens:,} Gemma layer-9 tokens, on {sae.W_enc.device.type}, {path} (untrained, L0 {l0:.0f}), batch {BATCH_ROWS}, "
                f"median of {repeats}",
                times,
            )
        )
    return rows
