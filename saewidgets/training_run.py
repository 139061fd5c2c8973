"""One SAE training run from the command line, in one process or as every rank of a torchrun job.

``saewidgets train ...`` runs it in this process; ``saewidgets train --distributed N ...`` launches the same code
on N ranks, which is the same as::

    torchrun --nproc-per-node N -m saewidgets.training_run --model tiny-gpt2 --corpus demo --out run/

The run: hold out a fraction of the corpus's documents; harvest the rest into a disk-backed activation store
(``OUT/store``; under torchrun every rank harvests its share of the shards, skipping shards an interrupted run
committed); train (`train_sae`: one process, or data-parallel across the ranks, or with the latents split across
them with ``--shard-latents``), checkpointing to ``OUT/checkpoints``; rank 0 saves the SAE to ``OUT/sae`` (`load_sae`
reads it) and prints its metrics on the held-out documents. Run the same command again after a crash or a killed
rank: the harvest and the training both resume where they stopped.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

from ._checks import real_number, whole_number
from ._atomic_write import check_writable_dir
from .precision import Precision, check_precision
from .sae.train_config import TrainConfig

if TYPE_CHECKING:
    import torch

    from .corpus import Corpus


@dataclass(frozen=True)
class TrainingRun:
    """What a training run reads and where it writes: model, corpus, residual site, folders and file format.

    How the SAE is trained is a `TrainConfig`; the two together are every option of ``saewidgets train``.
    """

    out: str
    """Run folder: the SAE goes to OUT/sae, checkpoints to OUT/checkpoints, the activation store to OUT/store."""
    model: str | None = None
    """HF id, local model folder, or tiny-gpt2 / tiny-gemma (None: the embedded Gemma 3 270M)."""
    corpus: str = "demo"
    """'demo' (the bundled corpus), a .txt/.jsonl/.jsonl.gz file, a folder of .txt files, or an HF dataset."""
    layer: int | str = "late"
    """Residual site: a block index (negative counts from the end), 'middle' or 'late' (two thirds deep)."""
    n_tokens: int | None = None
    """Tokens of the corpus to harvest for training (None: all of it)."""
    context_len: int = 128
    """Tokens per model input, BOS included."""
    held_out_fraction: float = 0.05
    """Fraction of the corpus's documents kept out of training for the metrics printed at the end (0: none)."""
    eval_tokens: int = 50_000
    """At most this many held-out tokens are evaluated."""
    store: str | None = None
    """Activation store folder, shared by all ranks and resumed if present (None: OUT/store)."""
    shard_tokens: int = 2**18
    """Rows per store shard."""
    harvest_precision: Precision = "fp32"
    """Precision of the harvest's model products: fp32, or bf16 under autocast (~2x faster on a CPU or GPU with native
    bf16, residuals within ~0.5%; see `saewidgets.harvest`). The training step's is ``--precision``."""
    checkpoint_dir: str | None = None
    """Checkpoint folder, resumed if it holds a checkpoint (None: OUT/checkpoints)."""
    format: Literal["native", "saelens"] = "native"
    """File format of the saved SAE."""
    shard_latents: bool = False
    """Under torchrun: split the latents across the ranks (TopK SAEs too wide for one device) instead of the batch."""
    restart: bool = False
    """Ignore an existing store and checkpoint and start over."""

    def __post_init__(self) -> None:
        if not str(self.out).strip():
            raise ValueError("out='' names no folder: pass the run folder, e.g. --out runs/my-sae.")
        if isinstance(self.layer, str) and self.layer not in ("middle", "late"):
            raise ValueError(f"layer={self.layer!r} is not a block index, 'middle' or 'late'.")
        if not isinstance(self.layer, str):
            whole_number("layer", self.layer, -(10**6))
        if self.n_tokens is not None:
            whole_number("n_tokens", self.n_tokens, 1)
        whole_number("context_len", self.context_len, 2)
        whole_number("eval_tokens", self.eval_tokens, 1)
        whole_number("shard_tokens", self.shard_tokens, 1)
        check_precision("harvest_precision", self.harvest_precision)
        if real_number("held_out_fraction", self.held_out_fraction, 0.0, 1.0) == 1.0:
            raise ValueError("held_out_fraction=1 leaves nothing to train on: pass a fraction below 1, e.g. 0.05.")
        if self.format not in ("native", "saelens"):
            raise ValueError(f"format={self.format!r} is not 'native' or 'saelens'.")

    @property
    def store_dir(self) -> Path:
        return Path(self.store) if self.store else Path(self.out) / "store"

    @property
    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.out) / "checkpoints"


def check_run(run: TrainingRun, config: TrainConfig) -> None:
    """Refuse a run that cannot work before anything is loaded, with what to pass instead."""
    if run.shard_latents and config.arch != "topk":
        raise ValueError(f"--shard-latents trains TopK SAEs only, got --arch {config.arch}: pass --arch topk.")
    out = Path(run.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {run.out} is a file: pass a folder for the run (created if missing).")
    for folder, flag in ((out, "--out"), (run.checkpoints, "--checkpoint-dir"), (run.store_dir, "--store")):
        check_writable_dir(folder, flag)  # before the harvest and training, not when the first file is written


def run_training(run: TrainingRun, config: TrainConfig) -> int:
    """Harvest, train, save and evaluate as described in this module's docstring; on every rank of a process group
    when one is set up by torchrun (the environment's ``RANK``), else in this process alone."""
    check_run(run, config)
    import torch.distributed as dist

    from .sae.distributed import init_process_group

    grouped = "RANK" in os.environ
    rank, world, device = init_process_group() if grouped else (0, 1, _default_device())
    try:
        _harvest_train_save(
            run,
            config,
            rank,
            world,
            device,
            parallel=("latents" if run.shard_latents else "data") if grouped else "none",
        )
        if grouped:  # ranks leave together: one tearing the group down while rank 0 still evaluates aborted it
            dist.barrier()
    finally:
        if grouped and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _default_device() -> torch.device:
    import torch

    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def _harvest_train_save(
    run: TrainingRun,
    config: TrainConfig,
    rank: int,
    world: int,
    device: torch.device,
    parallel: Literal["none", "data", "latents"],
) -> None:
    from .models import load_model
    from .sae import save_sae, train_sae
    from .store import harvest_to_store

    model = load_model(run.model, device=device)
    train_docs, held_out = _split(_corpus(run.corpus), run.held_out_fraction, config.seed)
    store = harvest_to_store(
        model,
        train_docs,
        run.store_dir,
        run.layer,
        n_tokens=run.n_tokens,
        context_len=run.context_len,
        shard_tokens=run.shard_tokens,
        resume=not run.restart,
        progress=rank == 0,
        precision=run.harvest_precision,
    )
    sae = train_sae(
        store,
        config=config,
        checkpoint_dir=run.checkpoints,
        resume=not run.restart,
        progress=rank == 0,
        device=device,
        parallel=parallel,
    )
    if rank != 0:
        return
    print(
        f"saved to {save_sae(sae, Path(run.out) / 'sae', format=run.format)}  ({world} rank{'s' if world > 1 else ''})"
    )
    if held_out is not None:
        from .activations import harvest
        from .sae import evaluate_sae

        cap = run.eval_tokens if held_out.n_tokens(model.tokenizer) > run.eval_tokens else None
        acts = harvest(
            model,
            held_out,
            store.layer,
            n_tokens=cap,
            context_len=run.context_len,
            progress=False,
            precision=run.harvest_precision,
        )
        print(f"held-out metrics ({len(held_out)} documents, {len(acts):,} tokens):")
        print(evaluate_sae(sae.to(model.device), acts, model=model, texts=held_out.texts[:8]))


def _corpus(source: str) -> Corpus:
    from .corpus import demo_corpus, load_corpus

    return demo_corpus() if source == "demo" else load_corpus(source)


def _split(corpus: Corpus, held_out_fraction: float, seed: int) -> tuple[Corpus, Corpus | None]:
    """(training documents, held-out documents or None)."""
    if held_out_fraction == 0:
        return corpus, None
    if len(corpus) < 2:
        raise ValueError(
            f"The corpus has {len(corpus)} document(s), so none can be held out for evaluation: "
            "pass --held-out-fraction 0, or a corpus of several documents."
        )
    return corpus.split(held_out_fraction, seed=seed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m saewidgets.training_run`` (what torchrun starts on every rank): the ``saewidgets train`` options."""
    from .cli import run_command, train_parser

    return run_command(train_parser(prog="python -m saewidgets.training_run", distributed=False), argv)


if __name__ == "__main__":
    sys.exit(main())
