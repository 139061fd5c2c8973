"""Run one slow callback at a time for a widget (generation, attribution) without blocking the kernel.

Widgets hand user actions to analysis callbacks that can take seconds (a model forward/generate). A
:class:`SingleFlight` runs them in a daemon thread, refuses a second start while one is running, and reports
"busy"/"error"/result through callables the widget supplies, so every view handles progress and errors alike.

A request that arrives while a job runs can wait for it instead (:meth:`SingleFlight.run_after`): a view that
starts jobs on its own (the Explorer's heatmap, on opening its tab) must not drop the user's request made a moment
later, before the "busy" state reached the browser.

A job can be stopped (the views' Stop buttons): :meth:`SingleFlight.stop` sets the job's ``threading.Event``,
which analysis calls that accept ``cancel=`` check between batches (see :func:`cancel_kwargs`); whatever the job
returns after a stop is dropped, so a stopped result never replaces the one shown.
"""

from __future__ import annotations

import inspect
import threading
import traceback
from typing import Any, Callable

_current = threading.local()
STOPPED = "stopped"


def current_stop_event() -> threading.Event | None:
    """The stop event of the job running in this thread (None outside a job)."""
    return getattr(_current, "event", None)


def cancel_kwargs(fn: Callable[..., Any]) -> dict[str, Any]:
    """``{"cancel": event}`` when ``fn`` takes a ``cancel`` argument and a job is running here, else ``{}``."""
    event = current_stop_event()
    if event is None:
        return {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {"cancel": event} if "cancel" in params else {}


class SingleFlight:
    """At most one job at a time. ``start`` returns False (and runs nothing) while a job is in flight."""

    def __init__(self, on_busy: Callable[[bool], None], on_error: Callable[[str], None]) -> None:
        self._lock = threading.Lock()
        self._waiting = threading.Lock()  # guards _after against a job finishing while it is set
        self._after: Callable[[], Any] | None = None
        self._thread: threading.Thread | None = None
        self._event = threading.Event()
        self._on_busy = on_busy
        self._on_error = on_error

    @property
    def running(self) -> bool:
        """Whether a job is in flight."""
        return self._lock.locked()

    def stop(self) -> bool:
        """Ask the job in flight to stop; its result (if it still returns one) is dropped. False if none runs."""
        self._after = None
        if not self.running:
            return False
        self._event.set()
        return True

    def run_after(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` now if no job runs, else once the job in flight has finished (in its thread). A later call
        replaces a ``fn`` still waiting (the newest request wins); `stop` drops it."""
        with self._waiting:
            if self.running:
                self._after = fn
                return
        fn()

    def start(self, job: Callable[[], Any], on_done: Callable[[Any], None], background: bool = True) -> bool:
        """Run ``job()`` then ``on_done(result)``; errors go to ``on_error`` as one readable message, a stop as
        ``"stopped"``. ``background=False`` runs in the calling thread (tests, scripts)."""
        if not self._lock.acquire(blocking=False):
            return False
        event = self._event = threading.Event()
        self._on_busy(True)
        self._on_error("")

        def run() -> None:
            _current.event = event
            try:
                result = job()
                if event.is_set():
                    self._on_error(STOPPED)
                else:
                    on_done(result)
            except Exception as err:  # shown in the view, never raised into the comm handler
                detail = traceback.format_exception_only(type(err), err)[-1].strip()
                self._on_error(STOPPED if event.is_set() else detail)
            finally:
                _current.event = None
                self._on_busy(False)
                with self._waiting:
                    self._lock.release()
                    after, self._after = self._after, None
                if after is not None:
                    after()

        if background:
            thread = threading.Thread(target=run, name="saewidgets-job", daemon=True)
            thread.start()  # before it is published: join() from another thread must never see it unstarted
            self._thread = thread
        else:
            run()
        return True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the job in flight (if any)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
