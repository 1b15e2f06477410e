"""Pinterest social-curation adapter on a tiny dump in the exact published file formats."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from PIL import Image

from raysearch.data import DatasetError, load_folder, prepare_dataset


def write_image(path: Path, color: tuple[int, int, int], fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), color).save(path, format=fmt)


def make_dump(raw: Path) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "ImageCategoryID.txt").write_text("animals|1\nart|2\nfood & drink|3\nbad line\n")
    lines = []
    # pin 100: 4 distinct users, categories 1,1,2 (+ a repeated repin) -> animals
    lines += ["100|u1|1|b1", "100|u2|1|b2", "100|u3|2|b3", "100|u4|art|b4", "100|u1|1|b9"]
    # pin 200: 3 users, all food & drink
    lines += ["200|u1|3|b1", "200|u5|3|b5", "200|u6|3|b6"]
    # pin 300: 2 users only -> too few repins
    lines += ["300|u1|2|b1", "300|u2|2|b2"]
    # pin 400: enough repins, no image;  pin 500: enough repins, corrupt image
    lines += [f"400|u{i}|2|b" for i in range(1, 5)] + [f"500|u{i}|2|b" for i in range(1, 5)]
    # pin 600: tie between art (2) and animals (1): lowest label id wins -> animals
    lines += ["600|u1|2|b", "600|u2|1|b", "600|u3|2|b", "600|u4|1|b"]
    lines += ["700|u1|99|b1", "only|three|fields", "|u1|1|b"]  # unknown category, malformed x2
    with gzip.open(raw / "ImageDatasetRepinactivity.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    with gzip.open(raw / "ImageDatasetImagesURLs.gz", "wt") as f:
        f.write("".join(f"{p}|http://127.0.0.1:1/{p}.jpg\n" for p in (100, 200, 300, 400, 500, 600)))
    write_image(raw / "images" / "100.jpg", (1, 2, 3))
    write_image(raw / "images" / "200.jpg", (4, 5, 6), fmt="PNG")
    write_image(raw / "images" / "300.jpg", (7, 8, 9))
    write_image(raw / "images" / "600.jpg", (9, 9, 9))
    (raw / "images" / "500.jpg").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return raw


def skips(report: dict) -> dict[tuple[str, str], dict]:
    return {(s["what"], s["reason"]): s for s in report["skipped"]}


def test_pinterest(tmp_path):
    raw = make_dump(tmp_path / "raw")
    folder, report = prepare_dataset("pinterest", raw, data_root=tmp_path / "home", min_repins=2)
    ds = load_folder(folder, check_images=True)
    labels = dict(zip(ds.items["item_id"], ds.items["labels"]))
    assert labels == {"100": ["animals"], "200": ["food & drink"], "600": ["animals"]}
    assert ds.label_names == ["animals", "food & drink"]
    pairs = sorted(zip(ds.interactions["user_id"], ds.interactions["item_id"]))
    assert len(pairs) == 11 and len(set(pairs)) == 11  # distinct (user, pin) repins
    assert ("u4", "100") in pairs  # category given by name is accepted

    s = skips(report)
    assert report["kept"] == {"items": 3, "interactions": 11, "users": 6, "labels": 2}
    assert s[("categories", "malformed line")]["examples"] == ["ImageCategoryID.txt:4: expected name|label_id"]
    bad = s[("repins", "malformed line")]
    assert bad["count"] == 3
    assert bad["examples"] == [
        "ImageDatasetRepinactivity.gz:23: unknown category '99' (not in ImageCategoryID.txt)",
        "ImageDatasetRepinactivity.gz:24: expected 4 fields pin_id|user_id|category|board_id, got 3",
        "ImageDatasetRepinactivity.gz:25: empty pin_id or user_id",
    ]
    assert s[("repins", "repeated (user, pin) repin (counted once)")]["examples"] == [
        "ImageDatasetRepinactivity.gz:5: user u1, pin 100"]
    assert s[("pins", "2 repins or fewer")]["examples"] == ["pin 300: 2"]
    assert s[("pins", "no image file")]["examples"][0].endswith("400.jpg")
    assert s[("pins", "image cannot be decoded")]["count"] == 1
    assert s[("repins", "pin skipped (see pins)")]["count"] == 2 + 4 + 4
    assert any("several categories" in n for n in report["notes"])


def test_min_repins_default_and_errors(tmp_path):
    raw = make_dump(tmp_path / "raw")
    home = tmp_path / "home"
    with pytest.raises(DatasetError, match="no pin kept .*more than 10 repins"):
        prepare_dataset("pinterest", raw, data_root=home)
    folder, report = prepare_dataset("pinterest", raw, data_root=home, min_repins=3)
    assert sorted(load_folder(folder).items["item_id"]) == ["100", "600"]  # more than 3: 4 users each
    (raw / "ImageCategoryID.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no category file found .*ImageCategoryID.txt"):
        prepare_dataset("pinterest", raw, data_root=home, overwrite=True)
    (raw / "ImageCategoryID.txt").write_text("garbage\nmore garbage\n")
    with pytest.raises(DatasetError, match=r"ImageCategoryID\.txt: unusable, 2 of 2 data lines malformed"):
        prepare_dataset("pinterest", raw, data_root=home, overwrite=True)
