"""Shared machinery of the adapters: line reading with line numbers, the kept/skipped
report, image validation and placement into the canonical folder.

Every adapter reads a dump that the user downloaded from somewhere else, so bad
input is expected: a malformed line is counted and reported with its file and line
number; a file that cannot be used at all (wrong format, truncated gzip, no valid
rows) is a :class:`~raysearch.data.format.DatasetError` naming ``file:line``.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from raysearch import _io
from raysearch.data.format import DatasetError
from raysearch.errors import MAX_ECHO
from raysearch.progress import tracked

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
MAX_EXAMPLES = 5
_SAFE_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,200}")


# ----------------------------------------------------------------------------- report


@dataclass
class _Skip:
    what: str
    reason: str
    count: int = 0
    examples: list[str] = field(default_factory=list)


class Report:
    """What an adapter kept and what it skipped, why, and where (file:line examples).

    ``to_dict()`` is what ``prepare`` prints (``--json``) and stores in meta.json.
    """

    def __init__(self, dataset: str, fmt: str, raw: Path, images: Path | None, params: dict[str, Any]):
        self.dataset, self.fmt, self.raw, self.images, self.params = dataset, fmt, raw, images, params
        self.kept: dict[str, int] = {}
        self._skips: dict[tuple[str, str], _Skip] = {}
        self.notes: list[str] = []

    def skip(self, what: str, reason: str, example: str | None = None, n: int = 1,
             examples: Sequence[str] = ()) -> None:
        s = self._skips.setdefault((what, reason), _Skip(what, reason))
        s.count += n
        for ex in ([example] if example is not None else []) + list(examples):
            if len(s.examples) < MAX_EXAMPLES:
                s.examples.append(ex if len(ex) <= MAX_ECHO else f"{ex[:MAX_ECHO]}... ({len(ex):,} characters)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "format": self.fmt,
            "raw": str(self.raw),
            "images": str(self.images) if self.images else None,
            "params": dict(self.params),
            "kept": dict(self.kept),
            "skipped": [
                {"what": s.what, "reason": s.reason, "count": s.count, "examples": list(s.examples)}
                for s in self._skips.values() if s.count
            ],
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- reading


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def iter_lines(path: Path, encoding: str = "utf-8", errors: str = "strict") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line_without_newline)``, 1-based; gzip is detected by content.

    A truncated or corrupt gzip stream, or bytes that are not ``encoding``, make the
    file unusable: a DatasetError naming the file and the last line read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")
    n = 0
    try:
        with raw, io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="") as f:
            for n, line in enumerate(f, 1):
                yield n, line.rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DatasetError(f"{path}:{n + 1}: corrupt or truncated gzip stream ({e}); re-download the file") from None
    except UnicodeDecodeError as e:
        line = _undecodable_line(path, encoding, errors)
        raise DatasetError(f"{path}:{line or n + 1}: not {encoding} text ({e.reason})") from None


def _undecodable_line(path: Path, encoding: str, errors: str) -> int | None:
    """The 1-based number of the first line that does not decode (the text reader decodes
    ahead in chunks, so the line it had reached is not the bad one).  Error path only."""
    import codecs

    dec = codecs.getincrementaldecoder(encoding)(errors)
    n = 0
    try:
        with (gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")) as f:
            for n, raw in enumerate(f, 1):
                try:
                    dec.decode(raw)
                except UnicodeDecodeError:
                    return n
    except (EOFError, gzip.BadGzipFile, zlib.error):  # also truncated: the bad bytes came first
        return n + 1
    return None


@dataclass
class LineStats:
    """Good/bad line counts of one file, to decide whether the file is usable at all."""

    path: Path
    good: int = 0
    bad: int = 0
    first_bad: str | None = None

    def malformed(self, report: Report, what: str, line: int, why: str) -> None:
        self.bad += 1
        ex = f"{self.path.name}:{line}: {why}"[: 2 * MAX_ECHO]
        if self.first_bad is None:
            self.first_bad = ex
        report.skip(what, "malformed line", ex)

    def check_usable(self) -> None:
        """No valid rows, or more bad lines than good ones: the wrong file, not a few bad rows."""
        if self.good == 0 and self.bad == 0:
            raise DatasetError(f"{self.path}: no data rows")
        if self.good == 0 or self.bad > self.good:
            raise DatasetError(
                f"{self.path}: unusable, {self.bad} of {self.good + self.bad} data lines malformed "
                f"(first: {self.first_bad}); is this the right file/format?"
            )


def find_one(raw: Path, candidates: Sequence[str], what: str) -> Path:
    """The first candidate file name that exists under ``raw``; else an error listing them."""
    for c in candidates:
        if (raw / c).is_file():
            return raw / c
    raise FileNotFoundError(f"{raw}: no {what} found (expected one of: {', '.join(candidates)})")


def not_a_folder(p: Path) -> str:
    """Why ``p`` is not a folder: "does not exist", or what it is ("is a file"...)."""
    if not p.exists():
        return "is a broken symbolic link" if p.is_symlink() else "does not exist"
    if p.is_file():
        return "is a file"
    return "is a FIFO, socket or device"


def require_dir(raw: Path, what: str = "raw dump", flag: str = "--raw") -> Path:
    raw = Path(raw)
    if not raw.exists():
        raise FileNotFoundError(f"{raw}: {what} folder does not exist")
    if not raw.is_dir():
        raise NotADirectoryError(f"{raw}: {not_a_folder(raw)}, not a folder; {flag} takes the folder holding "
                                 f"the {what}")
    return raw


# ----------------------------------------------------------------------------- images


def image_files(folder: Path) -> dict[str, Path]:
    """Map a stem (``<id>``) to its image file, listing the folder once (fast for 100k files)."""
    out: dict[str, Path] = {}
    with os.scandir(folder) as it:
        for e in it:
            stem, ext = os.path.splitext(e.name)
            if ext.lower() in IMAGE_EXTS and e.is_file():
                # prefer .jpg when several extensions exist for one id
                if stem not in out or ext.lower() == ".jpg":
                    out[stem] = Path(e.path)
    return out


def check_image(path: Path) -> str | None:
    """None if the file decodes to an RGB image (by content, whatever its extension), else why not.

    ``verify`` catches broken structure cheaply; the full ``convert('RGB')`` decode
    catches truncated pixel data, which ``verify`` does not see.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if rgb.width == 0 or rgb.height == 0:
                return "empty image"
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(e).__name__}: {e}".strip()
    return None


def safe_name(item_id: str) -> str:
    """A file name for an item id; ids that are not plain names are hashed (never path tricks)."""
    if _SAFE_NAME.fullmatch(item_id) and item_id not in (".", ".."):
        return item_id
    return "id-" + hashlib.sha1(item_id.encode()).hexdigest()[:16]


def place_images(
    sources: dict[str, Path], out: Path, report: Report, what: str, progress: Any = None,
    workers: int | None = None,
) -> dict[str, str]:
    """Validate each source image and copy it to ``out/images/``.

    Returns ``item_id -> relative image path`` for the images that decode; the
    others are skipped and counted with their path, so training never meets them.
    Copies, never hard links: a raw file edited after ``prepare`` must not change
    the prepared dataset behind its fingerprint.  The space the copies need is
    checked before the first one.
    """
    dest_dir = out / "images"
    dest_dir.mkdir(parents=True, exist_ok=True)
    ids = list(sources)
    # all the copies together: a free-space check (the file-size limit is per file: checked by _copy)
    _io.check_free_space(dest_dir / "x", sum(_size(sources[i]) for i in ids), estimate=True)
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as ex:  # PIL decodes without the GIL
        checks = ex.map(lambda i: check_image(sources[i]), ids)
        placed: dict[str, str] = {}
        for iid, err in tracked(zip(ids, checks), progress, "validating images", total=len(ids)):
            src = sources[iid]
            if err is not None:
                report.skip(what, "image cannot be decoded", f"{src}: {err}")
                continue
            rel = f"images/{safe_name(iid)}{src.suffix.lower()}"
            _copy(src, out / rel)
            placed[iid] = rel
    return placed


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _copy(src: Path, dst: Path) -> None:
    try:
        shutil.copyfile(src, dst)  # kernel copy (copy_file_range/sendfile; a reflink where the FS does it)
    except OSError as e:
        err = _io.write_error(dst, e, _size(src))
        if err is None:
            raise
        raise err from None


def resolve_images_dir(raw: Path, images_dir: Path | None, default_sub: str, hint: str) -> Path:
    d = Path(images_dir) if images_dir is not None else raw / default_sub
    if not d.is_dir():
        flag = "--images" if images_dir is not None else f"--images (default {raw / default_sub})"
        err = FileNotFoundError if not d.exists() else NotADirectoryError
        raise err(f"{d}: image folder {not_a_folder(d)}; pass {flag}. {hint}".strip())
    return d
