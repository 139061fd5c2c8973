"""Stopping long work from another thread: the ``cancel=`` signal and the `Cancelled` error.

Every call that can run for seconds or more takes ``cancel=``: `saewidgets.harvest`,
`saewidgets.harvest_to_store`, `saewidgets.sae.family.train_family` / `~saewidgets.sae.family.sweep`,
`saewidgets.analysis.feature_stats`, `~saewidgets.analysis.steer` / `~saewidgets.analysis.steer_vector` /
`~saewidgets.analysis.generate`, `~saewidgets.analysis.attribute`, `~saewidgets.analysis.token_activations` and
`saewidgets.demo.demo_artifacts`. Pass any object with an ``is_set()`` method — a `threading.Event` — and set it
from elsewhere (a widget's Stop button, another thread, a timer)::

    stop = threading.Event()
    threading.Timer(5.0, stop.set).start()
    try:
        stats = feature_stats(model, sae, corpus, cancel=stop)
    except Cancelled:
        ...  # nothing was returned, cached or saved; the model is as before

What a cancelled call guarantees:

- it checks the signal between batches (harvests and statistics: every batch; generation: every new token;
  attribution: between its passes; families and sweeps: every step; the demo pipeline: between stages and
  training steps), so it stops within one batch of the signal;
- it raises `Cancelled`, never returns a partial result, and writes nothing to the cache (a harvest's spill file
  is deleted; a training run keeps only its resumable checkpoint; a store harvest deletes its shard in flight and
  keeps the shards its manifest lists as committed; a family or sweep checkpoints its unfinished runs and marks
  none finished), so calling again resumes to what an uninterrupted call gives;
- the model is left usable: its lock is released and no nnsight hook stays behind, so the next call works and
  gives the same results as if the cancelled one had never run.

A remote (NDIF) generation cannot be stopped mid-request (the signal cannot travel with it): it is checked before
the request is sent and once its answer is back.

Ctrl-C is the other way to stop: where stopping mid-step would leave a checkpoint no uninterrupted run passes
through (training; under torchrun, every rank at the same step), `DeferredInterrupt` holds the first SIGINT until
the step ends, and a second stops at once.

The widgets (`saewidgets.widgets`) pass their job's Stop event as ``cancel=`` to any callable whose signature has
a ``cancel`` parameter, and drop whatever a stopped job returns. `saewidgets.widgets.RunView` gives any such call
(statistics, a harvest, the demo pipeline) a Stop button of its own, with its progress and outcome.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Protocol


class CancelSignal(Protocol):
    """What ``cancel=`` accepts: anything with ``is_set()``, e.g. a `threading.Event`."""

    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """Work stopped through its ``cancel=`` signal before it finished; it returned and saved nothing."""


def stopped(what: str) -> str:
    """The message of the `Cancelled` raised when ``what`` (e.g. "the harvest") is stopped."""
    return f"Stopped: {what} did not finish (its cancel signal was set); nothing was returned or saved."


def check_cancel(cancel: CancelSignal | None, what: str) -> None:
    """Raise `Cancelled` (naming ``what`` was stopped) if ``cancel`` is set; do nothing for None."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(stopped(what))


class DeferredInterrupt:
    """Ctrl-C held until the work in progress reaches a point where stopping leaves it whole.

    A training step updates the weights, Adam's state and the step counter one after another; a KeyboardInterrupt
    raised between them leaves a checkpoint that no uninterrupted run passes through, and under torchrun one rank
    stopping mid-step leaves the others waiting in a collective. Inside ``with DeferredInterrupt() as ctrl_c:`` the
    first SIGINT only sets ``ctrl_c.requested`` (and prints ``notice``), for the loop to act on at its next
    boundary; a second raises KeyboardInterrupt at once, as Python's own handler would.

    It takes over SIGINT only in the main thread and only from Python's default handler (a script's, a torchrun
    rank's, a notebook cell's); anywhere else it changes nothing and ``requested`` stays False.
    """

    def __init__(self, notice: str | None = None) -> None:
        self.requested = False
        self.notice = notice
        self._previous: object = None

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.notice:
            print(self.notice, file=sys.stderr, flush=True)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._previous = None


__all__ = ["CancelSignal", "Cancelled", "DeferredInterrupt", "check_cancel", "stopped"]
