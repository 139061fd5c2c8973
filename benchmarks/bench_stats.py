"""Feature-statistics tokens/s for a 16,384-feature SAE: `saewidgets.feature_stats` (top contexts, quantile-band
samples, histograms, densities, in one streaming pass) against encoding the same rows alone — the floor any
statistics pass pays. The SAE is untrained (random directions); the pass's cost does not depend on training."""

from __future__ import annotations

import torch

from .fixtures import activations, gemma, random_sae
from .timing import Row, interleaved, median

N_FEATURES = 16_384
BATCH_ROWS = 1024  # feature_stats' default batch


def run(quick: bool = False) -> list[Row]:
    n_tokens, repeats = (2048, 2) if quick else (4096, 3)
    from saewidgets import feature_stats

    model, acts = gemma(), activations(n_tokens)
    sae = random_sae(N_FEATURES, acts=acts)

    def encode_only() -> None:
        with torch.no_grad():
            for start in range(0, n_tokens, BATCH_ROWS):
                sae.encode(acts.torch(slice(start, start + BATCH_ROWS)))

    contenders = {"encode": encode_only,
                  "ours": lambda: feature_stats(model, sae, acts, batch_size=BATCH_ROWS, progress=False)}
    times = interleaved(contenders, repeats)
    return [Row("stats", f"feature statistics tokens/s ({N_FEATURES:,} features)", "tokens/s",
                n_tokens / median(times["ours"]), n_tokens / median(times["encode"]),
                "SAE encode of the same rows alone", "higher", None,
                f"{n_tokens:,} Gemma layer-9 tokens, TopK k 32 (untrained), batch {BATCH_ROWS}, median of {repeats}",
                times)]
