"""What an SAE is (`SAEConfig`), as a plain dataclass that goes to JSON (how one is trained: `train_config`)."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from .._checks import whole_number

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu"]
# Input scales seen in practice are ~1e-3..1e3 (sqrt(d_in) over the residual norm); far outside, float32 overflows.
_INPUT_SCALES = (1e-12, 1e12)
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)


@dataclass
class SAEConfig:
    """The shape of a sparse autoencoder, where it reads the model, and how it was made."""

    d_in: int
    """Width of the activations it encodes (the model's d_model for a residual-stream SAE)."""
    n_features: int
    """Number of latents (dictionary size), F."""
    architecture: Architecture = "topk"
    """Activation function: ``relu`` (L1, Scaling Monosemanticity), ``topk``, ``batchtopk`` or ``jumprelu``."""
    k: int | None = None
    """Active latents per token for ``topk`` (exact) and ``batchtopk`` (batch average while training)."""
    model_name: str = ""
    """The model whose activations it was trained on."""
    layer: int | None = None
    """The decoder block whose output (residual stream after it) it reads."""
    site: str = ""
    """Module path of that site in the model, e.g. ``model.layers.9``."""
    input_scale: float = 1.0
    """Inputs are multiplied by this inside `encode` and outputs divided by it inside `decode`, so callers always
    work in raw residual units while the weights live in units where inputs have mean norm sqrt(d_in)."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the (scaled) input before encoding; Gemma Scope SAEs do not."""
    neuronpedia_id: str | None = None
    """Neuronpedia's id of this SAE (``"<model>/<source>"``, e.g. ``"gemma-2-2b/12-gemmascope-res-16k"``), as
    SAELens' release directory gives it; None for SAEs Neuronpedia does not host."""
    normalize_activations: str = "none"
    """SAELens' input normalisation: ``"none"``, or ``"expected_average_only_in"`` (inputs were scaled to mean norm
    sqrt(d_in) in training; `input_scale` holds the factor when the file gave it, else inputs are read raw, exactly
    as SAELens itself reads such a file)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """How it was trained: tokens, steps, lr, l1, seed, date, saewidgets version (or where it was loaded from)."""

    def __post_init__(self) -> None:
        # Values arrive from JSON files (config.json, SAELens' cfg.json): check types, not only ranges, so that
        # "false" is not read as True and 1e400 (inf) not as a scale.
        self.d_in, self.n_features = whole_number("d_in", self.d_in, 1), whole_number("n_features", self.n_features, 1)
        self.k = None if self.k is None else whole_number("k", self.k, 1)
        self.layer = None if self.layer is None else whole_number("layer", self.layer, -(10**6))
        for name in ("model_name", "site"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}.")
        if not isinstance(self.apply_b_dec_to_input, bool):
            raise TypeError(
                f"apply_b_dec_to_input must be true or false (a JSON boolean), got "
                f"{self.apply_b_dec_to_input!r} ({type(self.apply_b_dec_to_input).__name__})."
            )
        if isinstance(self.input_scale, bool) or not isinstance(self.input_scale, numbers.Real):
            raise TypeError(f"input_scale must be a number, got {self.input_scale!r}.")
        if not _INPUT_SCALES[0] <= self.input_scale <= _INPUT_SCALES[1]:  # also refuses NaN and inf
            raise ValueError(
                f"input_scale must be a finite positive number between {_INPUT_SCALES[0]:g} and {_INPUT_SCALES[1]:g}, "
                f"got {self.input_scale}: encodings would overflow to inf or vanish. Use the scale the SAE was "
                "trained with (1.0 if unsure)."
            )
        self.input_scale = float(self.input_scale)
        if not isinstance(self.provenance, dict):
            raise TypeError(f"provenance must be a dict, got {type(self.provenance).__name__}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={self.architecture!r} is not one of {', '.join(ARCHITECTURES)}.")
        if self.architecture in ("topk", "batchtopk"):
            if self.k is None or not 1 <= self.k <= self.n_features:
                raise ValueError(
                    f"A {self.architecture} SAE needs k in [1, n_features={self.n_features}], got k={self.k}."
                )

    @property
    def active_k(self) -> int:
        """``k`` of a ``topk`` / ``batchtopk`` SAE, which ``__post_init__`` requires; an error for the others."""
        if self.k is None:
            raise ValueError(f"A {self.architecture} SAE has no k (active latents per token).")
        return self.k

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SAEConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys are ignored, missing required keys are named."""
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("d_in", "n_features") if n not in data]
        if missing:
            raise KeyError(f"SAE config lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})
