"""What every benchmark shares: interleaved timing, the result row, the machine's description and matmul ceiling."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch


@dataclass
class Row:
    """One figure: ours against a reference, both measured in this process, interleaved."""

    benchmark: str
    """Benchmark name (``--only`` selects by it)."""
    figure: str
    """What is measured, e.g. ``SAE training (TopK, 16,384 latents, k 32)``."""
    unit: str
    """Unit of ``ours`` and ``reference`` (``tokens/s``, ``s``, ``bytes``, ``ms``)."""
    ours: float
    """Median of our repeats."""
    reference: float
    """Median of the reference's repeats."""
    reference_name: str
    """What the reference is."""
    better: Literal["higher", "lower"]
    """Which direction of ``ratio`` is good."""
    goal: float | None = None
    """Target ratio (ours / reference), if the issue sets one."""
    notes: str = ""
    """Settings and caveats."""
    samples: dict[str, list[float]] = field(default_factory=dict)
    """Every repeat, per contender (seconds, or the unit for sizes)."""

    @property
    def ratio(self) -> float:
        """ours / reference."""
        return self.ours / self.reference if self.reference else float("nan")

    @property
    def met(self) -> bool | None:
        """Whether the goal is met (None without a goal)."""
        if self.goal is None:
            return None
        return self.ratio >= self.goal if self.better == "higher" else self.ratio <= self.goal

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


#: Benchmarks that run on ``--device`` (a GPU among them); the rest time CPU work only.
DEVICE_BENCHMARKS = ("train", "harvest", "steer", "stats")
_device = torch.device("cpu")


def set_device(name: str) -> torch.device:
    """Make ``name`` the device the `DEVICE_BENCHMARKS` run on; refuse one this torch cannot use."""
    global _device
    try:
        chosen = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a torch device: pass cpu or cuda (or cuda:N).") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name}: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False); "
            "run on a machine with a GPU and a CUDA build of torch, or leave --device at cpu."
        )
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: the benchmarks run on cpu or cuda.")
    _device = chosen
    return chosen


def device() -> torch.device:
    """Where the device-aware benchmarks put models, SAEs and training (``--device``; CPU by default)."""
    return _device


def _synchronize() -> None:
    """Wait for queued GPU work, so a contender's time includes it (CUDA runs asynchronously)."""
    if _device.type == "cuda":
        torch.cuda.synchronize(_device)


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Wall-clock seconds of each contender, run in turn (A, B, C, A, B, C, ...) ``repeats`` times, so that load
    from other processes on a shared machine hits every contender alike. One untimed warm-up round first."""
    if warmup:
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            _synchronize()
            start = time.perf_counter()
            fn()
            _synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def matmul_gflops(m: int = 4096, k: int = 640, n: int = 16384) -> Callable[[], float]:
    """A contender timing one fp32 ``[m, k] @ [k, n]`` product on `device`; FLOP of one call: ``2 m k n``."""
    a, b = torch.randn(m, k, device=_device), torch.randn(k, n, device=_device)
    out = torch.empty(m, n, device=_device)
    return lambda: torch.mm(a, b, out=out)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    slug = "-".join(re.findall(r"[a-z0-9]+", f"{gpu or cpu} {os.cpu_count()} cores".lower()))
    return {
        "name": os.environ.get("SAEWIDGETS_BENCH_MACHINE") or slug,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": gpu,
        "load_average_at_start": load,
    }
