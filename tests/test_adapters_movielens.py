"""MovieLens adapter on tiny dumps in both exact public layouts (ml-latest CSV, ML-10M/1M .dat)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raysearch.data import DatasetError, dataset_stats, load_dataset, load_folder, prepare_dataset
from raysearch.data.adapters.common import check_image

SHARED_ML = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens-posters"


def write_image(path: Path, color: tuple[int, int, int], fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 16), color).save(path, format=fmt)


def write_corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")


MOVIES_CSV = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,"American President, The (1995)",Comedy|Drama|Romance
3,No Genre Film (2015),(no genres listed)
4,Poster-less (1996),Drama
x5,Broken Id (1997),Drama
6,Corrupt Poster (1998),Horror
7,"Seven, PNG poster (1999)",Horror|Thriller
"""

RATINGS_CSV = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,3.5,964981247
1,3,4.0,964982224
2,1,5.0,964983815
2,4,2.0,964982931
2,6,1.0,964982400
2,7,4.5,964982401
3,7,3.0,964982402
3,99,3.0,964982403
3,1,oops,964982404
4,2
"""


def make_csv_dump(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "movies.csv").write_text(MOVIES_CSV, encoding="utf-8")
    (root / "ratings.csv").write_text(RATINGS_CSV, encoding="utf-8")
    write_image(root / "posters" / "1.jpg", (200, 10, 10))
    write_image(root / "posters" / "2.jpg", (10, 200, 10))
    write_image(root / "posters" / "3.jpg", (10, 10, 200))  # no genre: skipped anyway
    write_corrupt(root / "posters" / "6.jpg")
    write_image(root / "posters" / "7.jpg", (90, 90, 90), fmt="PNG")  # PNG named .jpg
    write_image(root / "posters" / "1000.jpg", (1, 2, 3))  # no such movie
    return root


def skips(report: dict) -> dict[tuple[str, str], dict]:
    return {(s["what"], s["reason"]): s for s in report["skipped"]}


def test_ml_latest_csv(tmp_path):
    raw = make_csv_dump(tmp_path / "raw")
    folder, report = prepare_dataset("movielens", raw, data_root=tmp_path / "home")
    ds = load_folder(folder, check_images=True)

    assert list(ds.items["item_id"]) == ["1", "2", "7"]
    assert ds.items.set_index("item_id").loc["2", "labels"] == ["Comedy", "Drama", "Romance"]
    assert "(no genres listed)" not in ds.label_names
    assert sorted(ds.label_names) == sorted(
        {"Adventure", "Animation", "Children", "Comedy", "Fantasy", "Drama", "Romance", "Horror", "Thriller"})
    # vocabulary: most frequent first (Comedy: 2 items)
    assert ds.label_names[0] == "Comedy"
    assert list(ds.interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    got = sorted(zip(ds.interactions["user_id"], ds.interactions["item_id"], ds.interactions["rating"]))
    assert got == [("1", "1", 4.0), ("1", "2", 3.5), ("2", "1", 5.0), ("2", "7", 4.5), ("3", "7", 3.0)]
    assert ds.interactions["timestamp"].dtype == np.int64
    # images copied/linked inside the folder, relative paths, all decodable (PNG named .jpg too)
    for i in range(ds.n_items):
        assert not os.path.isabs(ds.items["image"].iat[i]) and ds.items["image"].iat[i].startswith("images/")
        assert check_image(ds.image_path(i)) is None

    s = skips(report)
    assert report["kept"] == {"items": 3, "interactions": 5, "users": 3, "labels": 9}
    assert s[("movies", "malformed line")]["count"] == 1
    assert s[("movies", "malformed line")]["examples"][0].startswith("movies.csv:6: movieId 'x5'")
    assert s[("movies", "no genre (none or only '(no genres listed)')")]["count"] == 1
    assert s[("movies", "no poster image")]["examples"] == ["movies.csv:5: movieId 4"]
    bad_img = s[("movies", "image cannot be decoded")]
    assert bad_img["count"] == 1 and "6.jpg" in bad_img["examples"][0]
    assert s[("ratings", "malformed line")]["count"] == 2
    assert [e.split(":")[:2] for e in s[("ratings", "malformed line")]["examples"]] == [
        ["ratings.csv", "11"], ["ratings.csv", "12"]]
    assert s[("ratings", "unknown movieId (not in the movies file)")]["examples"] == ["ratings.csv:10: movieId 99"]
    assert s[("ratings", "movie skipped (no poster, genre or decodable image)")]["count"] == 3
    assert any("1 poster files name no movie" in n for n in report["notes"])
    assert ds.meta["report"]["kept"] == report["kept"]  # stored in meta.json

    st = dataset_stats(load_dataset("movielens", tmp_path / "home"))
    assert (st["images"], st["interactions"], st["users"], st["labels"]) == (3, 5, 3, 9)


def test_ml10m_dat_latin1_and_images_option(tmp_path):
    raw = tmp_path / "ml-10M100K"
    raw.mkdir()
    (raw / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Adventure|Animation\n"
        "2::Misérables, Les (1995)::Drama|Musical\n"
        "3::Broken line\n"
        "\n"
        "4::Only Missing (2001)::(no genres listed)\n".encode("latin-1")
    )
    (raw / "ratings.dat").write_text("1::1::5::838985046\n1::2::4.5::838983525\n2::2::3::838983421\n2::1::x::1\n")
    images = tmp_path / "my-posters"
    write_image(images / "1.jpg", (1, 1, 1))
    write_image(images / "2.jpg", (2, 2, 2))
    folder, report = prepare_dataset("movielens", raw, images=images, data_root=tmp_path / "home")
    ds = load_folder(folder, check_images=True)
    assert report["format"] == "ML-10M/ML-1M (.dat)"
    assert list(ds.items["item_id"]) == ["1", "2"]
    assert ds.items["labels"].iat[1] == ["Drama", "Musical"]
    assert len(ds.interactions) == 3 and ds.interactions["rating"].tolist() == [5.0, 4.5, 3.0]
    s = skips(report)
    assert s[("movies", "malformed line")]["examples"] == [
        "movies.dat:3: expected 3 fields (movieId, title, genres), got 2"]
    assert s[("ratings", "malformed line")]["examples"][0].startswith("ratings.dat:4: bad number")
    assert s[("movies", "no genre (none or only '(no genres listed)')")]["examples"] == ["movies.dat:5: movieId 4"]


def test_errors_name_file_and_line(tmp_path):
    raw = make_csv_dump(tmp_path / "raw")
    home = tmp_path / "home"
    # wrong header: the file is unusable
    (raw / "ratings.csv").write_text("user,item,score\n1,1,4\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv:1: expected header 'userId,movieId,rating,timestamp'"):
        prepare_dataset("movielens", raw, data_root=home)
    # mostly malformed rows: the wrong file, an error naming the first bad line
    (raw / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1;1;4;5\n2;2;3;4\n1,1,4.0,1\n")
    with pytest.raises(DatasetError, match=r"unusable, 2 of 3 data lines malformed \(first: ratings\.csv:2:"):
        prepare_dataset("movielens", raw, data_root=home)
    assert not (home / "datasets" / "movielens").exists()  # nothing half-written
    with pytest.raises(FileNotFoundError, match="not a MovieLens dump"):
        prepare_dataset("movielens", tmp_path, data_root=home)
    with pytest.raises(FileNotFoundError, match="poster folder does not exist"):
        prepare_dataset("movielens", raw, images=tmp_path / "nope", data_root=home)


def test_overwrite_guard(tmp_path):
    raw = make_csv_dump(tmp_path / "raw")
    home = tmp_path / "home"
    prepare_dataset("movielens", raw, data_root=home)
    with pytest.raises(DatasetError, match="--overwrite"):
        prepare_dataset("movielens", raw, data_root=home)
    (raw / "posters" / "2.jpg").unlink()
    folder, report = prepare_dataset("movielens", raw, data_root=home, overwrite=True)
    assert report["kept"]["items"] == 2 and load_folder(folder).n_items == 2


def test_not_prepared_names_lookalike(tmp_path):
    with pytest.raises(DatasetError, match="raysearch prepare --dataset movielens.*synthetic-movielens"):
        load_dataset("movielens", tmp_path)


@pytest.mark.real_data
def test_real_movielens_posters(tmp_path):
    folder, report = prepare_dataset("movielens", SHARED_ML, data_root=tmp_path)
    st = dataset_stats(load_folder(folder))
    assert (st["images"], st["interactions"], st["users"], st["labels"]) == (2947, 58498, 610, 19)
    assert report["kept"] == {"items": 2947, "interactions": 58498, "users": 610, "labels": 19}
