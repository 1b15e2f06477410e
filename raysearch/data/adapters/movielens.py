"""MovieLens with posters: genres are the labels, every rating is an interaction.

Two public layouts are read as published:

* ML-10M / ML-1M: ``movies.dat`` (``MovieID::Title::Genres``) and ``ratings.dat``
  (``UserID::MovieID::Rating::Timestamp``), ``::``-separated, latin-1;
* ml-latest / ml-latest-small: ``movies.csv`` (``movieId,title,genres``, titles quoted
  when they contain commas) and ``ratings.csv`` (``userId,movieId,rating,timestamp``), UTF-8.

Posters are not part of the dumps: ``posters/<movieId>.jpg`` under the raw folder, or
``--images DIR/<movieId>.jpg``.  Movies without a (decodable) poster or without a genre
are skipped, and their ratings dropped; all of it is counted in the report.
"""
from __future__ import annotations

import csv
import math
from array import array
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from raysearch.data.adapters.common import (
    LineStats, Report, image_files, iter_lines, not_a_folder, place_images, require_dir,
)
from raysearch.data.format import DatasetError, write_dataset
from raysearch.data.registry import register_dataset
from raysearch.errors import short
from raysearch.progress import progress_bar, tracked

NO_GENRE = "(no genres listed)"
MOVIES_HEADER = ["movieId", "title", "genres"]
RATINGS_HEADER = ["userId", "movieId", "rating", "timestamp"]


def _detect(raw: Path) -> tuple[str, Path, Path]:
    if (raw / "movies.csv").is_file() and (raw / "ratings.csv").is_file():
        return "ml-latest (CSV)", raw / "movies.csv", raw / "ratings.csv"
    if (raw / "movies.dat").is_file() and (raw / "ratings.dat").is_file():
        return "ML-10M/ML-1M (.dat)", raw / "movies.dat", raw / "ratings.dat"
    raise FileNotFoundError(
        f"{raw}: not a MovieLens dump (expected movies.csv + ratings.csv, or movies.dat + ratings.dat)"
    )


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a MovieLens file; the header of a CSV is checked and skipped."""
    if path.suffix == ".dat":
        for n, line in iter_lines(path, encoding="latin-1"):
            if line.strip():
                yield n, line.split("::")
        return
    header = MOVIES_HEADER if path.name.startswith("movies") else RATINGS_HEADER
    lines = iter_lines(path, encoding="utf-8-sig")
    reader = csv.reader(line for _, line in lines)
    try:
        first = next(reader)
    except StopIteration:
        raise DatasetError(f"{path}: empty file (expected header {','.join(header)})") from None
    if [f.strip() for f in first] != header:
        raise DatasetError(f"{path}:1: expected header {','.join(header)!r}, got {short(','.join(first))}")
    try:
        for row in reader:
            if row:
                yield reader.line_num, row
    except csv.Error as e:
        raise DatasetError(f"{path}:{reader.line_num}: unreadable CSV ({e})") from None


def _read_movies(path: Path, report: Report) -> dict[int, tuple[int, list[str]]]:
    """movieId -> (line, genres without NO_GENRE)."""
    stats = LineStats(path)
    movies: dict[int, tuple[int, list[str]]] = {}
    dat = path.suffix == ".dat"
    for n, f in _rows(path):
        if (dat and len(f) < 3) or (not dat and len(f) != 3):
            stats.malformed(report, "movies", n, f"expected 3 fields (movieId, title, genres), got {len(f)}")
            continue
        try:
            mid = int(f[0])
        except ValueError:
            stats.malformed(report, "movies", n, f"movieId {short(f[0])} is not an integer")
            continue
        if mid in movies:
            stats.good += 1
            report.skip("movies", "duplicate movieId (first kept)", f"{path.name}:{n}: movieId {mid} (first at line {movies[mid][0]})")
            continue
        stats.good += 1
        genres = [g.strip() for g in f[-1].split("|") if g.strip() and g.strip() != NO_GENRE]
        movies[mid] = (n, list(dict.fromkeys(genres)))
    stats.check_usable()
    return movies


def _read_ratings(path: Path, report: Report, progress: Any, known: set[int]) -> tuple[np.ndarray, ...]:
    """Valid ratings of movies in the movies file, as arrays; the rest counted with line numbers.

    Exact duplicate rows (same user, movie, rating and timestamp) are one rating written
    twice: the first is kept, the others counted.
    """
    stats = LineStats(path)
    users, movies, ts, lines = array("q"), array("q"), array("q"), array("q")
    ratings = array("d")
    for n, f in tracked(_rows(path), progress, f"reading {path.name}"):
        if len(f) != 4:
            stats.malformed(report, "ratings", n, f"expected 4 fields (userId, movieId, rating, timestamp), got {len(f)}")
            continue
        try:
            u, m, r, t = int(f[0]), int(f[1]), float(f[2]), int(f[3])
        except ValueError as e:
            stats.malformed(report, "ratings", n, f"bad number ({e})")
            continue
        if not math.isfinite(r):
            stats.malformed(report, "ratings", n, f"rating {short(f[2])} is not a finite number")
            continue
        stats.good += 1
        if m not in known:
            report.skip("ratings", "unknown movieId (not in the movies file)", f"{path.name}:{n}: movieId {m}")
            continue
        users.append(u), movies.append(m), ratings.append(r), ts.append(t), lines.append(n)
    stats.check_usable()
    cols = (np.frombuffer(users, dtype=np.int64), np.frombuffer(movies, dtype=np.int64),
            np.frombuffer(ratings, dtype=np.float64), np.frombuffer(ts, dtype=np.int64))
    dup = pd.DataFrame(dict(zip("umrt", cols))).duplicated(keep="first").to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        report.skip("ratings", "exact duplicate row (first kept)", n=len(rows), examples=[
            f"{path.name}:{lines[i]}: user {cols[0][i]}, movieId {cols[1][i]}" for i in rows[:5]])
        cols = tuple(c[~dup] for c in cols)
    return cols


@register_dataset(
    "movielens", "adapter",
    "MovieLens (ML-10M/ML-1M .dat or ml-latest .csv) + posters/<movieId>.jpg; genres as labels",
    lookalike="synthetic-movielens",
)
def prepare_movielens(raw: Path, out: Path, images_dir: Path | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Read a MovieLens dump plus posters and write the canonical folder; returns the report."""
    raw = require_dir(Path(raw))
    fmt, movies_file, ratings_file = _detect(raw)
    posters = Path(images_dir) if images_dir is not None else raw / "posters"
    if not posters.is_dir():
        raise (FileNotFoundError if not posters.exists() else NotADirectoryError)(
            f"{posters}: poster folder {not_a_folder(posters)} (MovieLens dumps have no images: put "
            f"<movieId>.jpg files in {raw / 'posters'} or pass --images DIR)"
        )
    report = Report("movielens", fmt, raw, posters, {})
    with progress_bar(progress) as bar:
        movies = _read_movies(movies_file, report)
        files = image_files(posters)
        sources: dict[str, Path] = {}
        labels: dict[str, list[str]] = {}
        for mid, (n, genres) in movies.items():
            if not genres:
                report.skip("movies", "no genre (none or only '(no genres listed)')", f"{movies_file.name}:{n}: movieId {mid}")
                continue
            src = files.get(str(mid))
            if src is None:
                report.skip("movies", "no poster image", f"{movies_file.name}:{n}: movieId {mid}")
                continue
            sources[str(mid)], labels[str(mid)] = src, genres
        orphans = len(set(files) - {str(m) for m in movies})
        if orphans:
            report.notes.append(f"{orphans} poster files name no movie of {movies_file.name} (ignored)")
        placed = place_images(sources, out, report, "movies", bar)
        u, m, r, t = _read_ratings(ratings_file, report, bar, set(movies))

    kept_ids = np.array(sorted(int(k) for k in placed), dtype=np.int64)
    keep = np.isin(m, kept_ids)
    n_dropped = int((~keep).sum())
    if n_dropped:
        report.skip("ratings", "movie skipped (no poster, genre or decodable image)", n=n_dropped)

    order = [mid for mid in movies if str(mid) in placed]  # movies-file order
    items = pd.DataFrame({
        "item_id": [str(mid) for mid in order],
        "image": [placed[str(mid)] for mid in order],
        "labels": [labels[str(mid)] for mid in order],
    })
    inter = pd.DataFrame({
        "user_id": u[keep].astype(str), "item_id": m[keep].astype(str),
        "rating": r[keep], "timestamp": t[keep],
    })
    if items.empty:
        raise DatasetError(f"{raw}: no movie kept (no poster matches a movie with genres in {posters})")
    vocab_size = len({g for ls in items["labels"] for g in ls})
    report.kept.update(items=len(items), interactions=len(inter), users=int(inter["user_id"].nunique()), labels=vocab_size)
    result = report.to_dict()
    write_dataset(out, items, inter, name="movielens", source=f"movielens {fmt}: {raw}",
                  params={"format": fmt}, report=result)
    return result
