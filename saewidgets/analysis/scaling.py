"""Scaling laws of SAE training runs: loss against compute, and the compute-optimal number of features and steps.

As in Scaling Monosemanticity's scaling-law figures: among the runs of a sweep (`saewidgets.sae.family.sweep`),
the compute-optimal ones are those no cheaper run beats (the lower envelope of loss against training FLOPs). Power
laws are fitted to them by least squares in log-log space:

    loss        = A_L * C ** -alpha       (C: training FLOPs)
    n_features  = A_F * C ** a            n_steps = A_S * C ** b     (a + b ~ 1 when FLOPs ~ features x steps)

Each exponent comes with its standard error (from the least-squares covariance) and a bootstrap interval (the
frontier's runs resampled with replacement), so a fit through a few CPU-sized runs says how little it knows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

#: Fewest compute-optimal runs a law is fitted to: two points always lie on a line, so three give the first check.
MIN_POINTS = 3
_FIELDS = ("n_features", "n_steps", "flops", "loss")


@dataclass(frozen=True)
class PowerLaw:
    """``y = coefficient * x ** exponent``, fitted in log-log space."""

    coefficient: float
    exponent: float
    exponent_stderr: float
    """Standard error of the exponent from the least-squares covariance (residual variance, n - 2 dof)."""
    exponent_interval: tuple[float, float]
    """Bootstrap percentile interval of the exponent at ``confidence``."""
    confidence: float
    n_points: int
    r_squared: float
    """Of the log-log fit."""

    def __call__(self, x: Any) -> np.ndarray:
        return self.coefficient * np.power(np.asarray(x, dtype=np.float64), self.exponent)

    def __str__(self) -> str:
        lo, hi = self.exponent_interval
        return (
            f"{self.coefficient:.3g} * x^{self.exponent:.3f} (+/- {self.exponent_stderr:.3f} s.e.; "
            f"{self.confidence:.0%} bootstrap [{lo:.3f}, {hi:.3f}]; {self.n_points} points, R^2 {self.r_squared:.3f})"
        )


@dataclass(eq=False)
class ScalingFit:
    """What `fit_scaling_laws` found: the three laws, the frontier they were fitted to, and every run."""

    loss: PowerLaw
    """Loss of the compute-optimal runs against FLOPs (its exponent is negative: -alpha)."""
    n_features: PowerLaw
    """Features of the compute-optimal runs against FLOPs."""
    n_steps: PowerLaw
    """Training steps of the compute-optimal runs against FLOPs."""
    frontier: list[dict[str, Any]]
    """The compute-optimal runs, by increasing FLOPs."""
    runs: list[dict[str, Any]] = field(repr=False)
    """Every run given (``n_features``, ``n_steps``, ``flops``, ``loss`` and whatever else it had)."""

    def __str__(self) -> str:
        return "\n".join(
            [
                f"Scaling laws from {len(self.frontier)} compute-optimal runs of {len(self.runs)}:",
                f"  loss       = {self.loss}",
                f"  n_features = {self.n_features}",
                f"  n_steps    = {self.n_steps}",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        laws = {name: asdict(getattr(self, name)) for name in ("loss", "n_features", "n_steps")}
        return {**laws, "frontier": self.frontier, "runs": self.runs}


def fit_scaling_laws(results: Any, *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> ScalingFit:
    """Fit loss, compute-optimal features and compute-optimal steps against training FLOPs.

    Args:
        results: a `Sweep` or `SAEFamily` (their ``results``), or runs as `RunResult` s or dicts with
            ``n_features``, ``n_steps``, ``flops`` and ``loss``.
        n_bootstrap: bootstrap resamples for the exponents' intervals.
        confidence: the intervals' coverage.
        seed: the bootstrap's random generator.

    Raises ValueError when a run's numbers are missing, non-finite or not positive, or when fewer than 3 runs are
    compute-optimal (a sweep too small to fit: add sizes and steps so that budgets overlap).
    """
    runs = _runs(results)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must be between 0 and 1, e.g. 0.95.")
    frontier = compute_optimal(runs)
    if len(frontier) < MIN_POINTS:
        raise ValueError(
            f"Only {len(frontier)} of the {len(runs)} runs are compute-optimal (no cheaper run has a lower loss); a "
            f"power law needs at least {MIN_POINTS} to be fitted with an uncertainty. Sweep more budgets: more sizes "
            "and more step counts, e.g. sweep(acts, sizes=[256, 1024, 4096], steps=[100, 400, 1600])."
        )
    flops = np.array([r["flops"] for r in frontier], dtype=np.float64)
    rng = np.random.default_rng(seed)
    laws = {
        name: fit_power_law(flops, [r[name] for r in frontier], n_bootstrap=n_bootstrap, confidence=confidence, rng=rng)
        for name in ("loss", "n_features", "n_steps")
    }
    return ScalingFit(frontier=frontier, runs=runs, **laws)


def compute_optimal(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runs no cheaper (or equally cheap) run beats on loss, by increasing FLOPs: the compute-optimal
    frontier."""
    frontier: list[dict[str, Any]] = []
    for run in sorted(runs, key=lambda r: (r["flops"], r["loss"])):
        if not frontier or run["loss"] < frontier[-1]["loss"]:  # equal FLOPs: the lower loss came first
            frontier.append(dict(run))
    return frontier


def fit_power_law(
    x: Any,
    y: Any,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
) -> PowerLaw:
    """``y = c * x ** e`` by least squares on ``log y = log c + e log x``, with the exponent's standard error and
    bootstrap interval. ``x`` and ``y`` must be positive and finite, with at least 3 distinct ``x``."""
    lx, ly = _logs(x, "x"), _logs(y, "y")
    if len(lx) != len(ly):
        raise ValueError(f"x and y differ in length ({len(lx)} and {len(ly)}).")
    if len(np.unique(lx)) < MIN_POINTS:
        raise ValueError(
            f"A power law with an uncertainty needs at least {MIN_POINTS} distinct x; got {len(lx)} points."
        )
    slope, intercept, stderr, r2 = _least_squares(lx, ly)
    rng = rng or np.random.default_rng(0)
    slopes = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, len(lx), len(lx))
        if len(np.unique(lx[pick])) >= 2:
            slopes.append(_least_squares(lx[pick], ly[pick])[0])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(slopes, [tail, 100 - tail]) if slopes else (slope, slope)
    return PowerLaw(float(math.exp(intercept)), slope, stderr, (float(low), float(high)), confidence, len(lx), r2)


def _least_squares(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept, slope's standard error, R^2) of ``ly`` on ``lx``."""
    mx, my = lx.mean(), ly.mean()
    sxx = float(((lx - mx) ** 2).sum())
    slope = float(((lx - mx) * (ly - my)).sum() / sxx)
    intercept = float(my - slope * mx)
    residual = ly - (intercept + slope * lx)
    dof = len(lx) - 2
    stderr = float(math.sqrt((residual**2).sum() / dof / sxx)) if dof > 0 else math.inf
    total = float(((ly - my) ** 2).sum())
    r2 = 1 - float((residual**2).sum()) / total if total > 0 else 1.0
    return slope, intercept, stderr, r2


def _logs(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(array) | (array <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {array[i]!r}: a power law is fitted to positive, finite numbers only.")
    return np.log(array)


def _runs(results: Any) -> list[dict[str, Any]]:
    """Runs as dicts, each checked to have positive, finite ``n_features``, ``n_steps``, ``flops`` and ``loss``."""
    results = getattr(results, "results", results)
    runs = []
    for i, run in enumerate(results):
        row = run.to_dict() if hasattr(run, "to_dict") else dict(run)
        missing = [name for name in _FIELDS if name not in row]
        if missing:
            raise ValueError(f"run {i} has no {missing}; each run needs {list(_FIELDS)} (a RunResult has them).")
        for name in _FIELDS:
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise ValueError(
                    f"run {i} ({row['n_features']} features, {row['n_steps']} steps) has {name}={value!r}: every "
                    "run needs a finite number. A non-finite loss means that run diverged: retrain it with a "
                    "lower lr, or leave it out."
                )
            if value <= 0:
                raise ValueError(f"run {i} has {name}={value!r}; power laws need positive values.")
        runs.append(row)
    if not runs:
        raise ValueError("No runs to fit: pass the results of sweep(acts, sizes=[...], steps=[...]).")
    return runs
