"""Experiment tracking: `WandbLogger` sends a training run's curves and an SAE's metrics to Weights & Biases.

It is a `train_sae` step callback, so the trainer knows nothing about wandb (``pip install 'saewidgets[wandb]'``):

    with WandbLogger(project="my-saes", config={"layer": 12}) as log:
        sae = train_sae(acts, arch="topk", n_features=4096, k=32, callback=log)
        log.log_metrics(evaluate_sae(sae, held_out))

Set ``WANDB_MODE=offline`` to write the run to disk only (``wandb sync`` uploads it later).
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any


class WandbLogger:
    """Logs ``train_sae``'s per-step ``{loss, mse, l0, fve, dead, ...}`` under ``train/`` every ``every`` steps.

    The wandb run starts on the first logged step (``wandb.init(project=..., config=..., **init_kwargs)``), or pass
    ``run`` to log into one you started. `log_metrics` writes an `SAEMetrics` (or any dict of numbers) into the
    run's summary under ``eval/``; `finish` (or leaving the ``with`` block) closes a run this logger started.
    """

    def __init__(
        self,
        project: str = "saewidgets",
        *,
        config: dict[str, Any] | None = None,
        every: int = 1,
        run: Any = None,
        **init_kwargs: Any,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}.")
        self.every, self.run = every, run
        self._owns_run = run is None
        self._init = {"project": project, "config": config or {}, **init_kwargs}

    def _started(self) -> Any:
        if self.run is None:
            try:
                import wandb
            except ImportError:
                raise ImportError("WandbLogger needs wandb: pip install 'saewidgets[wandb]'") from None
            self.run = wandb.init(**self._init)
        return self.run

    def __call__(self, step: int, info: dict[str, float]) -> None:
        if step % self.every == 0:
            self._started().log({f"train/{k}": float(v) for k, v in info.items()}, step=step)

    def log_metrics(self, metrics: Any, prefix: str = "eval/") -> None:
        """Put the scalar fields of ``metrics`` (an `SAEMetrics` or a dict) into the run summary."""
        values = asdict(metrics) if is_dataclass(metrics) and not isinstance(metrics, type) else dict(metrics)
        run = self._started()
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                run.summary[prefix + key] = value

    def finish(self) -> None:
        """End the run if this logger started it (a run passed in is left to its owner)."""
        if self.run is not None and self._owns_run:
            self.run.finish()
            self.run = None

    def __enter__(self) -> WandbLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
