"""SAE families and sweeps: several dictionary sizes (and run lengths) trained together on one activation stream.

``train_family(acts, sizes=[512, 2048, 8192])`` trains one SAE per width; ``sweep(acts, sizes=..., steps=...)``
one per (width, steps) pair of a grid of compute budgets, as the scaling-law fits need. Every run is the one
`Trainer` (`saewidgets.sae.train`) with the same `TrainConfig` but ``n_features`` / ``n_steps``; all runs share the
seed and batch size, hence the batch order, so each batch is read from the activations once and fed to every run
still training (`Trainer.advance` with the batch): on a memory-mapped store that read is most of a small run's time.

Every run records its training FLOPs (`saewidgets.sae.flops`, AuxK counted only on the steps it ran) and, on the
held-out ``eval_activations`` when given (else on its last training batches), the fraction of variance unexplained
(``loss``, comparable across widths and architectures), FVE, L0, MSE and dead fraction (`RunResult`).

Runs are cached: each finished run is a folder (the SAE, then ``result.json``, written last, marks it done) under
a key of the data, the settings and the held-out data; running the same sweep again loads it, and one interrupted
resumes its unfinished runs from their checkpoints (every ``checkpoint_every`` steps, on Ctrl-C and when stopped
through ``cancel=``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..activation_source import TrainingRows
from ..progress import progress_bar
from .._atomic_write import atomic_write_bytes
from .._cache import cache_dir as default_cache_dir
from ..cancel import CancelSignal, Cancelled, DeferredInterrupt, check_cancel
from .._checks import whole_number
from .base import SAE
from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .data import Rows, as_rows, check_finite
from .flops import step_flops
from .provenance import SAEMismatchError, recorded_layer, same_model
from .train import Trainer
from .train_config import TrainConfig

_RESULT = "result.json"
_FLOPS_SO_FAR = "flops.json"  # beside a checkpoint: FLOPs up to its step


@dataclass
class RunResult:
    """One trained SAE of a family or sweep: its budget and how well it reconstructs."""

    n_features: int
    n_steps: int
    arch: str
    k: int | None
    batch_size: int
    tokens: int
    """Training tokens (steps x batch size)."""
    flops: float
    """Training FLOPs of the matrix products (`saewidgets.sae.flops.step_flops`, summed over the steps)."""
    loss: float
    """Fraction of variance unexplained (1 - FVE), the quantity the scaling laws fit."""
    fve: float
    l0: float
    mse: float
    """Mean squared error per element, in raw residual units."""
    dead_fraction: float
    """Held-out: latents that never fired on the held-out rows; training: dead by the trainer's counter."""
    evaluated_on: str
    """``"held-out"`` (``eval_activations``) or ``"training"`` (mean of the last tenth of the logged steps)."""
    fingerprint: str
    """`SAE.fingerprint` of the trained SAE."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class SAEFamily:
    """SAEs of several widths on one model's residual stream at one layer, smallest first.

    Made by `train_family` or from SAEs you have (``SAEFamily([small, large])``): widths, models and layers are
    checked, so decoder directions compared across the family live in one space.
    """

    saes: list[SAE]
    results: list[RunResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.saes = list(self.saes)
        check_family(self.saes)
        order = np.argsort([sae.cfg.n_features for sae in self.saes], kind="stable")
        self.saes = [self.saes[i] for i in order]
        if self.results:
            self.results = [self.results[i] for i in order]

    @property
    def sizes(self) -> list[int]:
        return [sae.cfg.n_features for sae in self.saes]

    def __len__(self) -> int:
        return len(self.saes)

    def __getitem__(self, n_features: int) -> SAE:
        """The family's SAE with ``n_features`` latents."""
        if n_features not in self.sizes:
            raise KeyError(f"this family has SAEs of {self.sizes} features, not {n_features}.")
        return self.saes[self.sizes.index(n_features)]


@dataclass(eq=False)
class Sweep:
    """The runs of `sweep`: ``results`` (one `RunResult` per (width, steps)), and ``saes`` in the same order."""

    results: list[RunResult]
    saes: list[SAE] = field(repr=False)

    def family(self, n_steps: int | None = None) -> SAEFamily:
        """The SAEs trained for ``n_steps`` (default: the longest runs) as a family across widths."""
        n_steps = max(r.n_steps for r in self.results) if n_steps is None else n_steps
        chosen = [(sae, r) for sae, r in zip(self.saes, self.results) if r.n_steps == n_steps]
        if not chosen:
            raise KeyError(f"the sweep has runs of {sorted({r.n_steps for r in self.results})} steps, not {n_steps}.")
        return SAEFamily([s for s, _ in chosen], [r for _, r in chosen])


def check_family(saes: Sequence[SAE]) -> None:
    """Refuse SAEs that cannot form one family: other models, other layers or sites, other widths of the residual
    stream, or two of the same size (a family is indexed by size)."""
    if not saes:
        raise ValueError("A family needs at least one SAE.")
    first = saes[0].cfg
    for sae in saes[1:]:
        cfg = sae.cfg
        name = f"the {cfg.n_features}-feature SAE"
        if cfg.model_name and first.model_name and not same_model(cfg.model_name, first.model_name):
            raise SAEMismatchError(
                f"{name} was trained on {cfg.model_name!r}, the {first.n_features}-feature SAE on "
                f"{first.model_name!r}: a family holds SAEs of one model; train them on the same activations."
            )
        layers = recorded_layer(sae), recorded_layer(saes[0])
        if None not in layers and layers[0] != layers[1]:
            raise SAEMismatchError(
                f"{name} reads layer {layers[0]}, the {first.n_features}-feature SAE layer {layers[1]}: a family "
                "holds SAEs of one layer, whose decoder directions live in one space."
            )
        if cfg.d_in != first.d_in:
            raise SAEMismatchError(
                f"{name} reads {cfg.d_in}-wide activations, the {first.n_features}-feature SAE {first.d_in}-wide "
                "ones: they cannot come from one residual stream."
            )
    sizes = [sae.cfg.n_features for sae in saes]
    repeated = sorted({s for s in sizes if sizes.count(s) > 1})
    if repeated:
        raise ValueError(f"A family has one SAE per size; {repeated} features appear more than once.")


def train_family(
    activations: TrainingRows,
    sizes: Sequence[int],
    *,
    eval_activations: TrainingRows | None = None,
    config: TrainConfig | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    cancel: CancelSignal | None = None,
    **options: Any,
) -> SAEFamily:
    """Train one SAE per width in ``sizes`` on ``activations``, reading each batch once for all of them.

    Args:
        activations: ``[N, d]`` tensor or array, `Activations` or `ActivationStore` (as for `train_sae`).
        sizes: the dictionary sizes, e.g. ``[512, 2048, 8192]``.
        eval_activations: held-out rows every run is measured on (recommended; else its last training batches).
        config, **options: the `TrainConfig` every run starts from (``arch``, ``k``, ``n_steps``, ``batch_size``,
            ``lr``...); ``n_features`` comes from ``sizes``, and ``lr=None`` picks each width's default.
        cache: reuse runs already trained with the same data and settings, and resume interrupted ones.
        cache_dir: where runs are kept (default: the saewidgets cache's ``scaling`` folder).
        progress: one tqdm bar over every run's steps.
        device: where to train (default CPU).
        cancel: a `threading.Event` (see `saewidgets.cancel`), checked before every step; once set, every
            unfinished run with a cache folder is checkpointed (as on Ctrl-C) and `saewidgets.cancel.Cancelled`
            raised. No run is marked finished, and calling again resumes to the SAEs of an uninterrupted call.
    """
    base = (config or TrainConfig()).with_options(**options)
    configs = [base.with_options(n_features=n) for n in _sizes(sizes, "sizes")]
    trained = train_runs(activations, configs, eval_activations, cache, cache_dir, progress, device, cancel)
    return SAEFamily([sae for sae, _ in trained], [result for _, result in trained])


def sweep(
    activations: TrainingRows,
    sizes: Sequence[int],
    steps: Sequence[int],
    *,
    eval_activations: TrainingRows | None = None,
    config: TrainConfig | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    cancel: CancelSignal | None = None,
    **options: Any,
) -> Sweep:
    """Train every (size, steps) pair of the grid, for `fit_scaling_laws`: compute budgets from the smallest SAE's
    shortest run to the largest's longest. Same arguments as `train_family`, plus ``steps``, the run lengths.

    The whole grid trains together (each batch read once; memory holds every SAE and its Adam state), and a grid
    whose budgets double in both directions (e.g. sizes and steps each x2 or x4) gives several runs per budget,
    so the compute-optimal frontier is resolved.
    """
    base = (config or TrainConfig()).with_options(**options)
    grid = [(n, t) for n in _sizes(sizes, "sizes") for t in _sizes(steps, "steps")]
    configs = [base.with_options(n_features=n, n_steps=t) for n, t in grid]
    trained = train_runs(activations, configs, eval_activations, cache, cache_dir, progress, device, cancel)
    return Sweep([result for _, result in trained], [sae for sae, _ in trained])


def _sizes(values: Iterable[Any], name: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name}={values!r} is not a list of whole numbers: pass e.g. {name}=[512, 2048, 8192].")
    checked = [whole_number(f"{name}[{i}]", v, 1) for i, v in enumerate(values)]
    if not checked:
        raise ValueError(f"{name} is empty: pass at least one, e.g. {name}=[512, 2048, 8192].")
    if len(set(checked)) != len(checked):
        raise ValueError(f"{name}={checked} repeats a value: each must appear once.")
    return sorted(checked)


# -- training runs together ---------------------------------------------------------------------------------------


def train_runs(
    activations: TrainingRows,
    configs: Sequence[TrainConfig],
    eval_activations: TrainingRows | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    cancel: CancelSignal | None = None,
) -> list[tuple[SAE, RunResult]]:
    """Train (or load from the cache) one SAE per config; configs differing only in ``n_features``, ``n_steps``
    and ``lr`` share the batch order, so each batch is read once for every run still training. ``cancel`` is
    checked before every step (see `train_family`)."""
    shared = {(c.seed, c.batch_size) for c in configs}
    if len(shared) != 1:
        raise ValueError(
            f"Runs trained together need one seed and batch size; got (seed, batch_size) {sorted(shared)}."
        )
    rows = as_rows(activations)
    check_finite(rows)
    eval_rows = None
    if eval_activations is not None:
        eval_rows = as_rows(eval_activations)
        check_finite(eval_rows)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("scaling")
    dirs = [folder / _run_key(rows, c, eval_rows) for c in configs] if cache else [None] * len(configs)
    done: dict[int, tuple[SAE, RunResult]] = {}
    for i, run_dir in enumerate(dirs):
        if run_dir is not None and (run_dir / _RESULT).exists():
            done[i] = _load_run(run_dir)
    todo = [i for i in range(len(configs)) if i not in done]
    if todo:
        trained = _train_together(rows, [configs[i] for i in todo], [dirs[i] for i in todo], progress, device, cancel)
        for i, (sae, flops) in zip(todo, trained):
            result = _result(sae, configs[i], flops, eval_activations if eval_rows is not None else None)
            run_dir = dirs[i]
            if run_dir is not None:
                _save_run(run_dir, sae, result)
            done[i] = (sae, result)
    return [done[i] for i in range(len(configs))]


def _train_together(
    rows: Rows,
    configs: list[TrainConfig],
    dirs: list[Path | None],
    progress: bool,
    device: str | torch.device | None,
    cancel: CancelSignal | None = None,
) -> list[tuple[SAE, float]]:
    """Step every run in lockstep on one read of each batch; each stops at its own ``n_steps``. Stopped (``cancel``
    or a first Ctrl-C, each acted on before a step, when every run has finished the steps before it; a second
    Ctrl-C at once), every run is checkpointed where it is, so calling again resumes them all."""

    trainers = [Trainer(rows, c, torch.device(device or "cpu")) for c in configs]
    flops = [0.0] * len(trainers)
    for i, (trainer, run_dir) in enumerate(zip(trainers, dirs)):
        if run_dir is not None and (run_dir / CHECKPOINT_NAME).exists():
            trainer.restore(load_checkpoint(run_dir / CHECKPOINT_NAME))
            flops[i] = json.loads((run_dir / _FLOPS_SO_FAR).read_text())["flops"]
    total, start = sum(c.n_steps for c in configs), sum(t.step for t in trainers)
    bar = progress_bar(total, initial=start, desc=f"train {len(trainers)} SAEs", unit="step", disable=not progress)
    notice = "Stopping after this training step and saving every run's checkpoint (Ctrl-C again to stop at once)."
    try:
        with DeferredInterrupt(notice if progress else None) as ctrl_c:
            for step in range(min(t.step for t in trainers), max(c.n_steps for c in configs)):
                check_cancel(cancel, f"training {len(trainers)} SAEs")
                if ctrl_c.requested:
                    raise KeyboardInterrupt
                batch = trainers[0].rows.take(trainers[0].order.rows(step))
                for i, trainer in enumerate(trainers):
                    if trainer.step != step or step >= trainer.tc.n_steps:
                        continue
                    cost = _step_flops(trainer)
                    try:
                        info = trainer.advance(batch)
                    except FloatingPointError as err:
                        raise FloatingPointError(f"Training the {trainer.tc.n_features}-feature SAE: {err}") from err
                    flops[i] += cost
                    bar.update(1)
                    bar.set_postfix(F=trainer.tc.n_features, loss=f"{info['loss']:.4g}", refresh=False)
                    every, run_dir = trainer.tc.checkpoint_every, dirs[i]
                    if (
                        run_dir is not None
                        and every > 0
                        and trainer.step % every == 0
                        and step + 1 < trainer.tc.n_steps
                    ):
                        _checkpoint(trainer, run_dir, flops[i])
    except (KeyboardInterrupt, Cancelled):  # every run keeps its steps: calling again resumes them all
        for trainer, run_dir, spent in zip(trainers, dirs, flops):
            if run_dir is not None:
                _checkpoint(trainer, run_dir, spent)
        raise
    finally:
        bar.close()
    return [(trainer.finish(), spent) for trainer, spent in zip(trainers, flops)]


def _step_flops(trainer: Trainer) -> int:
    """This step's FLOPs, with AuxK on the latents the trainer counts as dead now (as `one_step` will)."""
    tc, cfg = trainer.tc, trainer.sae.cfg
    aux = 0
    if cfg.architecture in ("topk", "batchtopk"):
        n_dead = int((trainer.tokens_since_fired >= tc.dead_after_tokens).sum())
        aux = min(tc.aux_k or max(1, cfg.d_in // 2), n_dead)
    return step_flops(
        cfg.architecture,
        cfg.d_in,
        cfg.n_features,
        tc.batch_size,
        cfg.k,
        aux=aux,
        sparse_kernels=tc.sparse_kernels,
        b_dec_in_input=cfg.apply_b_dec_to_input,
    )


def _checkpoint(trainer: Trainer, run_dir: Path, flops: float) -> None:
    trainer.write_checkpoint(run_dir)
    atomic_write_bytes(run_dir / _FLOPS_SO_FAR, json.dumps({"step": trainer.step, "flops": flops}).encode())


def _result(sae: SAE, tc: TrainConfig, flops: float, eval_activations: TrainingRows | None) -> RunResult:
    if eval_activations is not None:
        from .metrics import evaluate_sae

        m = evaluate_sae(sae, eval_activations)
        fve, l0, mse, dead, where = m.fve, m.l0, m.mse, m.dead_fraction, "held-out"
    else:
        tail = sae.history[-max(1, len(sae.history) // 10) :]
        fve, l0, dead = (float(np.mean([h[key] for h in tail])) for key in ("fve", "l0", "dead"))
        mse = float(np.mean([h["mse"] for h in tail])) / sae.cfg.input_scale**2 / sae.cfg.d_in
        where = "training"
    return RunResult(
        n_features=sae.cfg.n_features,
        n_steps=tc.n_steps,
        arch=sae.cfg.architecture,
        k=sae.cfg.k,
        batch_size=tc.batch_size,
        tokens=tc.n_steps * tc.batch_size,
        flops=float(flops),
        loss=1.0 - fve,
        fve=fve,
        l0=l0,
        mse=mse,
        dead_fraction=dead,
        evaluated_on=where,
        fingerprint=sae.fingerprint(),
    )


# -- the cache ---------------------------------------------------------------------------------------------------


def _run_key(rows: Rows, tc: TrainConfig, eval_rows: Rows | None) -> str:
    """A folder name for one run: its settings, the training data and the held-out data."""
    data = [rows.fingerprint(), len(rows), rows.d, rows.model_name, rows.layer]
    held_out = None if eval_rows is None else [eval_rows.fingerprint(), len(eval_rows)]
    settings = replace(tc, checkpoint_every=0).to_dict()
    if settings["precision"] == "fp32":  # fp32 runs keep the keys they had before the precision option existed
        del settings["precision"]
    blob = json.dumps([settings, data, held_out], sort_keys=True, default=str)
    return f"{tc.arch}-{tc.n_features}x{tc.n_steps}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _save_run(run_dir: Path, sae: SAE, result: RunResult) -> None:
    """The SAE, then ``result.json`` (with the history) last: a folder without it is an unfinished run."""
    from .io import save_sae

    save_sae(sae, run_dir / "sae", overwrite=True)
    payload = {"result": result.to_dict(), "history": sae.history}
    atomic_write_bytes(run_dir / _RESULT, json.dumps(payload).encode())
    for stale in (CHECKPOINT_NAME, _FLOPS_SO_FAR):
        (run_dir / stale).unlink(missing_ok=True)


def _load_run(run_dir: Path) -> tuple[SAE, RunResult]:
    from .io import load_sae

    payload = json.loads((run_dir / _RESULT).read_text())
    sae = load_sae(run_dir / "sae")
    sae.history = payload["history"]
    return sae, RunResult(**payload["result"])
