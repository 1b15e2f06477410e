"""Nothing silently wrong, nothing lost (issue 12): stale caches, atomic --overwrite under a
real SIGKILL, full disks (faked ENOSPC), stale temp files, one permission policy."""
from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from raysearch import _io
from raysearch.cli import app
from raysearch.data import load_dataset, load_folder, prepare_dataset, write_dataset
from raysearch.data.images import decode_image, image_cache_path, load_image_cache

runner = CliRunner()
COLORS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250), (250, 0, 250)]


def make_folder(root: Path, fmt: str = "PNG") -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    ext = fmt.lower()
    for i, c in enumerate(COLORS):
        Image.new("RGB", (20, 20), c).save(root / "images" / f"{i}.{ext}", format=fmt)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(6)], "image": [f"images/{i}.{ext}" for i in range(6)],
                          "labels": [["a"], ["b"]] * 3})
    inter = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["i0", "i1", "i2"]})
    return write_dataset(root, items, inter, name="six", source="test")


def rows_match(ds, cache: np.ndarray, size: int) -> list[bool]:
    return [bool((cache[i] == decode_image(ds.image_path(i), size)).all()) for i in range(ds.n_items)]


# ----------------------------------------------------------------------------- stale caches


def test_reordered_items_get_a_new_fingerprint_and_a_matching_cache(tmp_path):
    folder, home = make_folder(tmp_path / "ds"), tmp_path / "home"
    ds = load_folder(folder)
    old = load_image_cache(ds, 16, home, progress=False)
    assert all(rows_match(ds, old, 16))
    t = pq.read_table(folder / "items.parquet")
    pq.write_table(t.take(pa.array(range(t.num_rows - 1, -1, -1))), folder / "items.parquet")  # meta.json untouched
    ds2 = load_folder(folder)
    assert ds2.fingerprint != ds.fingerprint
    assert ds2.items["item_id"].tolist() == [f"i{i}" for i in range(5, -1, -1)]
    new = load_image_cache(ds2, 16, home, progress=False)
    assert image_cache_path(ds2, 16, home) != image_cache_path(ds, 16, home)
    assert all(rows_match(ds2, new, 16))
    # the new fingerprint is recorded: the next load is the cheap manifest check again
    assert json.loads((folder / "meta.json").read_text())["fingerprint"] == ds2.fingerprint
    assert load_folder(folder).fingerprint == ds2.fingerprint


def test_replaced_image_is_never_served_from_the_old_cache(tmp_path):
    folder, home = make_folder(tmp_path / "ds"), tmp_path / "home"
    ds = load_folder(folder)
    load_image_cache(ds, 16, home, progress=False)
    Image.new("RGB", (20, 20), (10, 10, 10)).save(folder / "images" / "0.png")
    ds2 = load_folder(folder)
    assert ds2.fingerprint != ds.fingerprint
    cache = load_image_cache(ds2, 16, home, progress=False)
    assert all(rows_match(ds2, cache, 16)) and cache[0].max() < 20


def test_rehash_on_request_catches_an_edit_that_kept_size_and_mtime(tmp_path):
    folder = make_folder(tmp_path / "ds", fmt="BMP")  # uncompressed: same size whatever the colour
    ds = load_folder(folder)
    img = folder / "images" / "0.bmp"
    st = img.stat()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(img, format="BMP")
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert img.stat().st_size == st.st_size
    assert load_folder(folder).fingerprint == ds.fingerprint  # the cheap check cannot see it ...
    assert load_folder(folder, rehash=True).fingerprint != ds.fingerprint  # ... a rehash does


def test_prepare_copies_images_so_raw_edits_do_not_leak_in(tmp_path):
    from test_bad_input import make_ml

    raw, home = make_ml(tmp_path / "raw"), tmp_path / "home"
    folder, _ = prepare_dataset("movielens", raw, data_root=home)
    ds = load_dataset("movielens", home)
    prepared = ds.image_path(0)
    assert prepared.stat().st_nlink == 1
    before = prepared.read_bytes()
    Image.new("RGB", (6, 9), (0, 0, 255)).save(raw / "posters" / f"{ds.items['item_id'][0]}.jpg")
    assert prepared.read_bytes() == before
    assert load_dataset("movielens", home).fingerprint == ds.fingerprint


# ----------------------------------------------------------------------------- atomic --overwrite


class _KillAt:
    """Stands in for a module inside ``raysearch._io``: SIGKILLs the process when ``fn`` is called."""

    def __init__(self, module, fn: str, nth: int) -> None:
        self.module, self.fn, self.nth, self.calls = module, fn, nth, 0

    def __getattr__(self, name):
        if name != self.fn:
            return getattr(self.module, name)

        def call(*a, **k):
            self.calls += 1
            if self.calls == self.nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return getattr(self.module, name)(*a, **k)

        return call


def _prepare_killed(raw: str, home: str, where: str) -> None:  # runs in a forked child
    import shutil

    if where == "between-the-renames":  # rename 1 put the old folder aside; die before rename 2
        _io.os = _KillAt(os, "rename", 2)
    else:  # both renames done; die before the old folder is deleted
        _io.shutil = _KillAt(shutil, "rmtree", 1)
    prepare_dataset("movielens", raw, data_root=home, overwrite=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["between-the-renames", "before-deleting-the-old"])
def test_kill_during_overwrite_leaves_one_complete_dataset(tmp_path, where):
    from test_bad_input import make_ml

    home = tmp_path / "home"
    v1 = make_ml(tmp_path / "v1")
    v2 = make_ml(tmp_path / "v2", ratings="userId,movieId,rating,timestamp\n1,1,4.0,1\n2,2,5.0,3\n")
    folder, _ = prepare_dataset("movielens", v1, data_root=home)
    old = load_dataset("movielens", home)
    child = multiprocessing.get_context("fork").Process(target=_prepare_killed, args=(str(v2), str(home), where))
    child.start()
    child.join(50)
    assert child.exitcode == -signal.SIGKILL
    assert _io.aside_path(folder).exists()
    # next load: one complete dataset (the old one if the new was not in place yet, else the new)
    ds = load_dataset("movielens", home)
    if where == "between-the-renames":
        assert not folder.exists() or ds.fingerprint == old.fingerprint
        assert ds.fingerprint == old.fingerprint and len(ds.interactions) == 5
        assert [p.name for p in folder.parent.iterdir() if p.name.endswith(".tmp")], "the new folder is orphaned"
    else:
        assert len(ds.interactions) == 2
    assert not _io.aside_path(folder).exists()
    # the next prepare replaces it and removes what the killed run left
    prepare_dataset("movielens", v2, data_root=home, overwrite=True)
    assert len(load_dataset("movielens", home).interactions) == 2
    assert sorted(p.name for p in folder.parent.iterdir()) == [".movielens.lock", "movielens"]


def test_recover_after_both_renames_deletes_the_old_copy(tmp_path):
    new, aside = tmp_path / "d", _io.aside_path(tmp_path / "d")
    new.mkdir(), aside.mkdir()
    _io.recover_dir(new)
    assert new.is_dir() and not aside.exists()


# ----------------------------------------------------------------------------- full disk


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullFile(io.BufferedWriter):
    """A file that accepts ``limit`` bytes, then fails like a full disk."""

    def __init__(self, path, limit: int = 200) -> None:
        super().__init__(io.FileIO(path, "wb"))
        self.left = limit

    def write(self, b) -> int:
        if len(b) > self.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= len(b)
        return super().write(b)


def test_image_cache_disk_full_midway_leaves_no_temp_file(tmp_path, monkeypatch):
    import raysearch.data.images as images

    ds, home = load_folder(make_folder(tmp_path / "ds")), tmp_path / "home"
    monkeypatch.setattr(images, "open", lambda p, mode="r": _FullFile(p), raising=False)
    with pytest.raises(_io.DiskFullError) as e:
        load_image_cache(ds, 16, home, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(image_cache_path(ds, 16, home)) in msg and "disk full" in msg
    assert "needs" in msg
    assert [p.name for p in image_cache_path(ds, 16, home).parent.iterdir() if not p.name.endswith(".lock")] == []


def test_image_cache_refused_up_front_when_it_cannot_fit(tmp_path, monkeypatch):
    ds, home = load_folder(make_folder(tmp_path / "ds")), tmp_path / "home"
    monkeypatch.setattr(_io, "free_bytes", lambda p: 1000)
    with pytest.raises(_io.DiskFullError, match=r"^\S+-16\.npy: disk full \(needs [\d.]+ KB, 1000 B free\)"):
        load_image_cache(ds, 16, home, progress=False)
    assert not any(p.suffix in (".tmp", ".npy") for p in image_cache_path(ds, 16, home).parent.iterdir())


def test_prepare_disk_full_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import raysearch.data.adapters.common as common
    from test_bad_input import error_line, make_ml

    monkeypatch.setattr(common.shutil, "copyfile", _enospc)
    home = tmp_path / "home"
    res = runner.invoke(app, ["prepare", "-d", "movielens", "--raw", str(make_ml(tmp_path / "raw")), "--data-root", str(home)])
    assert res.exit_code == 2
    assert "disk full" in error_line(res) and "images" in error_line(res)
    assert [p.name for p in (home / "datasets").iterdir()] == [".movielens.lock"]


def test_prepare_disk_full_in_a_table_write(tmp_path, monkeypatch):
    import raysearch.data.format as fmt
    from test_bad_input import error_line, make_ml

    monkeypatch.setattr(fmt.pq, "write_table", _enospc)
    home = tmp_path / "home"
    res = runner.invoke(app, ["prepare", "-d", "movielens", "--raw", str(make_ml(tmp_path / "raw")), "--data-root", str(home)])
    assert res.exit_code == 2 and "disk full" in error_line(res)
    assert [p.name for p in (home / "datasets").iterdir()] == [".movielens.lock"]


def test_cf_parquet_disk_full_leaves_no_temp_file(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", _enospc)
    target = tmp_path / "cf" / "x.parquet"
    with pytest.raises(_io.DiskFullError, match="x.parquet: disk full"):
        _io.write_parquet_atomic(pa.table({"a": [1, 2]}), target)
    assert list(target.parent.iterdir()) == []


def test_download_of_a_bad_image_leaves_no_temp_file(tmp_path, monkeypatch):
    from raysearch.data import download

    monkeypatch.setattr(download, "_fetch", lambda url, cfg: b"<html>not an image</html>")
    status, _, reason = download._download_one(["http://x/1.jpg"], tmp_path / "1.jpg", download.DownloadConfig(retries=0))
    assert status == "failed" and "not a decodable image" in reason
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- temp files, modes


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_stale_temp_files_of_killed_runs_are_removed_live_ones_kept(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    dead = d / f".a.npy.{_io._HOST}-{_dead_pid()}-x1y2.tmp"
    live = d / f".b.npy.{_io._HOST}-{os.getpid()}-x1y2.tmp"
    legacy_old = d / ".c-abcd.npy.tmp"
    legacy_new = d / ".d-abcd.npy.tmp"
    other_host_new = d / ".e.npy.otherhost-1-x1y2.tmp"
    for p in (dead, live, legacy_old, legacy_new, other_host_new):
        p.write_bytes(b"x" * 10)
    os.utime(legacy_old, (time.time() - 2 * 3600,) * 2)
    with _io.atomic_path(d / "f.json", clean=True) as tmp:
        tmp.write_text("{}")
    left = sorted(p.name for p in d.iterdir())
    assert left == sorted([live.name, legacy_new.name, other_host_new.name, "f.json"])


def test_one_permission_policy_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        _io.write_text(tmp_path / "f.json", "{}")
        d = _io.temp_dir(tmp_path, "ds")
        assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o640
        assert d.stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(old)


def test_next_run_removes_what_a_killed_cache_build_left(tmp_path):
    ds, home = load_folder(make_folder(tmp_path / "ds")), tmp_path / "home"
    load_image_cache(ds, 16, home, progress=False)
    d = image_cache_path(ds, 16, home).parent
    killed = d / f".{ds.fingerprint}-16.npy.{_io._HOST}-{_dead_pid()}-abcd.tmp"
    legacy = d / f".{ds.fingerprint}-16-abcd.npy.tmp"  # named by an older version
    for p in (killed, legacy):
        p.write_bytes(b"\0" * 100)
    os.utime(legacy, (time.time() - 2 * 3600,) * 2)
    load_image_cache(ds, 16, home, progress=False)  # a cache hit still cleans
    assert not killed.exists() and not legacy.exists()


# ----------------------------------------------------------------------------- issue 19: file-size limits, quotas, memory


def _under_limit(blocks: int, argv: list[str], cwd=None):
    """``argv`` in a shell with ``ulimit -f BLOCKS`` (1 KiB blocks), bounded by a timeout."""
    import shlex
    import subprocess

    cmd = " ".join(shlex.quote(a) for a in argv)
    return subprocess.run(["bash", "-c", f"ulimit -f {blocks}; exec {cmd}"], capture_output=True, text=True,
                          timeout=240, cwd=cwd)


_LIMITED_WRITES = r"""
import json, sys
from pathlib import Path
import numpy as np, pyarrow as pa, torch
from raysearch import _io
from raysearch.data import load_folder
from raysearch.data.images import load_image_cache
tmp, out = Path(sys.argv[1]), {}
def run(name, fn):
    try:
        fn()
        out[name] = ["ok", ""]
    except Exception as e:
        out[name] = [type(e).__name__, str(e)]
run("cache", lambda: load_image_cache(load_folder(sys.argv[2]), 64, tmp / "home", progress=False))
run("parquet", lambda: _io.write_parquet_atomic(pa.table({"v": np.random.default_rng(0).random(20000)}),
                                                 tmp / "cf" / "v.parquet"))
run("torch", lambda: _io.torch_save({"w": torch.zeros(20000)}, tmp / "model" / "model.pt"))
print(json.dumps(out))
"""


@pytest.mark.timeout(300)
def test_writes_under_a_file_size_limit_name_the_file_being_written_and_the_limit(tmp_path):
    """Under `ulimit -f` the image cache, CF vectors and model.pt were "File too large" / "Error writing
    bytes ... [errno 27]" naming no file (torch.save: "unexpected pos"): now one line naming the file
    being written and the limit, and no temp file left."""
    import sys

    folder = make_folder(tmp_path / "ds")
    r = _under_limit(20, [sys.executable, "-c", _LIMITED_WRITES, str(tmp_path), str(folder)])
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    cache = image_cache_path(load_folder(folder), 64, tmp_path / "home")
    for name, target in (("cache", cache), ("parquet", tmp_path / "cf" / "v.parquet"),
                         ("torch", tmp_path / "model" / "model.pt")):
        kind, msg = got[name]
        assert kind == "FileTooLargeError", (name, kind, msg)
        assert msg.startswith(f"{target}: file too large") and "ulimit -f 20" in msg and "\n" not in msg, msg
        assert not any(p.name.endswith(".tmp") for p in target.parent.iterdir()), list(target.parent.iterdir())
        assert not target.exists()
    assert "train.image_size=64" in got["cache"][1]  # the cache names the flag that sized it


@pytest.mark.timeout(300)
def test_prepare_under_a_file_size_limit_names_the_dataset_file_not_the_source(tmp_path):
    import sys

    from test_bad_input import make_ml

    raw = make_ml(tmp_path / "raw")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(raw / "posters" / "2.jpg")
    home = tmp_path / "home"
    r = _under_limit(8, [sys.executable, "-m", "raysearch.cli", "prepare", "-d", "movielens", "--raw", str(raw),
                         "--data-root", str(home)])
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = lines[0]
    assert f"{home / 'datasets' / 'movielens' / 'images'}/" in line and "ulimit -f 8" in line, line
    assert str(raw) not in line and ".tmp" not in line, line  # not the source file, not the temp folder
    assert [p.name for p in (home / "datasets").iterdir()] == [".movielens.lock"]


def test_quota_and_file_system_limits_are_one_line_naming_the_destination(tmp_path, monkeypatch):
    def fail(code, text):
        def write(*_a, **_k):
            raise OSError(code, text)
        return write

    target = tmp_path / "out" / "x.parquet"
    monkeypatch.setattr(pq, "write_table", fail(errno.EDQUOT, "Disk quota exceeded"))
    with pytest.raises(_io.DiskFullError, match=rf"^{target}: disk quota exceeded"):
        _io.write_parquet_atomic(pa.table({"a": [1]}), target)
    monkeypatch.setattr(_io, "fsize_limit", lambda: None)  # EFBIG with no ulimit: the file system's maximum
    monkeypatch.setattr(pq, "write_table", fail(errno.EFBIG, "File too large"))
    with pytest.raises(_io.FileTooLargeError, match=rf"^{target}: file too large for its file system"):
        _io.write_parquet_atomic(pa.table({"a": [1]}), target)
    assert list(target.parent.iterdir()) == []
    assert issubclass(_io.FileTooLargeError, _io.WriteError) and issubclass(_io.DiskFullError, _io.WriteError)


def test_image_size_and_batch_are_checked_against_memory_before_allocating(tmp_path, monkeypatch):
    """`train --set train.image_size=1000000000` was numpy's "Unable to allocate 2.60 EiB"."""
    from raysearch.data.images import ResourceError, check_memory

    ds, home = load_folder(make_folder(tmp_path / "ds")), tmp_path / "home"
    with pytest.raises(ResourceError, match=r"^train\.image_size=1000000000: .* needs about [\d.e+]+ EB of memory"):
        load_image_cache(ds, 1_000_000_000, home, progress=False)
    monkeypatch.setattr(_io, "available_memory", lambda: 1 << 30)  # 1 GB
    check_memory(512, batch_size=64)  # 0.45 GB: fits
    with pytest.raises(ResourceError, match=r"^train\.image_size=20000: .*1\.0 GB available; lower train\.image_size"):
        check_memory(20000)
    with pytest.raises(ResourceError, match=r"^train\.batch_size=1024 at train\.image_size=512: .*lower train\.batch_size"):
        check_memory(512, batch_size=1024)
    assert not image_cache_path(ds, 1_000_000_000, home).parent.exists() or \
        not any(image_cache_path(ds, 1_000_000_000, home).parent.glob("*.tmp"))
    assert _io.human(3e18) == "2.6 EB" and _io.human(3e15) == "2.7 PB"
