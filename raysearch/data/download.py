"""``raysearch download-images``: fetch the images a raw dump only names by URL.

Amazon meta records carry ``imUrl`` (2014) or ``imageURLHighRes``/``imageURL`` (2018);
Pinterest has ``ImageDatasetImagesURLs.gz``.  Only the items ``prepare`` would use are
fetched (the 5-core items; pins with enough repins).  Downloads run in a thread pool,
retry transient failures (timeouts, 5xx, 429) with exponential backoff, write each file
atomically after checking that it decodes, and skip files already present and valid, so
an interrupted run resumes where it stopped.  What still fails is counted and listed
in ``<out>/download_failures.tsv`` (item id, url, reason).
"""
from __future__ import annotations

import math
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from raysearch import _io
from raysearch.data.adapters.common import check_image, safe_name
from raysearch.errors import InputError
from raysearch.progress import progress_bar, tracked

FAILURES_FILE = "download_failures.tsv"
USER_AGENT = "raysearch-download-images/0.1 (+https://github.com/)"


@dataclass(frozen=True)
class DownloadConfig:
    """How hard to try: concurrency, per-request timeout, retries and their backoff."""

    workers: int = 8
    retries: int = 3          # extra attempts after the first, for transient failures
    backoff_s: float = 1.0    # wait before retry k is backoff_s * 2**(k-1)
    timeout_s: float = 30.0
    min_repins: int = 10      # pinterest: fetch only pins prepare would keep

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.backoff_s, self.timeout_s)):
            raise InputError("download: --backoff and --timeout must be finite numbers")
        if self.workers < 1 or self.retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise InputError("download: workers >= 1, retries >= 0, backoff >= 0 and timeout > 0 are required")


def image_urls(dataset: str, raw: str | os.PathLike, cfg: DownloadConfig, progress: Any = None
               ) -> Iterator[tuple[str, list[str]]]:
    """(item id, candidate URLs best first) for a dataset's raw dump."""
    from raysearch.data.adapters import amazon, pinterest

    if dataset in amazon.CATEGORIES:
        return amazon.urls(Path(raw), amazon.CATEGORIES[dataset], progress)
    if dataset == "pinterest":
        return pinterest.urls(Path(raw), cfg.min_repins, progress)
    if dataset == "movielens":
        raise InputError("movielens dumps carry no image URLs: put posters/<movieId>.jpg next to the dump")
    raise InputError(f"download-images knows no URL source for dataset {dataset!r} (choose: clothing, pinterest, toys)")


class _Permanent(Exception):
    """A failure retrying cannot fix (404, 403, an image that does not decode...)."""


def _fetch(url: str, cfg: DownloadConfig) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=cfg.timeout_s) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        if e.code in (408, 429) or e.code >= 500:
            raise  # transient
        raise _Permanent(f"HTTP {e.code}") from None


def _download_one(urls: list[str], dest: Path, cfg: DownloadConfig) -> tuple[str, str, str]:
    """(status 'present' | 'downloaded' | 'failed', last url, reason) for one item;
    tries each candidate URL, retrying transient errors with backoff."""
    if dest.is_file() and check_image(dest) is None:
        return "present", "", ""
    if not urls:
        return "failed", "", "no image URL in the dump"
    reason, last = "", ""
    for url in urls:
        for attempt in range(cfg.retries + 1):
            if attempt:
                time.sleep(cfg.backoff_s * 2 ** (attempt - 1))
            last = url
            try:
                data = _fetch(url, cfg)
                with _io.atomic_path(dest, needed=len(data)) as tmp:
                    tmp.write_bytes(data)
                    err = check_image(tmp)
                    if err is not None:  # leaving the block by an exception removes the temp file
                        raise _Permanent(f"not a decodable image ({err})")
                return "downloaded", url, ""
            except _Permanent as e:
                reason = str(e)
                break  # next URL
            except _io.WriteError:
                raise  # no retry fills a full disk or lifts a file-size limit: stop the whole download, one line
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = f"{getattr(e, 'reason', None) or e} (after {attempt + 1} attempts)"
    return "failed", last, reason


def download_images(dataset: str, raw: str | os.PathLike, out: str | os.PathLike,
                    cfg: DownloadConfig = DownloadConfig(), progress: bool = False) -> dict[str, Any]:
    """Fetch ``<out>/<item_id>.jpg`` for every item of the dump; returns counts and the failures file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _io.clean_stale(out)  # partial files of a killed run
    with progress_bar(progress) as bar:
        todo = list(image_urls(dataset, raw, cfg, bar))
        counts = {"items": len(todo), "present": 0, "downloaded": 0, "failed": 0}
        failures: list[tuple[str, str, str]] = []
        with ThreadPoolExecutor(max_workers=cfg.workers) as ex:
            futs = ex.map(lambda t: (t[0], *_download_one(t[1], out / f"{safe_name(t[0])}.jpg", cfg)), todo)
            for item_id, status, url, reason in tracked(futs, bar, "downloading images", total=len(todo)):
                counts[status] += 1
                if status == "failed":
                    failures.append((item_id, url, reason.replace("\t", " ").replace("\n", " ")))
    fail_path = out / FAILURES_FILE
    if failures:
        _io.write_text(fail_path, "item_id\turl\treason\n" + "".join(f"{i}\t{u}\t{r}\n" for i, u, r in sorted(failures)))
    elif fail_path.exists():
        fail_path.unlink()  # a resumed run that fixed everything leaves no stale list
    return {"dataset": dataset, "out": str(out), **counts,
            "failures_file": str(fail_path) if failures else None}
