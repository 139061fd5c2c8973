"""Sparse autoencoders: one `SAE` module for ReLU (L1), TopK, BatchTopK and JumpReLU; training, files and metrics.

sae = train_sae(acts, arch="topk", n_features=4096, k=32)
save_sae(sae, "my_sae")                    # sae.safetensors + config.json (or format="saelens")
sae = load_sae("my_sae")                   # native, SAELens or Gemma Scope folders/files; release ids online
print(evaluate_sae(sae, held_out, model=model, texts=texts))
family = train_family(acts, sizes=[512, 2048, 8192], eval_activations=held_out)   # each batch read once
"""

from .base import SAE, SparseCode
from .config import ARCHITECTURES, Architecture, SAEConfig
from .train_config import TrainConfig
from .io import SAEFileError, load_sae, save_sae
from .metrics import SAEMetrics, evaluate_sae
from .provenance import SAEMismatchError, check_compatible
from .tracking import WandbLogger
from .train import train_sae
from .family import RunResult, SAEFamily, Sweep, sweep, train_family
from .flops import step_flops

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "SAE",
    "SAEConfig",
    "SAEFileError",
    "SAEMetrics",
    "SAEMismatchError",
    "RunResult",
    "SAEFamily",
    "Sweep",
    "SparseCode",
    "TrainConfig",
    "WandbLogger",
    "check_compatible",
    "evaluate_sae",
    "load_sae",
    "save_sae",
    "step_flops",
    "sweep",
    "train_family",
    "train_sae",
]
