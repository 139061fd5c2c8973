"""The random TopK SAE the cancellation, RunView and reliability tests run on a tiny model (tests only)."""

from __future__ import annotations

import torch

from saewidgets.sae import SAE, SAEConfig


def tiny_topk_sae(model, n_features: int = 32, layer: int = 1, seed: int = 0) -> SAE:
    """A random TopK SAE (k = 4) on ``model``'s residual at ``layer``, named for the model (so the analyses'
    provenance checks pass), its weights fixed by ``seed``."""
    config = SAEConfig(
        d_in=model.d_model, n_features=n_features, architecture="topk", k=4, layer=layer, model_name=model.name
    )
    return SAE(config, torch.Generator().manual_seed(seed))
