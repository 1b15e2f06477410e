"""CLI: ``raysearch prepare`` (table and --json report) and ``raysearch stats --json``, all under --data-root."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from raysearch.cli import app

runner = CliRunner()


def make_ml(raw: Path) -> Path:
    raw.mkdir(parents=True)
    (raw / "movies.csv").write_text(
        'movieId,title,genres\n1,"Heat, The (1995)",Action|Crime\n2,Sabrina (1995),Comedy|Romance\n'
        "3,Lost (1995),Drama\nnot-a-row\n"
    )
    (raw / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,3.0,2\n2,2,5.0,3\n2,3,1.0,4\n3,1,2.0,5\n"
    )
    (raw / "posters").mkdir()
    for mid in (1, 2):
        Image.new("RGB", (6, 9), (mid * 50, 0, 0)).save(raw / "posters" / f"{mid}.jpg")
    return raw


def test_prepare_then_stats(tmp_path):
    raw, root = make_ml(tmp_path / "ml"), str(tmp_path / "home")
    r = runner.invoke(app, ["prepare", "--dataset", "movielens", "--raw", str(raw), "--data-root", root, "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["folder"] == str(tmp_path / "home" / "datasets" / "movielens")
    assert rep["kept"] == {"items": 2, "interactions": 4, "users": 3, "labels": 4}
    reasons = {(s["what"], s["reason"]): s for s in rep["skipped"]}
    assert reasons[("movies", "malformed line")]["examples"] == [
        "movies.csv:5: expected 3 fields (movieId, title, genres), got 1"]
    assert reasons[("movies", "no poster image")]["count"] == 1
    assert reasons[("ratings", "movie skipped (no poster, genre or decodable image)")]["count"] == 1

    r = runner.invoke(app, ["stats", "--dataset", "movielens", "--data-root", root, "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    assert (st["images"], st["interactions"], st["users"], st["labels"]) == (2, 4, 3, 4)
    assert st["avg_pos_labels"] == 2.0

    # a second prepare refuses to clobber; --overwrite replaces; the table view names skips
    r = runner.invoke(app, ["prepare", "-d", "movielens", "--raw", str(raw), "--data-root", root])
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = runner.invoke(app, ["prepare", "-d", "movielens", "--raw", str(raw), "--data-root", root, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "no poster image" in r.stdout and "movies.csv:5" in r.stdout and "skipped" in r.stdout


def test_prepare_errors_are_one_line(tmp_path):
    raw, root = make_ml(tmp_path / "ml"), str(tmp_path / "home")
    cases = [
        (["prepare", "-d", "movielens", "--raw", str(raw), "--min-repins", "3"], "--min-repins does not apply to dataset 'movielens'"),
        (["prepare", "-d", "nosuch", "--raw", str(raw)], "unknown dataset 'nosuch'"),
        (["prepare", "-d", "toys", "--raw", str(raw)], "Amazon Toys_and_Games dump not found"),
        (["prepare", "-d", "pinterest", "--raw", str(tmp_path / "missing")], "folder does not exist"),
        (["stats", "-d", "toys"], "raysearch prepare --dataset toys"),
    ]
    for args, msg in cases:
        r = runner.invoke(app, [*args, "--data-root", root])
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output, (args, r.output)
    (raw / "ratings.csv").write_text("wrong,header\n")
    r = runner.invoke(app, ["prepare", "-d", "movielens", "--raw", str(raw), "--data-root", root])
    assert r.exit_code == 2 and "ratings.csv:1: expected header" in r.output
