"""Amazon adapters (toys, clothing) on tiny dumps in the exact 2014 and 2018 formats."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from PIL import Image

from raysearch.data import DatasetError, load_folder, prepare_dataset
from raysearch.data.adapters.amazon import category_labels

TG = "Toys & Games"


def write_image(path: Path, color: tuple[int, int, int], fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), color).save(path, format=fmt)


def gz_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def meta14(asin: str, paths: list[list[str]]) -> str:
    """A 2014 meta line: a Python literal (single quotes), as in meta_<Category>.json.gz."""
    return repr({"asin": asin, "imUrl": f"http://ecx.images-amazon.com/images/I/{asin}.jpg",
                 "categories": paths, "title": "Kid's toy", "salesRank": {"Toys & Games": 5}})


def review(user: str, asin: str, overall: float = 5.0) -> str:
    return json.dumps({"reviewerID": user, "asin": asin, "reviewerName": "x", "helpful": [0, 0],
                       "reviewText": "ok", "overall": overall, "summary": "s",
                       "unixReviewTime": 1370304000, "reviewTime": "06 4, 2013"})


def make_2014_toys(raw: Path) -> Path:
    puzzles, jigsaw = [TG, "Puzzles"], [TG, "Puzzles", "Jigsaw Puzzles"]
    dolls, rare = [TG, "Dolls"], [TG, "Dolls", "Rare Doll Kind"]
    meta = [
        meta14("A1", [jigsaw]),
        meta14("A2", [jigsaw, ["Baby", "Toys"]]),
        meta14("A3", [puzzles]),
        "{'asin': 'A4', 'categories': [[" + repr(TG) + ", 'Dolls'",  # malformed (truncated literal)
        meta14("A5", [rare]),
        meta14("A6", [dolls]),
        meta14("A7", [[TG]]),       # only the top level: no label left
        meta14("A8", [jigsaw]),     # image missing
        meta14("A9", [jigsaw]),     # corrupt image
        meta14("Z0", [jigsaw]),     # not in the 5-core reviews: not an item
        "{'asin': 'A10', 'categories': [[__import__('os').system('echo pwned')]]}",  # never evaluated
    ]
    gz_lines(raw / "meta_Toys_and_Games.json.gz", meta)
    reviews = [review(u, a) for u, a in [
        ("U1", "A1"), ("U2", "A1"), ("U1", "A2"), ("U3", "A3"), ("U2", "A5"), ("U3", "A6"),
        ("U1", "A7"), ("U2", "A8"), ("U3", "A9"), ("U4", "A4"), ("U4", "A10"),
    ]]
    reviews.insert(3, '{"reviewerID": "U9", "asin": ')   # truncated JSON line -> line 4
    reviews.append('{"asin": "A1", "overall": 3.0}')      # no reviewerID
    gz_lines(raw / "reviews_Toys_and_Games_5.json.gz", reviews)
    for i, a in enumerate(["A1", "A2", "A3", "A5", "A6", "A7", "A10"]):
        write_image(raw / "images" / f"{a}.jpg", (20 * i, 0, 0), fmt="PNG" if a == "A2" else "JPEG")
    (raw / "images" / "A9.jpg").write_bytes(b"GIF89a-not-really")
    return raw


def skips(report: dict) -> dict[tuple[str, str], dict]:
    return {(s["what"], s["reason"]): s for s in report["skipped"]}


def test_category_labels_prefixes_merge_and_top_level_dropped():
    paths = {
        "a": [("T", "P", "J")], "b": [("T", "P", "J")], "c": [("T", "P")],
        "d": [("T", "D", "R")], "e": [("T", "D")], "f": [("T",)], "g": [("T", "X", "Y", "Z")],
    }
    got = category_labels(paths, min_items=2)
    assert got["a"] == ["T > P", "T > P > J"]
    assert got["c"] == ["T > P"]
    assert got["d"] == ["T > D"]          # T>D>R (1 item) merged into its parent
    assert got["f"] == []                 # the top level alone is no label
    assert got["g"] == []                 # X>Y>Z, X>Y, X all rare: merged up to the (dropped) top level
    assert category_labels(paths, min_items=1)["g"] == ["T > X", "T > X > Y", "T > X > Y > Z"]
    with pytest.raises(ValueError, match="min_items"):
        category_labels(paths, 0)


def test_toys_2014(tmp_path, capfd):
    raw = make_2014_toys(tmp_path / "raw")
    folder, report = prepare_dataset("toys", raw, data_root=tmp_path / "home", min_items=2)
    ds = load_folder(folder, check_images=True)
    labels = dict(zip(ds.items["item_id"], ds.items["labels"]))
    assert list(ds.items["item_id"]) == ["A1", "A2", "A3", "A5", "A6"]
    assert labels["A1"] == [f"{TG} > Puzzles", f"{TG} > Puzzles > Jigsaw Puzzles"]
    assert labels["A2"] == [f"{TG} > Puzzles", f"{TG} > Puzzles > Jigsaw Puzzles"]  # Baby > Toys: 1 item, gone
    assert labels["A5"] == [f"{TG} > Dolls"]  # rare leaf merged into its parent
    assert ds.label_names == [f"{TG} > Puzzles", f"{TG} > Dolls", f"{TG} > Puzzles > Jigsaw Puzzles"]
    assert sorted(zip(ds.interactions["user_id"], ds.interactions["item_id"])) == [
        ("U1", "A1"), ("U1", "A2"), ("U2", "A1"), ("U2", "A5"), ("U3", "A3"), ("U3", "A6")]
    assert ds.interactions["rating"].tolist() == [5.0] * 6

    s = skips(report)
    assert report["format"] == "Amazon 2014 (Toys_and_Games)"
    assert report["kept"] == {"items": 5, "interactions": 6, "users": 3, "labels": 3}
    assert s[("reviews", "malformed line")]["count"] == 2
    assert s[("reviews", "malformed line")]["examples"][0].startswith("reviews_Toys_and_Games_5.json.gz:4: invalid JSON")
    assert s[("reviews", "malformed line")]["examples"][1] == "reviews_Toys_and_Games_5.json.gz:13: missing reviewerID or asin"
    meta_bad = s[("meta records", "malformed line")]
    assert meta_bad["count"] == 2
    assert [e.split(":")[1] for e in meta_bad["examples"]] == ["4", "11"]
    assert s[("items", "not in meta_Toys_and_Games.json.gz")]["examples"] == ["A4", "A10"]
    assert s[("items", "no image file")]["count"] == 1 and s[("items", "no image file")]["examples"][0].endswith("A8.jpg")
    assert s[("items", "image cannot be decoded")]["count"] == 1
    assert s[("items", "no label left (rare labels merged, top level dropped)")]["examples"] == ["A7"]
    assert s[("reviews", "item skipped (see items)")]["count"] == 5  # A7 A8 A9 A4 A10
    assert "pwned" not in capfd.readouterr().out  # the literal was never evaluated


def test_clothing_2018(tmp_path):
    raw = tmp_path / "raw"
    cat = ["Clothing, Shoes &amp; Jewelry", "Women", "Shoes"]
    meta = [
        json.dumps({"asin": "B1", "category": cat, "imageURLHighRes": ["https://x/B1.jpg"], "imageURL": []}),
        json.dumps({"asin": "B2", "category": cat[:2], "imageURL": ["https://x/B2.jpg"]}),
        json.dumps({"asin": "B3", "category": [], "imageURL": []}),
        json.dumps({"asin": "B1", "category": ["dup"]}),
        "not json at all",
    ]
    gz_lines(raw / "meta_Clothing_Shoes_and_Jewelry.json.gz", meta)
    reviews = [json.dumps({"overall": 4.0, "verified": True, "reviewTime": "01 1, 2018", "reviewerID": u,
                           "asin": a, "unixReviewTime": 1514764800}) for u, a in
               [("U1", "B1"), ("U2", "B1"), ("U1", "B2"), ("U1", "B2"), ("U3", "B3")]]
    gz_lines(raw / "Clothing_Shoes_and_Jewelry_5.json.gz", reviews)
    images = tmp_path / "imgs"
    for a in ("B1", "B2", "B3"):
        write_image(images / f"{a}.jpg", (5, 5, 5))
    folder, report = prepare_dataset("clothing", raw, images=images, data_root=tmp_path / "home", min_items=1)
    ds = load_folder(folder)
    assert report["format"] == "Amazon 2018 (Clothing_Shoes_and_Jewelry)"
    labels = dict(zip(ds.items["item_id"], ds.items["labels"]))
    assert labels == {"B1": ["Clothing, Shoes & Jewelry > Women", "Clothing, Shoes & Jewelry > Women > Shoes"],
                      "B2": ["Clothing, Shoes & Jewelry > Women"]}
    s = skips(report)
    assert s[("reviews", "duplicate review (same reviewer and item)")]["count"] == 1
    assert s[("items", "no category path")]["examples"] == ["B3"]
    assert s[("meta records", "duplicate asin (first kept)")]["examples"] == ["meta_Clothing_Shoes_and_Jewelry.json.gz:4: B1"]
    assert s[("meta records", "malformed line")]["examples"][0].startswith("meta_Clothing_Shoes_and_Jewelry.json.gz:5:")
    assert len(ds.interactions) == 3


def test_errors(tmp_path):
    raw = make_2014_toys(tmp_path / "raw")
    home = tmp_path / "home"
    with pytest.raises(FileNotFoundError, match=r"reviews_Clothing_Shoes_and_Jewelry_5\.json\.gz \(2014\)"):
        prepare_dataset("clothing", raw, data_root=home)
    with pytest.raises(FileNotFoundError, match="image folder does not exist; pass --images"):
        prepare_dataset("toys", raw, images=tmp_path / "none", data_root=home)
    with pytest.raises(ValueError, match="--min-items must be >= 1"):
        prepare_dataset("toys", raw, data_root=home, min_items=0)
    # truncated gzip: an error naming the file and the line where it broke
    f = raw / "reviews_Toys_and_Games_5.json.gz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"reviews_Toys_and_Games_5\.json\.gz:\d+: corrupt or truncated gzip"):
        prepare_dataset("toys", raw, data_root=home)
    # default threshold 10 on this tiny dump leaves no label: a clear error, not an empty dataset
    make_2014_toys(raw)
    with pytest.raises(DatasetError, match="no item kept"):
        prepare_dataset("toys", raw, data_root=home)
    assert not (home / "datasets" / "toys").exists()
