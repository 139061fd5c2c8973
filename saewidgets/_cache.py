"""Where saewidgets keeps what is slow to make (converted models, harvests, trained SAEs, statistics).

``$SAEWIDGETS_CACHE`` wins; otherwise ``$XDG_CACHE_HOME/saewidgets`` or ``~/.cache/saewidgets``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def cache_dir(*parts: str) -> Path:
    """The cache folder (or a sub-folder of it), created on demand."""
    root = os.environ.get("SAEWIDGETS_CACHE")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "saewidgets")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


# errno values that mean "no room left": a full disk or a used-up quota.
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _disk_full_error(err: OSError, final: Path) -> OSError:
    """A disk-full error that says so in words, names the file, and says the previous version is untouched."""
    try:
        free = f"{shutil.disk_usage(final.parent).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return OSError(
        err.errno,
        f"The disk is full ({free} on the device holding {final.parent}): could not write {final}. Nothing was "
        f"changed: the previous {final.name}, if there was one, is intact. Free some space and try again.",
    )


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` in one rename.

    Nothing half-written is ever visible at ``final``: an exception (or Ctrl-C) inside the block deletes the
    temporary folder and leaves whatever was at ``final`` before untouched. A full disk is reported as such.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            if _exchange(tmp, final):  # one atomic swap: ``final`` is never missing, even after a SIGKILL
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous version
            else:  # no renameat2 here: two renames, with a short window in which ``final`` is missing
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            raise _disk_full_error(err, final) from err
        raise


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap paths ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or filesystem lacks it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; the user expects an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            raise _disk_full_error(err, path) from err
        raise
