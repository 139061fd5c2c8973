"""Writing results to disk so that a crash, a full disk or a careless path never loses or half-writes anything.

Three promises, kept by every save in saewidgets (`save_sae`, `FeatureStats.save`, `Activations.save`, ...):

- **All or nothing.** Files are written into a hidden temporary folder and fsynced first; only a complete set is
  put in place. A crash before that leaves the previous version as it was; a crash while putting it in place is
  finished by the next load or save of that folder (`finish_interrupted_save`), so one complete version always loads.
- **Only our own files.** Each saved folder holds a small manifest (`MANIFEST`) naming the files saewidgets wrote
  there. A later save replaces those and nothing else: a user's ``notes.txt`` or ``src/`` beside them survive. A
  non-empty folder saewidgets did not write is refused unless the caller passes ``overwrite=True`` (which still
  replaces only the files that save writes), and an existing file is never turned into a folder.
- **No litter.** Temporaries of saves killed with SIGKILL are removed by the next save to the same place, once the
  process that made them is gone.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MANIFEST = ".saewidgets-files.json"  # in every saved folder: which of its files saewidgets wrote
_STAGED = ".saewidgets-staged"  # prefix of the temporary folder a save into an existing folder writes into
_COMMIT = ".saewidgets-commit"  # a complete, fsynced save waiting to be moved into place (rolled forward)
_WRITER = "saewidgets"

# errno values that mean "no room left": a full disk or a used-up quota.
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# How libraries that do their own I/O spell a full disk: safetensors' Rust code ("os error 28"), numpy's short
# write ("524288 requested and 249824 written", an OSError without errno), ...
_DISK_FULL_WORDS = re.compile(
    r"No space left on device|Disk quota exceeded|os error 28\b|StorageFull|\d+ requested and \d+ written", re.I
)


# -- saving a folder ------------------------------------------------------------------------------------------------


@contextmanager
def atomic_dir(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block ends without error its files become the files of ``final``.

    ``final`` may not exist yet (it then appears in one rename, complete), or be a folder that an earlier save wrote
    (its manifest names our files: those are replaced, anything else in it is kept). A non-empty folder without a
    manifest is refused with `FileExistsError` unless ``overwrite=True``, or unless it holds exactly the files this
    save writes (a save by a saewidgets from before manifests). A file at ``final`` raises `NotADirectoryError`.
    On any error the temporary folder is deleted and ``final`` is untouched; a full disk is reported as such.
    """
    final = _absolute(final)
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR,
            f"{final} is a file, not a folder: saewidgets saves a folder of files there. Pass the path "
            "of a folder (new or empty), or move the file away first.",
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise NotADirectoryError(
            errno.ENOTDIR,
            f"Cannot save to {final}: a part of that path is a file, not a "
            "folder. Pass a path whose parent folders are folders.",
        ) from err
    exists = final.is_dir()
    if exists:
        finish_interrupted_save(final)
    remove_stale_temporaries(final)
    # A new folder is assembled beside its final place and renamed in whole; an existing one receives its new
    # files from a staging folder inside it (a rename never crosses a mount point, and the folder itself stays).
    if exists:
        where, prefix = final, f"{_STAGED}.{os.getpid()}."
    else:
        where, prefix = final.parent, f".{_short(final)}.{os.getpid()}."
    try:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=where))
    except PermissionError as err:
        raise PermissionError(
            err.errno,
            f"Cannot save to {final}: {where} is not writable ({err.strerror}). Choose a folder you can write to.",
        ) from err
    try:
        yield tmp
        written = sorted(p.name for p in tmp.iterdir())
        if exists:
            _refuse_foreign_folder(final, set(written), overwrite)
        _write_manifest(tmp, written)
        _fsync_tree(tmp)
        if exists:
            os.replace(tmp, final / _COMMIT)  # from here on the save counts: a crash is rolled forward
            fsync_path(final)
            _roll_forward(final)
        else:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; the user expects an ordinary one
            os.replace(tmp, final)
            fsync_path(final.parent)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise _disk_full_error(err, final) from err
        raise


def _absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute with ``.``/``..`` folded away, so it has a real name and parent."""
    if os.fspath(path) == "":
        raise ValueError("The path to save to is empty (''): pass a folder name, e.g. 'my_sae'.")
    if "\0" in os.fspath(path):
        raise ValueError(
            f"The path to save to, {os.fspath(path)!r}, holds a NUL character, which no file name can hold."
        )
    final = Path(os.path.abspath(path))
    if final == final.parent:
        raise ValueError(f"Cannot save into the root folder {final}: pass a folder below it.")
    return final


def _short(final: Path) -> str:
    """``final``'s name cut to 64 characters: a temporary's name (name + pid + 8 + ".tmp") must fit in 255."""
    return final.name[:64]


def own_files(folder: Path) -> set[str] | None:
    """The names that ``folder``'s manifest says saewidgets wrote, or None when it has no (valid) manifest."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != _WRITER or not isinstance(data.get("files"), list):
        return None
    # Only plain names count: a damaged or edited manifest must never make a save delete something elsewhere.
    return {n for n in data["files"] if isinstance(n, str) and _plain_name(n)}


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..", MANIFEST) and not any(c in name for c in "/\\\0")


def _refuse_foreign_folder(final: Path, written: set[str], overwrite: bool) -> None:
    """Refuse to save into a non-empty folder that saewidgets did not write, unless told to."""
    if overwrite or own_files(final) is not None:
        return
    present = {p.name for p in final.iterdir() if not _is_ours_in_progress(p.name)}
    if not present or present <= written:  # empty, or a save by a saewidgets that wrote no manifest
        return
    others = sorted(present - written)
    shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    raise FileExistsError(
        errno.EEXIST,
        f"{final} already holds files that saewidgets did not write ({shown}). Saving there could "
        "mix your files with saewidgets' own: pass a new or empty folder, or overwrite=True to save there anyway "
        "(only the files of this save are written or replaced; everything else in the folder is kept).",
    )


def _is_ours_in_progress(name: str) -> bool:
    return name == _COMMIT or (name.startswith(_STAGED + ".") and name.endswith(".tmp"))


def _write_manifest(folder: Path, names: list[str]) -> None:
    (folder / MANIFEST).write_text(json.dumps({"written_by": _WRITER, "files": names}, indent=1), encoding="utf-8")


def _roll_forward(final: Path) -> None:
    """Move a committed save's files from ``final/_COMMIT`` into ``final``; safe to repeat after a crash at any step.

    Order: new data files first, then the files the old manifest named that the new save does not write, then the
    new manifest last (until it is in place, the old manifest still names what to delete).
    """
    commit = final / _COMMIT
    new = own_files(commit)
    if new is not None:
        for name in sorted(new):
            _move_into_place(commit / name, final / name)
        for name in sorted((own_files(final) or set()) - new):
            _remove(final / name)
        _move_into_place(commit / MANIFEST, final / MANIFEST)
        fsync_path(final)
    shutil.rmtree(commit, ignore_errors=True)  # empty now (or, without a manifest, never a complete save)


def _move_into_place(source: Path, target: Path) -> None:
    if not source.exists():  # moved already, by the run that crashed or by a reader finishing the save
        return
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def finish_interrupted_save(folder: str | os.PathLike) -> None:
    """Complete a save into ``folder`` that was killed while moving its files into place (loaders call this first).

    The interrupted save had written and fsynced all its files before it started moving them, so finishing it
    yields exactly the version it was saving.
    """
    folder = Path(folder)
    if not (folder / _COMMIT).is_dir():
        return
    try:
        _roll_forward(folder)
    except OSError as err:
        raise OSError(
            err.errno,
            f"{folder} holds a save that was interrupted while its files were being put in "
            f"place, and it could not be completed ({err.strerror or err}). Make the folder writable, "
            "then load it again; or save again.",
        ) from err


# -- leftovers of killed saves ----------------------------------------------------------------------------------


def remove_stale_temporaries(final: Path) -> None:
    """Delete temporaries that saves to ``final`` killed by SIGKILL (or a power cut) left behind.

    They are hidden folders beside ``final`` (``.NAME.PID.XXXXXXXX.tmp``; older saewidgets wrote
    ``.NAME.XXXXXXXX.tmp`` and ``.NAME.old-PID``) or inside it (``.saewidgets-staged.PID.XXXXXXXX.tmp``). One whose
    process is still running belongs to a save in progress and is left alone.
    """
    name, short = re.escape(final.name), re.escape(_short(final))
    beside = re.compile(rf"\.(?:{name}|{short})\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp|\.{name}\.old-(\d+)")
    inside = re.compile(rf"{re.escape(_STAGED)}\.(\d+)\.[a-z0-9_]{{8}}\.tmp")
    for folder, pattern in ((final.parent, beside), (final, inside)):
        try:
            entries = list(folder.iterdir())
        except OSError:  # not there (yet) or not readable: nothing of ours to clean
            continue
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if not match or not entry.is_dir() or entry.is_symlink():
                continue
            pid = next((int(g) for g in match.groups() if g), None)
            if pid is None or not process_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (that of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


# -- durability and errors ----------------------------------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root, name))
        fsync_path(Path(root))


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a full disk or quota, also when a library wrapped the OSError."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            return True
        if _DISK_FULL_WORDS.search(str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _disk_full_error(err: BaseException, final: Path) -> OSError:
    """A disk-full error that says so in words, names the file, and says the previous version is untouched."""
    try:
        free = f"{shutil.disk_usage(final.parent).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return OSError(
        errno.ENOSPC,
        f"The disk is full ({free} on the device holding {final.parent}): could not write {final}. Nothing was "
        f"changed: the previous {final.name}, if there was one, is intact. Free some space and try again.",
    )


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Fail fast, before long work, if results cannot be written to folder ``path`` (``what`` names the argument).

    The folder need not exist yet: then its nearest existing parent must be a writable folder. Writability is
    probed by creating (and removing) a temporary file, which also catches read-only mounts and root-owned folders
    that permission bits alone would not.
    """
    if os.fspath(path) == "":
        raise ValueError(f"{what} is empty (''): pass a folder name.")
    path = Path(os.path.abspath(path))
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"is below {probe}, which is a file"
        raise NotADirectoryError(errno.ENOTDIR, f"{what}={str(path)!r} {where}, not a folder: pass a folder path.")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise PermissionError(
            err.errno,
            f"{what}={str(path)!r} cannot be written ({probe} refuses new files: "
            f"{err.strerror}). Pass a folder you can write to.",
        ) from err
    return path


# -- saving one file ----------------------------------------------------------------------------------------------


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
        if is_disk_full(err):
            raise _disk_full_error(err, path) from err
        raise
