"""Pinterest social-curation dataset (Zhong et al., the paper's reference [65]).

Files, ``|``-separated as published:

* ``ImageDatasetRepinactivity.gz``: ``pin_id|user_id|category|board_id``, one repin per line;
* ``ImageDatasetImagesURLs.gz``: ``pin_id|url`` (only ``download-images`` needs it);
* ``ImageCategoryID.txt``: ``name|label_id``.

The ``category`` of a repin is a label id of ``ImageCategoryID.txt`` (a category name
is accepted too).  One label per pin: the category its repins use most (ties: lowest
label id), since users may file one pin under different categories.  Interactions are
distinct (user, pin) repins; pins with more than ``min_repins`` of them are kept, as in
the paper.  Images are ``--images DIR/<pin_id>.jpg``.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from raysearch.data.adapters.common import (
    LineStats, Report, find_one, image_files, iter_lines, place_images, require_dir, resolve_images_dir,
)
from raysearch.data.format import DatasetError, write_dataset
from raysearch.errors import InputError, short
from raysearch.data.registry import register_dataset
from raysearch.progress import progress_bar, tracked

REPINS = ("ImageDatasetRepinactivity.gz", "ImageDatasetRepinactivity")
URLS = ("ImageDatasetImagesURLs.gz", "ImageDatasetImagesURLs")
CATEGORIES = ("ImageCategoryID.txt",)


def read_categories(path: Path, report: Report) -> tuple[dict[str, str], dict[str, int]]:
    """(label_id -> name, name -> rank) from ``name|label_id`` lines."""
    stats = LineStats(path)
    by_id: dict[str, str] = {}
    for n, line in iter_lines(path, errors="replace"):
        if not line.strip():
            continue
        parts = line.rsplit("|", 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            stats.malformed(report, "categories", n, "expected name|label_id")
            continue
        name, lid = parts[0].strip(), parts[1].strip()
        if lid in by_id:
            stats.malformed(report, "categories", n, f"label_id {short(lid)} repeated (first: {short(by_id[lid])})")
            continue
        stats.good += 1
        by_id[lid] = name
    stats.check_usable()
    rank = {name: i for i, (_, name) in enumerate(sorted(by_id.items(), key=lambda kv: (_int_or(kv[0]), kv[0])))}
    return by_id, rank


def _int_or(s: str) -> float:
    try:
        return float(int(s))
    except ValueError:
        return float("inf")


def read_repins(path: Path, categories: dict[str, str], report: Report, progress: Any = None
                ) -> tuple[dict[str, dict[str, int]], dict[str, Counter]]:
    """pin -> {user: first line} (distinct repins) and pin -> Counter of category names."""
    stats = LineStats(path)
    names = set(categories.values())
    users: dict[str, dict[str, int]] = defaultdict(dict)
    cats: dict[str, Counter] = defaultdict(Counter)
    for n, line in tracked(iter_lines(path, errors="replace"), progress, f"reading {path.name}"):
        if not line.strip():
            continue
        f = line.split("|")
        if len(f) != 4:
            stats.malformed(report, "repins", n, f"expected 4 fields pin_id|user_id|category|board_id, got {len(f)}")
            continue
        pin, user, cat = f[0].strip(), f[1].strip(), f[2].strip()
        if not pin or not user:
            stats.malformed(report, "repins", n, "empty pin_id or user_id")
            continue
        name = categories.get(cat) or (cat if cat in names else None)
        if name is None:
            stats.malformed(report, "repins", n, f"unknown category {short(cat)} (not in ImageCategoryID.txt)")
            continue
        stats.good += 1
        cats[pin][name] += 1
        if user in users[pin]:
            report.skip("repins", "repeated (user, pin) repin (counted once)", f"{path.name}:{n}: user {user}, pin {pin}")
            continue
        users[pin][user] = n
    stats.check_usable()
    return users, cats


def _label(c: Counter, rank: dict[str, int]) -> str:
    return min(c, key=lambda name: (-c[name], rank.get(name, 1 << 30), name))


@register_dataset(
    "pinterest", "adapter",
    "Pinterest social-curation (repin activity, categories) + images/<pin_id>.jpg; one category per pin",
    lookalike="synthetic-pinterest",
)
def prepare_pinterest(raw: Path, out: Path, images_dir: Path | None = None, *, min_repins: int = 10,
                      progress: bool = False) -> dict[str, Any]:
    """Read the social-curation dump plus images and write the canonical folder; returns the report."""
    raw = require_dir(Path(raw))
    repins_file = find_one(raw, REPINS, "repin activity file")
    cat_file = find_one(raw, CATEGORIES, "category file")
    images = resolve_images_dir(raw, images_dir, "images",
                                f"Fetch them with `raysearch download-images --dataset pinterest --raw {raw}`.")
    if min_repins < 0:
        raise InputError(f"--min-repins must be >= 0, got {min_repins}")
    report = Report("pinterest", "social-curation", raw, images, {"min_repins": min_repins})
    with progress_bar(progress) as bar:
        by_id, rank = read_categories(cat_file, report)
        users, cats = read_repins(repins_file, by_id, report, bar)
        files = image_files(images)
        sources: dict[str, Path] = {}
        for pin, us in users.items():
            if len(us) <= min_repins:
                report.skip("pins", f"{min_repins} repins or fewer", f"pin {pin}: {len(us)}")
            elif pin not in files:
                report.skip("pins", "no image file", str(images / f"{pin}.jpg"))
            else:
                sources[pin] = files[pin]
        placed = place_images(sources, out, report, "pins", bar)
    if not placed:
        raise DatasetError(f"{raw}: no pin kept (see the skip counts: more than {min_repins} repins and an image in {images})")
    disagree = sum(1 for p in placed if len(cats[p]) > 1)
    if disagree:
        report.notes.append(f"{disagree} pins were repinned under several categories: the most used one is the label")
    kept = sorted(placed, key=lambda p: (_int_or(p), p))
    labels = {p: _label(cats[p], rank) for p in kept}
    dropped = sum(len(us) for p, us in users.items() if p not in placed)
    if dropped:
        report.skip("repins", "pin skipped (see pins)", n=dropped)
    inter = pd.DataFrame(
        [(u, p) for p in kept for u in users[p]], columns=["user_id", "item_id"]
    )
    items = pd.DataFrame({"item_id": kept, "image": [placed[p] for p in kept], "labels": [[labels[p]] for p in kept]})
    vocab = [name for name, _ in sorted(rank.items(), key=lambda kv: kv[1]) if name in set(labels.values())]
    report.kept.update(items=len(items), interactions=len(inter), users=int(inter["user_id"].nunique()), labels=len(vocab))
    result = report.to_dict()
    write_dataset(out, items, inter, name="pinterest", source=f"Pinterest social-curation: {raw}",
                  params={"min_repins": min_repins}, report=result)
    return result


def urls(raw: Path, min_repins: int = 10, progress: Any = None) -> Iterator[tuple[str, list[str]]]:
    """(pin_id, [url]) from the URL file, restricted to pins ``prepare`` would keep when the
    repin and category files are present (else every pin of the URL file)."""
    raw = Path(raw)
    url_file = find_one(raw, URLS, "image URL file")
    wanted: set[str] | None = None
    try:
        repins_file, cat_file = find_one(raw, REPINS, "repins"), find_one(raw, CATEGORIES, "categories")
    except FileNotFoundError:
        pass
    else:
        scratch = Report("", "", raw, None, {})
        by_id, _ = read_categories(cat_file, scratch)
        users, _ = read_repins(repins_file, by_id, scratch, progress)
        wanted = {p for p, us in users.items() if len(us) > min_repins}
    seen: set[str] = set()
    for _, line in iter_lines(url_file, errors="replace"):
        parts = line.split("|", 1)
        if len(parts) != 2:
            continue
        pin, url = parts[0].strip(), parts[1].strip()
        if pin and url and pin not in seen and (wanted is None or pin in wanted):
            seen.add(pin)
            yield pin, [url]
