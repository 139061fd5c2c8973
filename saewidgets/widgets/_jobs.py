"""Run one slow callback at a time for a widget (generation, attribution) without blocking the kernel.

Widgets hand user actions to analysis callbacks that can take seconds (a model forward/generate). A
:class:`SingleFlight` runs them in a daemon thread, refuses a second start while one is running, and reports
"busy"/"error"/result through callables the widget supplies, so every view handles progress and errors alike.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Callable


class SingleFlight:
    """At most one job at a time. ``start`` returns False (and runs nothing) while a job is in flight."""

    def __init__(self, on_busy: Callable[[bool], None], on_error: Callable[[str], None]) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._on_busy = on_busy
        self._on_error = on_error

    @property
    def running(self) -> bool:
        """Whether a job is in flight."""
        return self._lock.locked()

    def start(self, job: Callable[[], Any], on_done: Callable[[Any], None], background: bool = True) -> bool:
        """Run ``job()`` then ``on_done(result)``; errors go to ``on_error`` as one readable message.

        ``background=False`` runs in the calling thread (tests, scripts)."""
        if not self._lock.acquire(blocking=False):
            return False
        self._on_busy(True)
        self._on_error("")

        def run() -> None:
            try:
                on_done(job())
            except Exception as err:  # shown in the view, never raised into the comm handler
                detail = traceback.format_exception_only(type(err), err)[-1].strip()
                self._on_error(detail)
            finally:
                self._on_busy(False)
                self._lock.release()

        if background:
            self._thread = threading.Thread(target=run, name="saewidgets-job", daemon=True)
            self._thread.start()
        else:
            run()
        return True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the job in flight (if any)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
