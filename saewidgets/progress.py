"""Progress of long work, readable from another thread: the harvest's, statistics' and training's bars.

Long calls show a tqdm bar (``progress=True``). A view that runs such a call off the kernel's thread
(`saewidgets.widgets.RunView`) cannot read a bar drawn in a terminal or a notebook cell, so the calls make their
bars through :func:`progress_bar`: an ordinary ``tqdm.auto`` bar that, when the thread it is made in has a listener
(:func:`reporting`), also tells the listener how far it is — even when the bar itself is disabled
(``progress=False``)::

    with reporting(lambda p: print(p.desc, p.n, p.total, p.unit)):
        stats = feature_stats(model, sae, acts, progress=False)

Each report is the bar's own count, as tqdm would draw it (tokens for harvests and statistics, steps for
training), never an estimate. Threads without a listener get plain tqdm bars, at no extra cost.
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

from tqdm.auto import tqdm


@dataclass(frozen=True)
class Progress:
    """Where one bar stands: ``n`` of ``total`` ``unit`` done (``total`` None when unknown) in ``desc``;
    ``closed`` once the bar is closed (its work is over; the call may go on with work that has no bar)."""

    desc: str
    n: int
    total: int | None
    unit: str
    closed: bool = False


Listener = Callable[[Progress], None]
T = TypeVar("T")
_local = threading.local()


@contextmanager
def reporting(listener: Listener) -> Iterator[None]:
    """While inside, every :func:`progress_bar` made in this thread reports to ``listener`` on each update."""
    previous = getattr(_local, "listener", None)
    _local.listener = listener
    try:
        yield
    finally:
        _local.listener = previous


def progress_bar(total: int | None = None, *, desc: str, unit: str, disable: bool = False, initial: int = 0) -> Any:
    """A ``tqdm.auto`` bar (``with progress_bar(...) as bar: bar.update(k)``), also reported to this thread's
    listener, if it has one (see :func:`reporting`)."""
    listener = getattr(_local, "listener", None)
    if listener is None:
        return tqdm(total=total, desc=desc, unit=unit, disable=disable, initial=initial)
    return _Reported(listener, total=total, desc=desc, unit=unit, disable=disable, initial=initial)


def progress_iter(iterable: Sequence[T], *, desc: str, unit: str, disable: bool = False) -> Iterator[T]:
    """``iterable``'s items, counted by a :func:`progress_bar` (one per item, once its body has run)."""
    with progress_bar(len(iterable), desc=desc, unit=unit, disable=disable) as bar:
        for item in iterable:
            yield item
            bar.update(1)


class _Reported(tqdm):
    """A tqdm bar that also reports its count to a listener; it counts itself, since a disabled tqdm does not."""

    def __init__(self, listener: Listener, *, total: int | None, desc: str, unit: str, **kwargs: Any) -> None:
        self._listener = listener
        self._report = Progress(desc, int(kwargs.get("initial", 0)), None if total is None else int(total), unit)
        super().__init__(total=total, desc=desc, unit=unit, **kwargs)
        listener(self._report)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        report = self._report = Progress(
            self._report.desc, self._report.n + int(n or 0), self._report.total, self._report.unit
        )
        self._listener(report)
        return shown

    def close(self) -> None:
        super().close()
        if not self._report.closed:  # tqdm closes a bar again when it is deleted
            self._report = dataclasses.replace(self._report, closed=True)
            self._listener(self._report)


__all__ = ["Progress", "Listener", "progress_bar", "progress_iter", "reporting"]
