"""Safe writes for every cache and prepared folder: one helper, one permission policy.

Why: five hand-written write-then-rename blocks had drifted (file modes 0600, 0644,
0700; one memory-mapped a sparse file, so a full disk killed the process with SIGBUS;
temp files of killed runs were never removed).  Here, once:

* :func:`atomic_path` - write a temp file next to the target, rename it in on success,
  always remove it on failure; a write that fails for lack of room becomes a one-line
  :class:`WriteError` naming the destination (never the temp file, never a source):
  ``ENOSPC`` and ``EDQUOT`` a :class:`DiskFullError` with the space needed and free,
  ``EFBIG`` a :class:`FileTooLargeError` with the process's file-size limit
  (``RLIMIT_FSIZE``, ``ulimit -f``), refused up front when the size is known
  (:func:`write_json`, :func:`write_parquet_atomic`, :func:`torch_save` and the other
  writers are built on it);
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


class WriteError(_OneLineOSError):
    """A write failed for lack of room (full disk, quota, file-size limit); the message names the
    file being written and what limits it."""

    needed: int | None = None  # bytes the write needed, when known


class DiskFullError(WriteError):
    """Not enough free space (or quota) for a write; the message names the path and the space needed."""


class FileTooLargeError(WriteError):
    """A file would exceed the process's file-size limit (``ulimit -f``) or its file system's maximum."""


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
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EB" if abs(n) < 1024 else f"{n:.3g} EB"


def _existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike) -> int:
    return shutil.disk_usage(_existing(Path(path))).free


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get (psutil's or the kernel's ``MemAvailable``, capped by a
    cgroup memory limit); None when unknown.  For estimates before large allocations."""
    avail: int | None = None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - not installed, or no /proc: read the kernel's figure
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
        if avail is None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):  # "max": no limit
            limit = int(Path(limit_file).read_text().strip())
            if 0 < limit < 1 << 60:
                avail = limit if avail is None else min(avail, limit)
            break
    return avail


def disk_full(path: str | os.PathLike, needed: int | None = None) -> DiskFullError:
    """The one-line error for a full disk at ``path``."""
    need = f"needs {human(needed)}, " if needed else ""
    return _named(DiskFullError(errno.ENOSPC, f"{path}: disk full ({need}{human(free_bytes(Path(path).parent))} free); "
                                              f"free some space or set RAYSEARCH_HOME / --data-root to a larger disk",
                                str(path)), needed)


def quota_exceeded(path: str | os.PathLike, needed: int | None = None) -> DiskFullError:
    """The one-line error for a write refused by the user's disk quota at ``path``."""
    need = f" (needs {human(needed)})" if needed else ""
    return _named(DiskFullError(errno.EDQUOT, f"{path}: disk quota exceeded{need}; free some of your files on that "
                                              f"disk or set RAYSEARCH_HOME / --data-root to another one", str(path)),
                  needed)


def fsize_limit() -> int | None:
    """The soft ``RLIMIT_FSIZE`` (largest file this process may write, bytes), None when unlimited."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY or soft < 0 else int(soft)


def file_too_large(path: str | os.PathLike, needed: int | None = None) -> FileTooLargeError:
    """The one-line error for ``EFBIG`` at ``path``: the file-size limit when one is set, else the file system's."""
    limit = fsize_limit()
    need = f"needs {human(needed)}, " if needed else ""
    if limit is not None:
        msg = (f"{path}: file too large ({need}the file-size limit of this process is {human(limit)}: "
               f"ulimit -f {limit // 1024}); raise it (ulimit -f unlimited) or write less")
    else:
        msg = (f"{path}: file too large for its file system ({need}no file-size limit is set); "
               f"write it to another file system")
    return _named(FileTooLargeError(errno.EFBIG, msg, str(path)), needed)


def _named(e: WriteError, needed: int | None) -> WriteError:
    e.needed = needed  # with ``filename`` (the file being written): what :func:`relocate` needs
    return e


def check_free_space(path: str | os.PathLike, needed: int, *, estimate: bool = False) -> None:
    """Refuse up front, before writing anything, when ``needed`` bytes do not fit where ``path`` goes
    (free space, and the process's file-size limit unless ``needed`` is only an ``estimate``)."""
    limit = None if estimate else fsize_limit()
    if limit is not None and needed > limit:
        raise file_too_large(path, needed)
    if needed > free_bytes(Path(path).parent):
        raise disk_full(path, needed)


def _errno_of(e: BaseException) -> int | None:
    """The errno of a failed write; pyarrow and torch sometimes only say it in the message."""
    if not isinstance(e, (OSError, RuntimeError)):
        return None
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return e.errno
    text = str(e)
    for code, words in ((errno.ENOSPC, "No space left"), (errno.EDQUOT, "Disk quota exceeded"),
                        (errno.EFBIG, "File too large")):
        if words in text or f"errno {code}]" in text:
            return code
    return None


def is_enospc(e: BaseException) -> bool:
    """A full disk or quota (pyarrow raises OSError without errno for a full disk: the message is read too)."""
    return isinstance(e, OSError) and _errno_of(e) in (errno.ENOSPC, errno.EDQUOT)


def relocate(e: WriteError, tmp: str | os.PathLike, final: str | os.PathLike) -> WriteError:
    """``e`` naming the file where it was going to end up: a file of the temp folder ``tmp`` (a folder
    built aside, then swapped in) is named as the same file under ``final``."""
    try:
        rel = Path(e.filename).relative_to(tmp)
    except (TypeError, ValueError):
        return e
    make = {errno.ENOSPC: disk_full, errno.EDQUOT: quota_exceeded, errno.EFBIG: file_too_large}.get(e.errno)
    return make(Path(final) / rel, getattr(e, "needed", None)) if make else e


def write_error(path: str | os.PathLike, e: BaseException, needed: int | None = None) -> WriteError | None:
    """The one-line error naming ``path`` (the file being written) for a write that failed for lack of
    room (``ENOSPC``, ``EDQUOT``, ``EFBIG``); None for any other failure."""
    if isinstance(e, WriteError):
        return e
    code = _errno_of(e)
    if code == errno.ENOSPC:
        return disk_full(path, needed)
    if code == errno.EDQUOT:
        return quota_exceeded(path, needed)
    if code == errno.EFBIG:
        return file_too_large(path, needed)
    return None


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
def atomic_path(path: str | os.PathLike, *, needed: int | None = None, clean: bool = False,
                estimate: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path``; write it, and on a clean exit it replaces ``path``.

    ``needed`` (bytes, when known) is checked against the free space and the file-size
    limit first (``estimate``: ``needed`` is a rough size, e.g. a table before compression: the
    free space only).  On any failure the temp file is removed; a full disk or quota is a
    :class:`DiskFullError`, a file-size limit a :class:`FileTooLargeError`, both naming ``path``.
    Concurrent readers see the old file or the new one, never half of one.
    ``clean``: first remove stale temp files of killed runs from the folder (caches:
    small folders; not for a folder of 100k images written one by one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        clean_stale(path.parent)
    if needed is not None:
        check_free_space(path, needed, estimate=estimate)
    fd, name = tempfile.mkstemp(prefix=_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            yield tmp
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:  # RuntimeError: torch's writers lose the errno
            err = write_error(path, e, needed)
            if err is None or err is e:
                raise
            raise err from None
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


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_path`, serialised in memory first: torch's own file writer
    turns ``EFBIG``/``ENOSPC`` into "unexpected pos" (and ``torch.jit.save`` aborts the process)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getbuffer())


def write_parquet_atomic(table: Any, path: str | os.PathLike) -> None:
    """Write a ``pyarrow.Table`` as Parquet through :func:`atomic_path` (stale temp files of the folder
    removed first): concurrent trials reading a cache never see half a file."""
    import pyarrow.parquet as pq  # here: this module is imported by every command, pyarrow is not needed by all

    with atomic_path(path, needed=table.nbytes, clean=True, estimate=True) as tmp:
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


# ----------------------------------------------------------------------------- run locks


def run_lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of a run folder: ``.<name>.lock`` beside it (not inside: a new run must not
    create its folder before the checks that refuse it)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _lock_holder(fd: int) -> str:
    """Who holds a run lock, from what it wrote in the file ("pid N" or "pid N on host H")."""
    try:
        pid, _, host = os.pread(fd, 200, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid.isdigit():
        return "pid unknown"
    return f"pid {pid}" if host in ("", _HOST) else f"pid {pid} on host {host[:40]}"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the run lock of ``folder`` (a sweep's run directory, an experiment's ``--out``) while the
    block runs, or refuse at once: a second command on the same folder is a one-line
    :class:`BusyError` "``what`` is being run by another process (pid N)".

    flock: the lock dies with its process (a killed run leaves no stale lock); the file stays,
    emptied.  Yields the lock file's path.
    """
    path = run_lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(errno.EBUSY, f"{what} is being run by another process ({_lock_holder(fd)}); "
                                         f"wait for it to finish or use another name (lock: {path})") from None
        try:
            with contextlib.suppress(OSError):  # the holder's pid is for the refusal message only
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {_HOST}\n".encode(), 0)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
