"""Safe writes for every cache and prepared folder: one helper, one permission policy.

Why: five hand-written write-then-rename blocks had drifted (file modes 0600, 0644,
0700; one memory-mapped a sparse file, so a full disk killed the process with SIGBUS;
temp files of killed runs were never removed).  Here, once:

* :func:`atomic_path` - write a temp file next to the target, rename it in on success,
  always remove it on failure; ``ENOSPC`` becomes a one-line :class:`DiskFullError`
  naming the path and the space needed (:func:`write_json`, :func:`write_parquet_atomic`
  and the other writers are built on it);
* files and folders get the user's umask (what ``open()``/``mkdir`` would give), never a
  hard-coded mode;
* temp names carry host and pid, so :func:`clean_stale` can remove what a killed run left
  without touching a live writer's file;
* :func:`replace_dir` swaps a folder in by renaming the old one aside first, and
  :func:`recover_dir` undoes a swap interrupted between the two renames;
* :func:`file_lock` serialises builders across processes (flock).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from raysearch.errors import RaysearchError

log = logging.getLogger(__name__)

#: a temp file whose writer cannot be checked (another host, an old name) is stale after this
STALE_AFTER_S = 6 * 3600
#: temp files named by older versions (no host/pid tag) are stale after this
LEGACY_STALE_AFTER_S = 3600
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"
_TAG = re.compile(r"\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


class _OneLineOSError(RaysearchError, OSError):
    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28] " prefix
        return str(self.strerror)


class DiskFullError(_OneLineOSError):
    """Not enough free space for a write; the message names the path and the space needed."""


class BusyError(_OneLineOSError):
    """Another process holds the lock of what we were asked to build."""


# ----------------------------------------------------------------------------- modes


def umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


# ----------------------------------------------------------------------------- space


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike) -> int:
    return shutil.disk_usage(_existing(Path(path))).free


def disk_full(path: str | os.PathLike, needed: int | None = None) -> DiskFullError:
    """The one-line error for a full disk at ``path``."""
    need = f"needs {human(needed)}, " if needed else ""
    return DiskFullError(errno.ENOSPC, f"{path}: disk full ({need}{human(free_bytes(Path(path).parent))} free); "
                                       f"free some space or set RAYSEARCH_HOME / --data-root to a larger disk")


def check_free_space(path: str | os.PathLike, needed: int) -> None:
    """Refuse up front, before writing anything, when ``needed`` bytes do not fit where ``path`` goes."""
    if needed > free_bytes(Path(path).parent):
        raise disk_full(path, needed)


def is_enospc(e: BaseException) -> bool:
    """pyarrow raises OSError without errno for a full disk: look at the message too."""
    return isinstance(e, OSError) and (e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e))


# ----------------------------------------------------------------------------- temp names


def _prefix(name: str) -> str:
    return f".{name}.{_HOST}-{os.getpid()}-"


def _stale(entry: os.DirEntry) -> bool:
    try:
        age = time.time() - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    m = _TAG.search(entry.name)
    if m is None:
        return age > LEGACY_STALE_AFTER_S
    if m["host"] == _HOST:
        pid = int(m["pid"])
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, someone else's
    return age > STALE_AFTER_S


def clean_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.*.tmp`` files and folders that killed runs left in ``folder``."""
    removed: list[Path] = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
        for e in it:
            if not (e.name.startswith(".") and e.name.endswith(".tmp")) or not _stale(e):
                continue
            _remove(Path(e.path))
            removed.append(Path(e.path))
    if removed:
        log.info("removed %d stale temp file(s) of killed runs in %s", len(removed), folder)
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


# ----------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, needed: int | None = None, clean: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path``; write it, and on a clean exit it replaces ``path``.

    ``needed`` (bytes, when known) is checked against the free space first.  On any
    failure the temp file is removed; a full disk is a :class:`DiskFullError`.
    Concurrent readers see the old file or the new one, never half of one.
    ``clean``: first remove stale temp files of killed runs from the folder (caches:
    small folders; not for a folder of 100k images written one by one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        clean_stale(path.parent)
    if needed is not None:
        check_free_space(path, needed)
    fd, name = tempfile.mkstemp(prefix=_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            yield tmp
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except OSError as e:
            if is_enospc(e) and not isinstance(e, DiskFullError):
                raise disk_full(path, needed) from None
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str))


def write_parquet_atomic(table: Any, path: str | os.PathLike) -> None:
    """Write a ``pyarrow.Table`` as Parquet through :func:`atomic_path` (stale temp files of the folder
    removed first): concurrent trials reading a cache never see half a file."""
    import pyarrow.parquet as pq  # here: this module is imported by every command, pyarrow is not needed by all

    with atomic_path(path, needed=table.nbytes, clean=True) as tmp:
        pq.write_table(table, tmp)


# ----------------------------------------------------------------------------- folders


def temp_dir(parent: str | os.PathLike, name: str) -> Path:
    """An empty temp folder in ``parent`` for building ``parent/name`` (umask mode, cleanable)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=_prefix(name), suffix=".tmp", dir=parent))
    os.chmod(d, dir_mode())
    return d


def aside_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.replaced"


def recover_dir(folder: str | os.PathLike) -> None:
    """Finish or undo a :func:`replace_dir` that a kill interrupted.

    Killed between the two renames, ``folder`` is missing and the old one is aside:
    put it back.  Killed after both, the aside copy is the old one: delete it.
    """
    folder = Path(folder)
    aside = aside_path(folder)
    if not aside.exists():
        return
    if folder.exists():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(aside, folder)
        log.warning("%s: restored the previous version (a replacement was interrupted)", folder)


def replace_dir(tmp: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Move the complete folder ``tmp`` to ``folder``: old one aside, new one in, then delete the old.

    At every instant one complete version exists on disk (see :func:`recover_dir`).
    """
    tmp, folder = Path(tmp), Path(folder)
    recover_dir(folder)
    aside = aside_path(folder)
    if folder.exists():
        os.rename(folder, aside)
    os.rename(tmp, folder)
    shutil.rmtree(aside, ignore_errors=True)


# ----------------------------------------------------------------------------- locks


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, wait: bool = True, what: str = "") -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (created if needed).

    ``wait=False``: a held lock is a :class:`BusyError` saying ``what`` holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise BusyError(errno.EBUSY, f"{what or path} is busy: another process holds {path}; "
                                         f"wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
