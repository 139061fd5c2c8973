"""Where saewidgets keeps what is slow to make (converted models, harvests, trained SAEs, statistics).

``$SAEWIDGETS_CACHE`` wins; otherwise ``$XDG_CACHE_HOME/saewidgets`` or ``~/.cache/saewidgets``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder (or a sub-folder of it), created on demand."""
    root = os.environ.get("SAEWIDGETS_CACHE")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "saewidgets")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
