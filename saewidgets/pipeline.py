"""The demo pipeline: model -> harvest -> SAE -> metrics -> statistics -> logit effects -> geometry, each cached.

`demo_artifacts` is what ``saewidgets demo``, the tutorials, the Binder start-up and the integration tests share:
the first call does the work (minutes on two CPU cores) and writes every result under the saewidgets cache, keyed
by the settings; later calls with the same settings load them in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ._cache import atomic_write_bytes, cache_dir


@dataclass(frozen=True)
class DemoSettings:
    """What the demo trains; every field is part of the cache key."""

    model: str | None = None
    """Model to load (None: the embedded Gemma 3 270M)."""
    layer: int | str = "late"
    """Residual site: a block index, "middle" (the paper's choice) or "late" (two thirds deep: block 12 of Gemma 3
    270M's 18). The demo reads "late": steering needs features that make the model *say* a concept, and those
    concentrate in later layers (Arad et al. 2025). Measured here on quick SAEs with two seeds each: at block 12
    both had a feature that steers neutral prompts to the Golden Gate Bridge; at block 9 only one did."""
    n_tokens: int | None = None
    """Tokens of the demo corpus to harvest (None: all of it)."""
    context_len: int = 128
    """Tokens per model input."""
    arch: str = "topk"
    """SAE architecture: relu, topk, batchtopk or jumprelu."""
    n_features: int = 4096
    """Dictionary size."""
    k: int = 32
    """Active latents per token (TopK / BatchTopK)."""
    n_steps: int = 1500
    """Optimizer steps."""
    batch_size: int = 1024
    """Tokens per optimizer step."""
    lr: float = 1e-3
    """Peak learning rate."""
    held_out_fraction: float = 0.05
    """Documents kept out of training, for honest metrics."""
    seed: int = 0
    """Seed for the split, initialisation and batch order."""

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


FULL = DemoSettings()
QUICK = DemoSettings(n_tokens=40_000, n_features=2048, n_steps=600)


@dataclass
class DemoArtifacts:
    """Everything the demo computed, ready for the Explorer."""

    settings: DemoSettings
    folder: Path
    model: Any
    corpus: Any
    activations: Any
    held_out: Any
    sae: Any
    metrics: dict[str, Any]
    stats: Any
    logit_effects: Any
    geometry: Any


SETTINGS_ENV = "SAEWIDGETS_DEMO_SETTINGS"


def settings_from_env(base: DemoSettings = FULL) -> DemoSettings:
    """The settings a notebook's ``demo_artifacts()`` uses: those ``saewidgets demo --lab`` passed on (as JSON in
    ``$SAEWIDGETS_DEMO_SETTINGS``), else the quick ones when ``SAEWIDGETS_QUICK=1`` (CI), else ``base``."""
    if os.environ.get(SETTINGS_ENV):
        return DemoSettings(**json.loads(os.environ[SETTINGS_ENV]))
    return QUICK if os.environ.get("SAEWIDGETS_QUICK") == "1" else base


def demo_artifacts(settings: DemoSettings | None = None, *, model: Any = None, progress: bool = True,
                   refresh: bool = False, **overrides: Any) -> DemoArtifacts:
    """Compute (or load from the cache) every result the demo shows.

    Args:
        settings: `FULL`, `QUICK` or your own `DemoSettings` (default: `settings_from_env()`).
        model: an already-loaded `ModelHandle` for ``settings.model`` (saves loading it again).
        refresh: ignore the cache and recompute everything.
        overrides: fields of `DemoSettings` to change, e.g. ``n_features=8192``.
    """
    from . import load_model
    from .activations import Activations, harvest
    from .analysis import FeatureStats, feature_geometry, feature_stats, logit_effects
    from .corpus import demo_corpus
    from .sae import evaluate_sae, load_sae, save_sae, train_sae

    settings = replace(settings or settings_from_env(), **overrides)
    folder = cache_dir("demo", settings.key())
    if model is None:
        model = load_model(settings.model)
    corpus = demo_corpus()
    layer = model.resolve_layer(settings.layer)

    acts_dir = folder / "activations"
    if acts_dir.exists() and not refresh:
        acts = Activations.load(acts_dir)
    else:
        acts = harvest(model, corpus, layer, n_tokens=settings.n_tokens, context_len=settings.context_len,
                       progress=progress)
        acts.save(acts_dir)
        acts = Activations.load(acts_dir)
    train, held_out = acts.split(settings.held_out_fraction, seed=settings.seed)

    sae_dir = folder / "sae"
    if sae_dir.exists() and not refresh:
        sae = load_sae(sae_dir)
    else:
        sae = train_sae(train, arch=settings.arch, n_features=settings.n_features, k=settings.k,
                        n_steps=settings.n_steps, batch_size=settings.batch_size, lr=settings.lr,
                        seed=settings.seed, checkpoint_dir=folder / "checkpoints", progress=progress)
        save_sae(sae, sae_dir)

    metrics_path = folder / "metrics.json"
    if metrics_path.exists() and not refresh:
        metrics = json.loads(metrics_path.read_text())
    else:
        held_texts = _held_out_texts(corpus, held_out, limit=16)
        metrics = evaluate_sae(sae, held_out, model=model, texts=held_texts, progress=progress).to_dict()
        atomic_write_bytes(metrics_path, json.dumps(metrics, indent=1).encode())

    stats_dir = folder / "stats"
    if stats_dir.exists() and not refresh:
        stats = FeatureStats.load(stats_dir, sae=sae)
    else:
        stats = feature_stats(model, sae, acts, progress=progress)
        stats.save(stats_dir)

    effects = logit_effects(model, sae, cache_dir=folder, progress=progress)
    geometry = feature_geometry(sae, cache_dir=folder)
    return DemoArtifacts(settings, folder, model, corpus, acts, held_out, sae, metrics, stats, effects, geometry)


def _held_out_texts(corpus: Any, held_out: Any, limit: int) -> list[str]:
    """The texts of (up to ``limit``) held-out documents, for the spliced-in LM loss."""
    import numpy as np

    docs = [int(d) for d in np.unique(held_out.doc_ids)[:limit]]
    texts = list(getattr(corpus, "texts", corpus))
    return [texts[d] for d in docs]
