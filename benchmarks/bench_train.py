"""SAE training tokens/s: `saewidgets.train_sae` against SAELens's `SAETrainer`, same activations and settings.

Both train a TopK SAE (fp32, CPU) from a fresh initialisation for ``steps`` steps of ``batch`` tokens on the same
in-memory activations; each timed run includes building the SAE and its optimizer (a fixed cost that ``steps``
amortises). SAELens is driven through its public ``SAETrainer.fit()`` with an in-memory data provider, no
normalisation, no W&B. The machine's fp32 matmul rate (``batch x d_in @ d_in x n_features``, the encoder product
every TopK step needs) is timed in the same rounds, which gives the ceiling in tokens/s: ``rate / (2 d_in F)``.

EleutherAI sparsify's TopK `Trainer` (``pip install "saewidgets[sparsify]"``; its row is left out without it) is
timed in the same rounds on the same rows, fed through a one-layer stand-in model (sparsify trains on a model's
hooked layer, not on stored activations).

`measure_precision` times ours in bf16 autocast against ours in fp32 (``TrainConfig.precision``), and trains a
longer run in each to compare their held-out metrics (FVE, L0, dead fraction).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .timing import Row, device, interleaved, matmul_gflops, median

GOAL_VS_SAELENS = 4.0


@dataclass
class TrainSettings:
    d_in: int = 640
    n_features: int = 16_384
    k: int = 32
    batch: int = 4096
    steps: int = 4
    repeats: int = 3


def activations(s: TrainSettings, seed: int = 0) -> torch.Tensor:
    """``[steps * batch, d_in]`` residual-like rows: a random mean plus anisotropic Gaussian noise (fp32)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.rand(s.d_in, generator=g) * 2 + 0.1
    return torch.randn(s.d_in, generator=g) * 3 + torch.randn(s.steps * s.batch, s.d_in, generator=g) * scales


def saelens_run(x: torch.Tensor, s: TrainSettings) -> Callable[[], Any]:
    """A contender: SAELens 6.x trains a TopK SAE on ``x`` for ``s.steps`` steps via ``SAETrainer.fit()``."""
    from sae_lens import LoggingConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    where = str(device())
    batches = [batch.to(where) for batch in x.split(s.batch)]

    def run() -> Any:
        sae = TopKTrainingSAE(
            TopKTrainingSAEConfig(d_in=s.d_in, d_sae=s.n_features, k=s.k, dtype="float32", device=where)
        )
        cfg = SAETrainerConfig(
            total_training_samples=s.steps * s.batch,
            train_batch_size_samples=s.batch,
            lr=2e-4,
            lr_end=2e-5,
            device=where,
            logger=LoggingConfig(log_to_wandb=False),
        )
        trainer = SAETrainer(cfg, sae, data_provider=itertools.cycle(batches))
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            return trainer.fit()

    return run


class _ActivationTable(torch.nn.Module):
    """A stand-in model for sparsify's `Trainer`, which hooks a model's layer: token ids index rows of fixed
    activations, and its one layer, ``layers.0``, outputs those rows. So sparsify trains on exactly our rows."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Embedding.from_pretrained(rows, freeze=True)])
        self.config = SimpleNamespace(num_hidden_layers=1)

    @property
    def base_model(self) -> torch.nn.Module:
        return self

    @property
    def device(self) -> torch.device:
        return self.layers[0].weight.device

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.zeros(1, 1, dtype=torch.long)}

    def forward(self, input_ids: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.layers[0](input_ids)


def sparsify_run(x: torch.Tensor, s: TrainSettings) -> Callable[[], Any]:
    """A contender: EleutherAI sparsify's TopK `Trainer.fit()` on the rows of ``x`` in the same order, Adam at our
    default learning rate, AuxK as ours (1/32, dead after 1M tokens), no checkpoint writes, no W&B."""
    import datasets
    from sparsify import SparseCoderConfig
    from sparsify import TrainConfig as SparsifyConfig
    from sparsify import Trainer as SparsifyTrainer

    from saewidgets.sae.train_config import default_lr

    seq = min(64, s.batch)  # tokens per "sequence": sparsify's batch_size counts sequences
    model = _ActivationTable(x).to(device())
    ids = torch.arange(len(x) // seq * seq).reshape(-1, seq)
    dataset = datasets.Dataset.from_dict({"input_ids": ids.tolist()}).with_format("torch")

    def run() -> Any:
        cfg = SparsifyConfig(
            SparseCoderConfig(num_latents=s.n_features, k=s.k),
            batch_size=s.batch // seq,
            optimizer="adam",
            lr=default_lr(s.n_features),
            lr_warmup_steps=100,
            auxk_alpha=1 / 32,
            dead_feature_threshold=1_000_000,
            hookpoints=["layers.0"],
            log_to_wandb=False,
            save_dir=str(Path(tempfile.gettempdir()) / "sparsify-bench"),
        )
        precision = torch.get_float32_matmul_precision()  # fit() turns on TF32, which would speed up ours too
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            trainer = SparsifyTrainer(cfg, dataset.select(range(s.steps * s.batch // seq)), model)
            trainer.save = lambda: None  # ours writes no checkpoint either
            try:
                trainer.fit()
            finally:
                torch.set_float32_matmul_precision(precision)
        return trainer.saes

    return run


def _installed(distribution: str) -> bool:
    """Whether ``distribution`` is installed (by its PyPI name: Neural Magic's old "sparsify" has the same import
    name as EleutherAI's "eai-sparsify")."""
    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def ours_run(x: torch.Tensor, s: TrainSettings, kernel: str | None) -> Callable[[], Any]:
    """A contender: `saewidgets.train_sae` on ``x``; ``kernel`` "sparse" / "dense" sets ``sparse_kernels``."""
    from saewidgets import train_sae

    extra = {"sparse_kernels": kernel == "sparse"} if kernel is not None else {}
    return lambda: train_sae(
        x, "topk", s.n_features, s.k, batch_size=s.batch, n_steps=s.steps, progress=False, device=device(), **extra
    )


def run(quick: bool = False) -> list[Row]:
    s = TrainSettings(steps=2, repeats=2) if quick else TrainSettings()
    return measure(s) + measure_precision(s, drift_steps=10 if quick else 60)


def measure_precision(s: TrainSettings, drift_steps: int) -> list[Row]:
    """bf16 autocast against fp32 (`TrainConfig.precision`), ours alone: tokens/s of the sparse TopK step and of a
    ReLU SAE's dense step, interleaved; and the metrics drift of a longer run of each on held-out rows."""
    x = activations(s)
    relu = {"arch": "relu", "l1": 5.0}
    contenders = {
        f"{name}-{precision}": _precision_run(x, s, precision, options)
        for name, options in (("topk", {}), ("relu", relu))
        for precision in ("fp32", "bf16")
    }
    times = interleaved(contenders, s.repeats)
    rate = {name: s.steps * s.batch / median(t) for name, t in times.items()}
    settings = (
        f"on {device().type}, d_in {s.d_in}, {s.n_features:,} latents, batch {s.batch:,}, {s.steps} steps per run, "
        f"median of {s.repeats}"
    )
    rows = [
        Row(
            "train",
            f"SAE training tokens/s, bf16 autocast vs fp32 ({label})",
            "tokens/s",
            rate[f"{name}-bf16"],
            rate[f"{name}-fp32"],
            "the same run in fp32",
            "higher",
            None,
            f"{settings}; precision='bf16' runs the step's matrix products in bf16, weights and Adam in fp32",
            {k: times[k] for k in (f"{name}-fp32", f"{name}-bf16")},
        )
        for name, label in (("topk", "TopK k 32, sparse kernel: encoder product in bf16"), ("relu", "ReLU+L1, dense"))
    ]
    return rows + [_drift_row(s, drift_steps)]


def _precision_run(x: torch.Tensor, s: TrainSettings, precision: str, options: dict[str, Any]) -> Callable[[], Any]:
    from saewidgets import train_sae

    settings = {"arch": "topk", "k": s.k, **options}
    return lambda: train_sae(
        x,
        n_features=s.n_features,
        batch_size=s.batch,
        n_steps=s.steps,
        progress=False,
        precision=precision,
        device=device(),
        **settings,
    )


def _drift_row(s: TrainSettings, steps: int) -> Row:
    """Held-out FVE, L0 and dead fraction of a TopK SAE trained ``steps`` steps in bf16 and in fp32 (same seed)."""
    from saewidgets.sae import evaluate_sae, train_sae

    drift = TrainSettings(s.d_in, s.n_features, s.k, s.batch, steps + 2, 1)
    x = activations(drift, seed=1)
    train, held_out = x[: steps * s.batch], x[steps * s.batch :]
    metrics = {}
    for precision in ("fp32", "bf16"):
        sae = train_sae(
            train,
            "topk",
            s.n_features,
            s.k,
            batch_size=s.batch,
            n_steps=steps,
            lr_warmup_steps=steps // 10,
            dead_after_tokens=steps * s.batch // 4,
            progress=False,
            precision=precision,
            device=device(),
        )
        metrics[precision] = evaluate_sae(sae, held_out, check_provenance=False)
    fp32, bf16 = metrics["fp32"], metrics["bf16"]
    return Row(
        "train",
        f"held-out FVE after {steps} steps, bf16 autocast vs fp32 (TopK, sparse kernel)",
        "FVE",
        bf16.fve,
        fp32.fve,
        "the same run in fp32",
        "higher",
        None,
        f"{s.n_features:,} latents, k {s.k}, batch {s.batch:,}, same seed and rows, {len(held_out):,} held-out rows; "
        f"FVE {bf16.fve:.4f} vs {fp32.fve:.4f} (drift {bf16.fve - fp32.fve:+.4f}), L0 {bf16.l0:.2f} vs {fp32.l0:.2f}, "
        f"dead fraction {bf16.dead_fraction:.4f} vs {fp32.dead_fraction:.4f}",
    )


def measure(s: TrainSettings) -> list[Row]:
    """Interleaved runs of SAELens, ours (each kernel) and the matmul; rows: ours vs SAELens, ours vs ceiling."""
    x = activations(s)
    from saewidgets.sae import TrainConfig

    kernels = ["sparse", "dense"] if "sparse_kernels" in TrainConfig.__dataclass_fields__ else [None]
    has_sparsify = _installed("eai-sparsify")  # pip install "saewidgets[sparsify]"
    contenders = {
        "saelens": saelens_run(x, s),
        **({"sparsify": sparsify_run(x, s)} if has_sparsify else {}),
        **{f"ours-{k or 'default'}": ours_run(x, s, k) for k in kernels},
        "matmul": matmul_gflops(s.batch, s.d_in, s.n_features),
    }
    times = interleaved(contenders, s.repeats)
    tokens = s.steps * s.batch
    rate = {name: tokens / median(t) for name, t in times.items() if name != "matmul"}
    gflops = 2 * s.batch * s.d_in * s.n_features / median(times["matmul"]) / 1e9
    ceiling = gflops * 1e9 / (2 * s.d_in * s.n_features)  # tokens/s if a step cost only its encoder product
    settings = (
        f"TopK d_in {s.d_in}, {s.n_features:,} latents, k {s.k}, batch {s.batch:,}, fp32 on {device().type}, "
        f"{s.steps} steps per run from a fresh init, median of {s.repeats}"
    )
    rows = []
    for name, ours in rate.items():
        if not name.startswith("ours"):
            continue
        rows.append(
            Row(
                "train",
                f"SAE training tokens/s ({name.removeprefix('ours-')} kernel)",
                "tokens/s",
                ours,
                rate["saelens"],
                "SAELens SAETrainer.fit (TopKTrainingSAE)",
                "higher",
                GOAL_VS_SAELENS if name in ("ours-sparse", "ours-default") else None,
                f"{settings}; {ours / ceiling:.0%} of the matmul ceiling ({ceiling:,.0f} tokens/s at "
                f"{gflops:.0f} GFLOP/s measured here); SAELens at {rate['saelens'] / ceiling:.0%}",
                {k: times[k] for k in ("saelens", name)},
            )
        )
    best = max((n for n in rate if n.startswith("ours")), key=rate.get)
    if has_sparsify:
        rows.append(
            Row(
                "train",
                f"SAE training tokens/s ({best.removeprefix('ours-')} kernel) vs EleutherAI sparsify",
                "tokens/s",
                rate[best],
                rate["sparsify"],
                "sparsify Trainer.fit (TopK, Adam)",
                "higher",
                None,
                f"{settings}; sparsify {version('eai-sparsify')} fed the same rows through a one-layer stand-in "
                f"model, {s.batch // 64} sequences of 64 per step, AuxK 1/32, no checkpoint writes; sparsify at "
                f"{rate['sparsify'] / ceiling:.0%} of the matmul ceiling",
                {k: times[k] for k in ("sparsify", best)},
            )
        )
    else:
        print("train: sparsify is not installed (pip install 'saewidgets[sparsify]'), its row is left out")
    rows.append(
        Row(
            "train",
            f"SAE training tokens/s ({best.removeprefix('ours-')} kernel) vs the matmul ceiling",
            "tokens/s",
            rate[best],
            ceiling,
            f"encoder product alone at {gflops:.0f} GFLOP/s",
            "higher",
            None,
            "ceiling = measured fp32 GFLOP/s of the 4096x640 @ 640x16384 product / (2 d_in F) FLOP per token",
            {best: times[best], "matmul": times["matmul"]},
        )
    )
    return rows
