"""Run ``saewidgets demo`` in this process and record, per stage, its wall time and peak resident memory.

    python -m benchmarks.demo_profile [--quick] [--out FILE.json] [--no-steer]

Meant to run in a child process (`bench_demo` starts it) with ``$SAEWIDGETS_CACHE`` pointing at a fresh folder, so
the figures are a first run's (model conversion included) or, run again on the same folder, a cached run's.

Stages are the demo's own functions (model loading, harvest, training, metrics, statistics, logit effects, labels,
steering, the page's model work, the feature map, the page), wrapped in place. Each outermost stage resets the
kernel's peak-RSS counter on entry (``/proc/self/clear_refs``, Linux) and reads it (``VmHWM``) on exit, so its peak
is exact, not sampled; the process's peak is the largest of those and of the gaps between stages (and
``ru_maxrss`` when the counter cannot be reset).

Resident memory counts the model's weights, which are memory-mapped from the safetensors checkpoint: those pages are
file-backed and clean, so under a memory limit (Binder's cgroup) the kernel drops and re-reads them instead of
failing. What cannot be dropped is anonymous memory (``RssAnon``: tensors, arrays, Python objects); the kernel keeps
no peak of it, so a thread samples it every 10 ms and each stage records the largest sample.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class StageRecorder:
    """Peak RSS and wall time of each outermost stage, in the order they ran."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []
        self.depth = 0
        self.gap_peak_kb = 0
        self.exact = _reset_peak()
        self.anon_peak_kb = self.anon_overall_kb = _status_kb("RssAnon")
        threading.Thread(target=self._sample_anon, daemon=True).start()

    def _sample_anon(self) -> None:
        while True:
            anon = _status_kb("RssAnon")
            self.anon_peak_kb = max(self.anon_peak_kb, anon)
            self.anon_overall_kb = max(self.anon_overall_kb, anon)
            time.sleep(0.01)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.depth:
                return fn(*args, **kwargs)
            self.gap_peak_kb = max(self.gap_peak_kb, _status_kb("VmHWM"))
            start_kb = _status_kb("VmRSS")
            _reset_peak()
            self.anon_peak_kb = _status_kb("RssAnon")
            start = time.perf_counter()
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                self.stages.append(
                    {
                        "stage": name,
                        "seconds": time.perf_counter() - start,
                        "rss_start_mb": start_kb / 1024,
                        "peak_rss_mb": _status_kb("VmHWM") / 1024,
                        "peak_anon_mb": max(self.anon_peak_kb, _status_kb("RssAnon")) / 1024,
                        "rss_end_mb": _status_kb("VmRSS") / 1024,
                    }
                )
                _reset_peak()

        return wrapper

    def peak_mb(self) -> float:
        peaks = [s["peak_rss_mb"] for s in self.stages] + [max(self.gap_peak_kb, _status_kb("VmHWM")) / 1024]
        if not self.exact:
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return max(peaks)


def instrument(recorder: StageRecorder) -> None:
    """Wrap the demo's stages where the pipeline looks them up."""
    import saewidgets
    import saewidgets.activations as activations
    import saewidgets.analysis as analysis
    import saewidgets.analysis.explain as explain
    import saewidgets.demo.run as demo_run
    import saewidgets.sae as sae

    targets = [
        (saewidgets, "load_model", "model loading (and conversion on a first run)"),
        (activations, "harvest", "harvest"),
        (sae, "train_sae", "SAE training"),
        (sae, "evaluate_sae", "held-out metrics (LM loss over the vocabulary)"),
        (analysis, "feature_stats", "feature statistics"),
        (analysis, "logit_effects", "logit effects"),
        (analysis, "feature_geometry", "feature map"),
        (explain, "explain_features", "labels"),
        (demo_run, "steering_examples", "steering example"),
        (demo_run, "page_examples", "the page's attribution and heatmap (model)"),
        (demo_run, "write_explorer", "Explorer page"),
    ]
    for module, attr, name in targets:
        setattr(module, attr, recorder.wrap(name, getattr(module, attr)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo (Binder's postBuild)")
    parser.add_argument("--no-steer", action="store_true", help="skip the steering example")
    parser.add_argument("--out", type=Path, help="write the stages and the peak here as JSON")
    parser.add_argument("--page-dir", type=Path, default=Path("saewidgets-demo"), help="folder for explorer.html")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    recorder = StageRecorder()
    from saewidgets.demo.run import run_demo
    from saewidgets.demo.settings import FULL, QUICK

    instrument(recorder)
    status = run_demo(QUICK if args.quick else FULL, args.page_dir, steer=not args.no_steer, quick=args.quick)
    result = {
        "status": status,
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": recorder.peak_mb(),
        "peak_exact": recorder.exact,
        "peak_anon_mb": recorder.anon_overall_kb / 1024,
        "stages": recorder.stages,
    }
    for s in recorder.stages:
        print(
            f"{s['stage']:<50} {s['seconds']:7.1f} s  peak {s['peak_rss_mb']:7.0f} MB (anon {s['peak_anon_mb']:.0f})  "
            f"(start {s['rss_start_mb']:.0f}, end {s['rss_end_mb']:.0f})",
            file=sys.stderr,
        )
    print(
        f"whole run: {result['seconds']:.0f} s, peak {result['peak_rss_mb']:.0f} MB (anon {result['peak_anon_mb']:.0f})",
        file=sys.stderr,
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
