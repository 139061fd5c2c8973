"""What the demo trains: `DemoSettings` (every field part of the cache key), the `FULL` and `QUICK` runs, and
how a notebook picks them up from the environment."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

from ..precision import Precision
from ..sae.config import Architecture


@dataclass(frozen=True)
class DemoSettings:
    """What the demo trains; every field is part of the cache key."""

    model: str | None = None
    """Model to load (None: the embedded Gemma 3 270M)."""
    layer: int | str = "late"
    """Residual site: a block index, "middle" (the paper's choice) or "late" (two thirds deep: block 12 of Gemma 3
    270M's 18). The demo reads "late": steering needs features that make the model *say* a concept, and those
    concentrate in later layers (Arad et al. 2025). Measured by the held-out steering benchmark's layer experiment
    (benchmarks/README.md): on quick-sized SAEs at blocks 6 and 9 the recipe found no feature that steers neutral
    prompts to the Golden Gate Bridge; at block 12 it did (33% of evaluation prompts quick, 62% full)."""
    n_tokens: int | None = None
    """Tokens of the demo corpus to harvest (None: all of it)."""
    context_len: int = 128
    """Tokens per model input."""
    arch: Architecture = "topk"
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
    precision: Precision = "fp32"
    """Precision of the harvest's model products and of the training step's (`saewidgets.precision`): "fp32", or
    "bf16" under autocast (``saewidgets demo --precision bf16``). On a CPU with native bf16 (`native_bf16`) the
    full demo ran in 335 s instead of 400 (harvest 2x, training 1.15x faster; still above 6 minutes on a first run),
    but it trains another SAE: measured, its Golden Gate search's trials steered 1 of 6 selection prompts where the
    fp32 SAE's steered 4, and its peak memory was 2.9 GB against 1.8 (benchmarks/README.md). Both demos therefore
    stay fp32; elsewhere bf16 is emulated and slower."""
    corpus: str = "demo"
    """Text to harvest: "demo" (the bundled demo corpus) or the name of the `Corpus` passed to `demo_sae` /
    `demo_artifacts` as ``corpus=`` (they refuse one whose name differs, so each text is cached apart)."""

    def key(self) -> str:
        """The cache key: a digest of every field (those added since caches were first made only when changed)."""
        fields = asdict(self)
        for name, default in _ADDED_SINCE.items():
            if fields[name] == default:
                del fields[name]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


#: Fields added after demo caches existed, with their defaults: left out of `DemoSettings.key` at the default, so
#: the runs cached before keep their keys.
_ADDED_SINCE = {"corpus": "demo", "precision": "fp32"}


FULL = DemoSettings()
QUICK = DemoSettings(n_tokens=40_000, n_features=2048, n_steps=600)


SETTINGS_ENV = "SAEWIDGETS_DEMO_SETTINGS"


def settings_from_env(base: DemoSettings = FULL) -> DemoSettings:
    """The settings a notebook's ``demo_artifacts()`` uses: those ``saewidgets demo --lab`` passed on (as JSON in
    ``$SAEWIDGETS_DEMO_SETTINGS``), else the quick ones when ``SAEWIDGETS_QUICK=1`` (CI), else ``base``."""
    if os.environ.get(SETTINGS_ENV):
        return DemoSettings(**json.loads(os.environ[SETTINGS_ENV]))
    return QUICK if os.environ.get("SAEWIDGETS_QUICK") == "1" else base
