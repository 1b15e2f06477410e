"""Amazon product data (McAuley et al.): ``toys`` and ``clothing``, as published in 2014 and 2018.

* 2014: ``meta_<Category>.json.gz``, one *Python literal* dict per line (single quotes,
  so it is parsed with :func:`ast.literal_eval`, never ``eval``), category paths under
  ``categories`` as a list of lists, image URL ``imUrl``; reviews
  ``reviews_<Category>_5.json.gz`` (JSON lines: reviewerID, asin, overall, unixReviewTime ...).
* 2018: ``meta_<Category>.json.gz`` as JSON lines with one path under ``category`` and
  ``imageURLHighRes``/``imageURL`` lists; reviews ``<Category>_5.json.gz``.

The items are those of the 5-core review file (as in the paper's Table 2); images are
``--images DIR/<asin>.jpg`` (``raysearch download-images`` fetches them).  Labels follow
the paper's authors: every prefix of a category path is a label, a label with fewer than
``min_items`` items is merged into its parent until nothing changes, and the top-level
category (the whole catalogue, e.g. "Toys & Games") is dropped.
"""
from __future__ import annotations

import ast
import html
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from raysearch.data.adapters.common import (
    LineStats, Report, image_files, iter_lines, place_images, require_dir, resolve_images_dir,
)
from raysearch.data.format import DatasetError, write_dataset
from raysearch.errors import InputError
from raysearch.data.registry import register_dataset
from raysearch.progress import progress_bar, tracked

CATEGORIES = {"toys": "Toys_and_Games", "clothing": "Clothing_Shoes_and_Jewelry"}
SEP = " > "
_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")

Path_ = tuple[str, ...]


# ----------------------------------------------------------------------------- files


def find_files(raw: Path, category: str) -> tuple[str, Path, Path]:
    """(format year, meta file, 5-core reviews file); either year's file names are accepted."""
    def first(names: Iterable[str]) -> Path | None:
        return next((raw / n for n in names if (raw / n).is_file()), None)

    meta = first([f"meta_{category}.json.gz", f"meta_{category}.json"])
    r14 = first([f"reviews_{category}_5.json.gz", f"reviews_{category}_5.json"])
    r18 = first([f"{category}_5.json.gz", f"{category}_5.json"])
    if meta is None or (r14 is None and r18 is None):
        raise FileNotFoundError(
            f"{raw}: Amazon {category} dump not found; expected meta_{category}.json.gz and either "
            f"reviews_{category}_5.json.gz (2014) or {category}_5.json.gz (2018)"
        )
    return ("2014", meta, r14) if r14 is not None else ("2018", meta, r18)  # type: ignore[return-value]


def _parse_meta_line(line: str, year: str) -> Any:
    """2014 lines are Python literals, 2018 lines JSON; each year falls back to the other's parser."""
    parsers = (ast.literal_eval, json.loads) if year == "2014" else (json.loads, ast.literal_eval)
    err: Exception | None = None
    for p in parsers:
        try:
            return p(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as e:
            err = e
    raise ValueError(f"neither a Python literal nor JSON ({type(err).__name__})")


def _clean(name: Any) -> str:
    return html.unescape(str(name)).strip()


def _paths(rec: dict) -> list[Path_]:
    if "categories" in rec:  # 2014: list of lists
        raw = rec["categories"]
        paths = [p for p in raw if isinstance(p, (list, tuple))] if isinstance(raw, (list, tuple)) else []
    else:  # 2018: one path
        raw = rec.get("category")
        paths = [raw] if isinstance(raw, (list, tuple)) else []
    out = []
    for p in paths:
        q = tuple(c for c in (_clean(x) for x in p) if c)
        if q:
            out.append(q)
    return out


def image_urls(rec: dict) -> list[str]:
    """Candidate image URLs of a meta record, best first (2018 high-res, 2018, 2014)."""
    urls: list[str] = []
    for key in ("imageURLHighRes", "imageURL", "imUrl"):
        v = rec.get(key)
        for u in ([v] if isinstance(v, str) else v if isinstance(v, (list, tuple)) else []):
            if isinstance(u, str) and u.startswith(("http://", "https://")) and u not in urls:
                urls.append(u)
    return urls


def read_reviews(path: Path, report: Report, progress: Any = None) -> pd.DataFrame:
    """5-core reviews as interactions; malformed lines and duplicate (user, item) pairs are counted."""
    stats = LineStats(path)
    rows: list[tuple[str, str, float, int]] = []
    seen: set[tuple[str, str]] = set()
    for n, line in tracked(iter_lines(path), progress, f"reading {path.name}"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            stats.malformed(report, "reviews", n, f"invalid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(rec, dict):
            stats.malformed(report, "reviews", n, "not a JSON object")
            continue
        user, asin = rec.get("reviewerID"), rec.get("asin")
        if not isinstance(user, str) or not user or not isinstance(asin, str) or not asin:
            stats.malformed(report, "reviews", n, "missing reviewerID or asin")
            continue
        try:
            rating = float(rec.get("overall", "nan"))
            ts = int(rec.get("unixReviewTime", 0) or 0)
        except (TypeError, ValueError):
            stats.malformed(report, "reviews", n, "overall/unixReviewTime is not a number")
            continue
        stats.good += 1
        if (user, asin) in seen:
            report.skip("reviews", "duplicate review (same reviewer and item)", f"{path.name}:{n}: {user} / {asin}")
            continue
        seen.add((user, asin))
        rows.append((user, asin, rating, ts))
    stats.check_usable()
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def read_meta(path: Path, year: str, wanted: set[str] | None, report: Report | None,
              progress: Any = None) -> dict[str, dict]:
    """asin -> meta record, for ``wanted`` asins only (or all when None).

    Lines whose asin is visibly not wanted are not parsed at all: the 2014 files hold
    millions of Python literals and the 5-core subset is a few percent of them.
    """
    stats = LineStats(path)
    out: dict[str, dict] = {}
    for n, line in tracked(iter_lines(path), progress, f"reading {path.name}"):
        if not line.strip():
            continue
        m = _ASIN.search(line)
        if m is not None and wanted is not None and m.group(1) not in wanted:
            stats.good += 1
            continue
        try:
            rec = _parse_meta_line(line, year)
        except ValueError as e:
            if report is not None:
                stats.malformed(report, "meta records", n, str(e))
            else:
                stats.bad += 1
            continue
        asin = rec.get("asin") if isinstance(rec, dict) else None
        if not isinstance(asin, str) or not asin:
            if report is not None:
                stats.malformed(report, "meta records", n, "no 'asin' field")
            else:
                stats.bad += 1
            continue
        stats.good += 1
        if wanted is not None and asin not in wanted:
            continue
        if asin in out:
            if report is not None:
                report.skip("meta records", "duplicate asin (first kept)", f"{path.name}:{n}: {asin}")
            continue
        out[asin] = rec
    stats.check_usable()
    return out


# ----------------------------------------------------------------------------- labels


def category_labels(paths: dict[str, list[Path_]], min_items: int) -> dict[str, list[str]]:
    """Item -> labels from category paths, the paper authors' way.

    Every prefix of depth >= 2 is a label (depth 1, the catalogue's top level, is
    dropped); a label held by fewer than ``min_items`` items is replaced by its parent,
    repeated until no label is rare.  Labels are the joined prefixes ("A > B > C").
    """
    if min_items < 1:
        raise InputError(f"min_items must be >= 1, got {min_items}")
    labels: dict[str, set[Path_]] = {
        i: {p[:k] for p in ps for k in range(2, len(p) + 1)} for i, ps in paths.items()
    }
    while True:
        counts: dict[Path_, int] = {}
        for ls in labels.values():
            for l in ls:
                counts[l] = counts.get(l, 0) + 1
        rare = {l for l, c in counts.items() if c < min_items}
        if not rare:
            break
        for i, ls in labels.items():
            if ls & rare:
                labels[i] = {(l[:-1] if l in rare else l) for l in ls if not (l in rare and len(l) <= 2)}
    order = lambda l: (len(l), l)  # noqa: E731 - parents before children, deterministic
    return {i: [SEP.join(l) for l in sorted(ls, key=order)] for i, ls in labels.items()}


# ----------------------------------------------------------------------------- adapter


def prepare_amazon(name: str, category: str, raw: Path, out: Path, images_dir: Path | None = None, *,
                   min_items: int = 10, progress: bool = False) -> dict[str, Any]:
    raw = require_dir(Path(raw))
    year, meta_file, reviews_file = find_files(raw, category)
    images = resolve_images_dir(raw, images_dir, "images",
                                f"Fetch them with `raysearch download-images --dataset {name} --raw {raw}`.")
    if min_items < 1:
        raise InputError(f"--min-items must be >= 1, got {min_items}")
    report = Report(name, f"Amazon {year} ({category})", raw, images, {"min_items": min_items})
    with progress_bar(progress) as bar:
        reviews = read_reviews(reviews_file, report, bar)
        asins = list(dict.fromkeys(reviews["item_id"]))
        meta = read_meta(meta_file, year, set(asins), report, bar)
        files = image_files(images)
        sources: dict[str, Path] = {}
        for a in asins:
            if a not in meta:
                report.skip("items", f"not in {meta_file.name}", a)
            elif a not in files:
                report.skip("items", "no image file", str(images / f"{a}.jpg"))
            else:
                sources[a] = files[a]
        placed = place_images(sources, out, report, "items", bar)
    paths = {a: _paths(meta[a]) for a in placed}
    labels = category_labels(paths, min_items)
    kept = [a for a in placed if labels[a]]
    for a in placed:
        if not labels[a]:
            why = "no category path" if not paths[a] else "no label left (rare labels merged, top level dropped)"
            report.skip("items", why, a)
    if not kept:
        raise DatasetError(f"{raw}: no item kept (see the skip counts: images in {images}, categories in {meta_file.name})")
    keep_set = set(kept)
    mask = reviews["item_id"].isin(keep_set)
    if (~mask).any():
        report.skip("reviews", "item skipped (see items)", n=int((~mask).sum()))
    inter = reviews[mask].reset_index(drop=True)
    items = pd.DataFrame({"item_id": kept, "image": [placed[a] for a in kept], "labels": [labels[a] for a in kept]})
    vocab = {l for a in kept for l in labels[a]}
    report.kept.update(items=len(items), interactions=len(inter), users=int(inter["user_id"].nunique()), labels=len(vocab))
    result = report.to_dict()
    write_dataset(out, items, inter, name=name, source=f"Amazon {year} {category}: {raw}",
                  params={"format": year, "category": category, "min_items": min_items}, report=result)
    return result


def urls(raw: Path, category: str, progress: Any = None) -> Iterator[tuple[str, list[str]]]:
    """(asin, candidate URLs) of the 5-core items, for ``download-images``."""
    year, meta_file, reviews_file = find_files(Path(raw), category)
    scratch = Report("", "", Path(raw), None, {})
    asins = set(read_reviews(reviews_file, scratch, progress)["item_id"])
    for asin, rec in read_meta(meta_file, year, asins, None, progress).items():
        yield asin, image_urls(rec)


def _register(name: str, category: str) -> None:
    @register_dataset(
        name, "adapter",
        f"Amazon {category} (2014 or 2018 dump, 5-core reviews) + images/<asin>.jpg; category paths as labels",
        lookalike=f"synthetic-{name}",
    )
    def build(raw: Path, out: Path, images_dir: Path | None = None, *, min_items: int = 10,
              progress: bool = False) -> dict[str, Any]:
        return prepare_amazon(name, category, raw, out, images_dir, min_items=min_items, progress=progress)

    build.__name__ = f"prepare_{name}"


for _name, _cat in CATEGORIES.items():
    _register(_name, _cat)
