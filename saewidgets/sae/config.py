"""What an SAE is (`SAEConfig`) and how one is trained (`TrainConfig`), as plain dataclasses that go to JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu"]
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
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={self.architecture!r} is not one of {', '.join(ARCHITECTURES)}.")
        if self.d_in < 1 or self.n_features < 1:
            raise ValueError(f"d_in and n_features must be positive, got d_in={self.d_in}, n_features={self.n_features}.")
        if self.architecture in ("topk", "batchtopk"):
            if self.k is None or not 1 <= self.k <= self.n_features:
                raise ValueError(
                    f"A {self.architecture} SAE needs k in [1, n_features={self.n_features}], got k={self.k}."
                )
        if not self.input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {self.input_scale}.")

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


@dataclass
class TrainConfig:
    """How `train_sae` trains: optimisation, sparsity pressure and bookkeeping. Stored in every checkpoint."""

    n_steps: int
    """Optimizer steps (batches) in the whole run."""
    batch_size: int = 4096
    """Tokens per step."""
    lr: float = 2e-4
    """Peak Adam learning rate."""
    lr_warmup_steps: int = 100
    """Linear learning-rate warm-up from 0 over this many steps."""
    lr_decay_fraction: float = 0.2
    """Fraction of the run, at its end, over which the learning rate decays linearly to 0."""
    l1: float = 5.0
    """``relu``: coefficient of sum_i f_i ||W_dec_i|| (inputs scaled to mean norm sqrt(d_in))."""
    sparsity_warmup_fraction: float = 0.05
    """``relu``/``jumprelu``: fraction of the run over which the L1 / L0 coefficient ramps up linearly from 0."""
    l0: float = 1.0
    """``jumprelu``: coefficient of the L0 penalty (active latents per token, against the summed squared error)."""
    jumprelu_bandwidth: float = 0.05
    """``jumprelu``: kernel width of the straight-through pseudo-derivative, in the SAE's units (mean input norm
    sqrt(d_in)); widen it if thresholds barely move, narrow it for a sharper estimate."""
    jumprelu_init_threshold: float = 0.1
    """``jumprelu``: initial threshold of every latent."""
    aux_k: int | None = None
    """``topk``/``batchtopk``: dead latents used by the AuxK loss (default d_in // 2)."""
    aux_coefficient: float = 1 / 32
    """``topk``/``batchtopk``: weight of the AuxK loss."""
    dead_after_tokens: int = 1_000_000
    """A latent that has not fired for this many training tokens counts as dead."""
    threshold_momentum: float = 0.01
    """``batchtopk``: EMA rate of the running inference threshold (minimum selected pre-activation)."""
    sparse_kernels: bool = True
    """``topk``/``batchtopk``: train with `sparse.sparse_training_step` (no dense decoder product; same results
    within float rounding, ~2x faster on CPU at 4k latents, more for wider SAEs)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 to disable)."""
    seed: int = 0
    """Seeds initialisation and the batch order (each epoch a permutation from (seed, epoch))."""
    n_scale_samples: int = 20_000
    """Rows used to estimate the input scale and the initial ``b_dec`` (the data mean)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
