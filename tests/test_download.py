"""download-images against a local http.server on 127.0.0.1 (no internet): concurrency,
retries with backoff, resumability, failures file; then prepare reads what was fetched."""
from __future__ import annotations

import gzip
import io
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from raysearch.cli import app
from raysearch.data import load_folder, prepare_dataset
from raysearch.data.adapters.common import check_image
from raysearch.data.download import DownloadConfig, download_images

pytestmark = pytest.mark.timeout(60)

FAST = DownloadConfig(workers=4, retries=2, backoff_s=0.01, timeout_s=5)


def image_bytes(color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format=fmt)
    return buf.getvalue()


class Server:
    """Serves ``files`` (path -> bytes); ``/flaky/...`` answers 503 once first, ``/down/...`` always 500."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.hits = files, Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.hits[self.path] += 1
                body = outer.files.get(self.path)
                if self.path.startswith("/down/") or (self.path.startswith("/flaky/") and outer.hits[self.path] == 1):
                    self.send_error(503 if "flaky" in self.path else 500)
                elif body is None:
                    self.send_error(404)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *a):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    files = {
        "/i/A1.jpg": image_bytes((200, 0, 0)),
        "/i/A2.jpg": image_bytes((0, 200, 0), "PNG"),  # PNG content under a .jpg URL
        "/i/A4.jpg": b"<html>not an image</html>",      # corrupt
        "/flaky/A5.jpg": image_bytes((0, 0, 200)),
        "/i/B1.jpg": image_bytes((1, 1, 1)),
        "/i/P1.jpg": image_bytes((2, 2, 2)),
        "/i/P2.jpg": image_bytes((3, 3, 3)),
    }
    with Server(files) as s:
        yield s


def write_toys_2014(raw: Path, base: str) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    urls = {"A1": f"{base}/i/A1.jpg", "A2": f"{base}/i/A2.jpg", "A3": f"{base}/i/A3.jpg",
            "A4": f"{base}/i/A4.jpg", "A5": f"{base}/flaky/A5.jpg", "A6": f"{base}/down/A6.jpg",
            "Z9": f"{base}/i/Z9.jpg"}
    with gzip.open(raw / "meta_Toys_and_Games.json.gz", "wt") as f:
        for a, u in urls.items():
            f.write(repr({"asin": a, "imUrl": u, "categories": [["Toys & Games", "Puzzles"]]}) + "\n")
    with gzip.open(raw / "reviews_Toys_and_Games_5.json.gz", "wt") as f:
        for i, a in enumerate(["A1", "A2", "A3", "A4", "A5", "A6"]):  # Z9: not a 5-core item
            f.write(json.dumps({"reviewerID": f"U{i % 2}", "asin": a, "overall": 4.0, "unixReviewTime": 1}) + "\n")


def test_amazon_download_retries_failures_resume(server, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "raw" / "images"
    write_toys_2014(raw, server.url)
    res = download_images("toys", raw, out, FAST)
    assert (res["items"], res["downloaded"], res["present"], res["failed"]) == (6, 3, 0, 3)
    for a in ("A1", "A2", "A5"):
        assert check_image(out / f"{a}.jpg") is None
    assert not (out / "A4.jpg").exists() and not list(out.glob(".*"))  # no partial/temp files left
    assert server.hits["/flaky/A5.jpg"] == 2        # 503 retried, then fetched
    assert server.hits["/i/A3.jpg"] == 1            # 404 is permanent: not retried
    assert server.hits["/down/A6.jpg"] == 3         # 500: first try + 2 retries
    assert server.hits["/i/Z9.jpg"] == 0            # only the 5-core items are fetched
    rows = [l.split("\t") for l in Path(res["failures_file"]).read_text().splitlines()]
    assert rows[0] == ["item_id", "url", "reason"]
    fails = {r[0]: r for r in rows[1:]}
    assert set(fails) == {"A3", "A4", "A6"}
    assert fails["A3"][2] == "HTTP 404" and fails["A3"][1].endswith("/i/A3.jpg")
    assert fails["A4"][2].startswith("not a decodable image")
    assert "after 3 attempts" in fails["A6"][2]

    # resumable: valid files are not fetched again; failures are retried
    res2 = download_images("toys", raw, out, FAST)
    assert (res2["present"], res2["downloaded"], res2["failed"]) == (3, 0, 3)
    assert server.hits["/i/A1.jpg"] == 1 and server.hits["/i/A3.jpg"] == 2

    # what was fetched is what prepare reads (missing images counted there)
    folder, report = prepare_dataset("toys", raw, data_root=tmp_path / "home", min_items=1)
    assert sorted(load_folder(folder, check_images=True).items["item_id"]) == ["A1", "A2", "A5"]
    assert {(s["what"], s["reason"]): s["count"] for s in report["skipped"]}[("items", "no image file")] == 3


def test_2018_url_fallback_and_pinterest_cli(server, tmp_path):
    raw = tmp_path / "clothing"
    raw.mkdir()
    with gzip.open(raw / "meta_Clothing_Shoes_and_Jewelry.json.gz", "wt") as f:
        f.write(json.dumps({"asin": "B1", "category": ["Clothing", "Women"],
                            "imageURLHighRes": [f"{server.url}/i/B1-hires.jpg"], "imageURL": [f"{server.url}/i/B1.jpg"]}) + "\n")
    with gzip.open(raw / "Clothing_Shoes_and_Jewelry_5.json.gz", "wt") as f:
        f.write(json.dumps({"reviewerID": "U1", "asin": "B1", "overall": 5.0}) + "\n")
    res = download_images("clothing", raw, tmp_path / "c-img", FAST)
    assert res["downloaded"] == 1 and server.hits["/i/B1-hires.jpg"] == 1  # high-res 404 -> next URL

    p = tmp_path / "pin"
    p.mkdir()
    (p / "ImageCategoryID.txt").write_text("animals|1\n")
    with gzip.open(p / "ImageDatasetRepinactivity.gz", "wt") as f:
        f.write("".join(f"P1|u{i}|1|b\n" for i in range(3)) + "P2|u1|1|b\nP3|u1|1|b\n")
    with gzip.open(p / "ImageDatasetImagesURLs.gz", "wt") as f:
        f.write(f"P1|{server.url}/i/P1.jpg\nP2|{server.url}/i/P2.jpg\nP3|{server.url}/i/P3.jpg\n")
    r = CliRunner().invoke(app, ["download-images", "--dataset", "pinterest", "--raw", str(p), "--min-repins", "0",
                                 "--retries", "0", "--workers", "2", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (got["items"], got["downloaded"], got["failed"]) == (3, 2, 1)
    assert got["out"] == str(p / "images") and (p / "images" / "P1.jpg").is_file()
    # --min-repins restricts to pins prepare would keep
    r = CliRunner().invoke(app, ["download-images", "-d", "pinterest", "--raw", str(p), "--min-repins", "2", "--json"])
    assert json.loads(r.stdout)["items"] == 1
    r = CliRunner().invoke(app, ["download-images", "-d", "movielens", "--raw", str(p)])
    assert r.exit_code == 2 and "movielens dumps carry no image URLs" in r.output


def test_config_validation():
    with pytest.raises(ValueError, match="workers >= 1"):
        DownloadConfig(workers=0)
