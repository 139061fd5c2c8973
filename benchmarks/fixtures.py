"""Inputs several benchmarks share, built once per process: the model, demo texts, harvested rows, SAEs."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from .timing import device

LAYER = 9


@functools.lru_cache(maxsize=1)
def gemma() -> Any:
    """The embedded Gemma 3 270M handle (fp32, on `timing.device`: the CPU unless ``--device`` says otherwise)."""
    import saewidgets

    return saewidgets.load_model(device=device())


def harvest_texts(model: Any, n_tokens: int) -> list[str]:
    """The first demo-corpus documents that hold at least ``n_tokens`` tokens (so nothing extra is tokenized)."""
    from saewidgets import demo_corpus

    texts, total = [], 0
    for text in demo_corpus():
        texts.append(text)
        total += len(model.encode(text, add_bos=False))
        if total >= n_tokens:
            return texts
    raise ValueError(f"The demo corpus holds {total:,} tokens, fewer than the {n_tokens:,} asked for.")


@functools.lru_cache(maxsize=2)
def activations(n_tokens: int) -> Any:
    """An `Activations` of ``n_tokens`` demo-corpus tokens at layer ``LAYER``."""
    from saewidgets import harvest

    model = gemma()
    return harvest(model, harvest_texts(model, n_tokens), layer=LAYER, n_tokens=n_tokens, progress=False)


def random_sae(n_features: int, k: int = 32, seed: int = 0, acts: Any = None, architecture: str = "topk") -> Any:
    """An untrained SAE over Gemma's 640-d layer-``LAYER`` residuals (random unit decoder rows, encoder =
    transpose; input scale and model from ``acts`` when given), on `timing.device`. Timing does not depend on
    training.

    ``architecture="jumprelu"`` (needs ``acts``) sets each feature's threshold to its ``k / 1024``-th highest
    pre-activation over the first 1,024 rows, so about ``k`` features fire per token, as in a trained SAE."""
    from saewidgets.sae import SAE, SAEConfig

    where: dict[str, Any] = {}
    if acts is not None:
        scale = math.sqrt(acts.d_model) / float(acts.torch(slice(0, 4096)).norm(dim=1).mean())
        where = {"model_name": acts.model_name, "site": acts.site, "input_scale": scale}
    cfg = SAEConfig(
        d_in=640,
        n_features=n_features,
        architecture=architecture,
        k=k if architecture == "topk" else None,
        layer=LAYER,
        **where,
    )
    sae = SAE(cfg, torch.Generator().manual_seed(seed)).eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    if architecture == "jumprelu":
        rows = acts.torch(slice(0, 1024))
        pre = sae.pre_activations(sae.scale_in(rows))
        fires = max(1, round(k * len(rows) / n_features))  # rows on which each feature fires
        sae.threshold.copy_(pre.topk(fires + 1, dim=0).values[-1])
    return sae.to(device())
