"""torchrun, as `saewidgets train --distributed` starts it: ``torch.distributed.run`` with the same arguments, which
ends on a SIGINT or SIGTERM without a traceback.

torchrun answers a signal by raising `SignalException` once its ranks are shut down, and prints its 25-line
traceback after the ranks' own last words (where the checkpoint is, the metrics of the SAE so far); the command
that passed the signal on already says it was interrupted. Anything else torchrun raises still shows in full.
"""

from __future__ import annotations

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main


def run() -> int:
    """torchrun with this process's arguments; its exit status, ``128 + signal`` when a signal stopped it."""
    try:
        main()
    except SignalException as stop:
        return 128 + int(stop.sigval)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
