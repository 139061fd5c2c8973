"""RunView: run one long analysis call off the kernel's thread, with its progress, a Stop button and its outcome.

Feature statistics, a harvest or the demo pipeline take minutes; run in a cell, only an interrupt of the kernel
stops them. A `RunView` runs such a call — any callable with a ``cancel`` parameter: `saewidgets.harvest`,
`~saewidgets.analysis.feature_stats`, `saewidgets.demo.demo_artifacts`, `saewidgets.demo.demo_sae` — in a background
thread (one at a time, `_jobs.SingleFlight`) and shows:

- what runs (``title``) and how far it is: the call's own progress bar — tokens harvested, tokens of statistics,
  training steps, batches of logit effects — as counted by the call (`saewidgets.progress`), never an estimate;
  once that bar is over and the call goes on with work that has none, the view says so instead of showing 100%;
- Run and Stop buttons: Stop sets the call's ``cancel=`` signal, which it checks between batches, so it stops
  within one batch and returns nothing (see `saewidgets.cancel`);
- the outcome: done (the value is ``view.result``), stopped (no result: nothing partial is kept or shown as
  complete) or the error, in one line. A stopped call leaves the model as it was: run again, it gives what an
  uninterrupted run gives.

    run = RunView(feature_stats, args=(model, sae, acts), title="Statistics of 40k tokens")
    run.start()   # or press Run; run.stop() is the Stop button
    run.wait()
    stats = run.result
"""

from __future__ import annotations

import html
import inspect
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import traitlets as t

from ..progress import Progress, reporting
from ._base import ViewWidget
from ._jobs import STOPPED, SingleFlight, cancel_kwargs

READY, RUNNING, DONE, ERROR = "ready", "running", "done", "error"
#: Progress reaches the page at most this often (seconds): a harvest updates its bar every batch.
REPORT_EVERY_S = 0.2


def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """``fn``'s parameters; a TypeError that says what a RunView needs when they cannot be read."""
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"RunView needs a callable whose parameters it can read (to pass cancel=); got {fn!r}."
        ) from err


def _name(fn: Callable[..., Any]) -> str:
    """The name a call is shown by: its function's name (through `functools.partial`)."""
    inner = getattr(fn, "func", fn)
    return str(getattr(inner, "__name__", type(inner).__name__))


def _one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded to single spaces."""
    return " ".join(text.split())


class RunView(ViewWidget):
    """One long call (``fn(*args, **kwargs)``, which must take ``cancel=``) with Run and Stop buttons, its progress
    as the call counts it, and its outcome; the value of a finished run is :attr:`result`.

    Args:
        fn: the call, e.g. `~saewidgets.analysis.feature_stats`; it gets the view's Stop signal as ``cancel=``,
            and ``progress=False`` (the view shows the progress) unless ``kwargs`` sets ``progress``.
        args, kwargs: its arguments, as for `threading.Thread`.
        title: what the view says is running (default: the function's name).
        start: start the call at once (default: on Run or :meth:`start`).
        background: False runs :meth:`start` in the calling thread (scripts, tests).
    """

    _view = "run_view"
    _fallback_height = 120
    title = t.Unicode("").tag(sync=True)
    state = t.Unicode(READY).tag(sync=True)  # ready | running | done | stopped | error
    stage = t.Unicode("").tag(sync=True)  # the description of the call's current progress bar
    done = t.Int(0).tag(sync=True)  # counted by that bar, in ``unit``
    total = t.Int(None, allow_none=True).tag(sync=True)  # None: the bar does not know its total
    unit = t.Unicode("").tag(sync=True)
    stage_closed = t.Bool(False).tag(sync=True)  # that bar is over; the call goes on with work that has no bar
    elapsed = t.Float(0.0).tag(sync=True)  # seconds since the run started, at the last report
    message = t.Unicode("").tag(sync=True)  # the outcome in one line

    def __init__(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        title: str | None = None,
        start: bool = False,
        background: bool = True,
        **widget_kwargs: Any,
    ) -> None:
        params = _parameters(fn)
        if "cancel" not in params:
            raise TypeError(
                f"RunView runs calls that can be stopped: {_name(fn)} has no cancel= parameter. Wrap it in a "
                "function that takes cancel= and checks it between batches (see saewidgets.cancel)."
            )
        kwargs = dict(kwargs or {})
        if "cancel" in kwargs:
            raise TypeError("RunView passes its own Stop signal as cancel=; leave cancel out of kwargs.")
        if "progress" in params and "progress" not in kwargs:
            kwargs["progress"] = False  # a tqdm bar drawn from the job's thread lands in whichever cell is current
        super().__init__(**widget_kwargs)
        self.fn, self.args, self.kwargs = fn, tuple(args), kwargs
        self.background = background
        self.title = _name(fn) if title is None else str(title)
        self._result: Any = None
        self._started = 0.0
        self._last_report = 0.0
        self._report_lock = threading.Lock()
        self._jobs = SingleFlight(on_busy=self._on_busy, on_error=self._on_error)
        self.on_msg(self._on_frontend_msg)
        if start:
            self.start()

    @property
    def result(self) -> Any:
        """What the last run returned; None while it runs, and after a stop or an error."""
        return self._result

    @property
    def running(self) -> bool:
        """Whether a run is in flight."""
        return self._jobs.running

    def start(self, wait: bool = False) -> bool:
        """Run the call (``wait=True``: in this thread). False, and nothing starts, while a run is in flight."""
        fn, args, kwargs = self.fn, self.args, self.kwargs

        def job() -> Any:
            with reporting(self._on_progress):
                return fn(*args, **kwargs, **cancel_kwargs(fn))

        return self._jobs.start(job, self._on_done, background=self.background and not wait)

    def stop(self) -> bool:
        """Stop the run in flight (the Stop button): its call stops at its next batch and nothing is kept."""
        return self._jobs.stop()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run in flight (if any) finishes."""
        self._jobs.join(timeout)

    # -- what the job reports (from its thread) -------------------------------------------------------------------

    def _on_busy(self, busy: bool) -> None:
        """A run begins (in the thread that started it, once SingleFlight let it in): clear the last one."""
        if not busy:
            return
        self._result = None
        self._started = self._last_report = time.monotonic()
        with self.hold_sync():
            self.state, self.stage, self.done, self.total, self.unit = RUNNING, "", 0, None, ""
            self.stage_closed, self.elapsed, self.message = False, 0.0, ""

    def _on_progress(self, report: Progress) -> None:
        """A bar of the call moved: show it, at most every `REPORT_EVERY_S` unless its stage changes or ends."""
        now = time.monotonic()
        with self._report_lock:
            ends = report.closed or (report.total is not None and report.n >= report.total)
            if report.desc == self.stage and not ends and now - self._last_report < REPORT_EVERY_S:
                return
            self._last_report = now
        with self.hold_sync():
            self.stage, self.done, self.total, self.unit = report.desc, report.n, report.total, report.unit
            self.stage_closed, self.elapsed = report.closed, now - self._started

    def _on_done(self, result: Any) -> None:
        self._result = result
        elapsed = time.monotonic() - self._started
        with self.hold_sync():
            self.elapsed = elapsed
            self.message = f"done in {elapsed:.1f} s: {type(result).__name__} (view.result)"
            self.state = DONE

    def _on_error(self, error: str) -> None:
        if not error:  # SingleFlight clears the last error when a job starts
            return
        self._result = None
        elapsed = time.monotonic() - self._started
        with self.hold_sync():
            self.elapsed = elapsed
            if error == STOPPED:
                self.message = f"stopped after {elapsed:.1f} s; no result (Run starts over)"
                self.state = STOPPED
            else:
                self.message = _one_line(error)
                self.state = ERROR

    def _on_frontend_msg(self, widget: Any, content: dict[str, Any], buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("event") == "run":
            self.start()
        elif content.get("event") == "stop":
            self.stop()

    def _fallback_html(self) -> str:
        shown = f"{self.done:,} / {self.total:,} {self.unit}" if self.total is not None else ""
        return (
            f"<p><b>{html.escape(self.title)}</b>: {html.escape(self.state)} {html.escape(self.stage)} "
            f"{html.escape(shown)}</p><p>{html.escape(self.message)}</p>"
        )
