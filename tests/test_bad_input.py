"""Bad-input corpus (issue 12): every case through the real CLI, asserting the exit code, a
one-line message naming the file/row/flag, and that nothing was written or lost.

Each case builds its input under ``tmp_path`` and returns the argv; ``expect`` is
``error`` (exit 2, one ``error:`` line, no traceback, the data root unchanged) or ``skip``
(exit 0, the reason counted in the ``--json`` report).
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from raysearch.cli import app
from raysearch.data.format import write_dataset

runner = CliRunner()


# ----------------------------------------------------------------------------- inputs


def make_ml(raw: Path, *, ratings: str | None = None, movies: str | bytes | None = None) -> Path:
    """A tiny ml-latest dump: 3 movies with posters, 5 ratings."""
    raw.mkdir(parents=True, exist_ok=True)
    m = movies if movies is not None else (
        'movieId,title,genres\n1,"Heat, The (1995)",Action|Crime\n2,Sabrina (1995),Comedy\n3,Lost (1995),Drama\n')
    (raw / "movies.csv").write_bytes(m if isinstance(m, bytes) else m.encode())
    (raw / "ratings.csv").write_text(ratings or "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,3.0,2\n"
                                                 "2,2,5.0,3\n2,3,1.0,4\n3,1,2.0,5\n")
    (raw / "posters").mkdir(exist_ok=True)
    for mid in (1, 2, 3):
        Image.new("RGB", (6, 9), (mid * 50, 0, 0)).save(raw / "posters" / f"{mid}.jpg")
    return raw


def make_folder(root: Path) -> Path:
    """A valid canonical dataset folder with 4 items."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(root / "images" / f"{i}.jpg")
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(4)], "image": [f"images/{i}.jpg" for i in range(4)],
                          "labels": [["a"], ["b"], ["a", "b"], []]})
    inter = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["i0", "i1", "i2"]})
    return write_dataset(root, items, inter, name="tiny", source="test")


def edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


def edit_items(folder: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    items = pq.read_table(folder / "items.parquet").to_pandas()
    items = fn(items)
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), folder / "items.parquet")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (lock files aside) with its size and mtime."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    id: str
    setup: Callable[[Path], list[str]]   # tmp dir -> argv (a --data-root under tmp/home is added)
    expect: str = "error"                 # error | skip
    needles: tuple[str, ...] = ()         # substrings of the error line / skip reasons
    code: int = 2
    kind: str = "clear error"             # the report's column: clear error | counted skip
    notes: list[str] = field(default_factory=list)


def _prep(tmp: Path, **kw) -> list[str]:
    return ["prepare", "--dataset", "movielens", "--raw", str(make_ml(tmp / "raw", **kw)), "--json"]


def _stats(tmp: Path, mutate: Callable[[Path], None]) -> list[str]:
    folder = make_folder(tmp / "ds")
    mutate(folder)
    return ["stats", "--dataset", str(folder)]


def _write(path: Path, data: bytes | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\ntrain: {lr: [*c, *c, *c, *c, *c, *c, *c, *c, *c]}\n"


def _pickled_object(tmp: Path) -> str:
    import torch

    p = tmp / "w.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": Path("x")}, p)  # a pickled class: weights_only refuses
    return str(p)


class _Payload:
    """Unpickling it would run a shell command: a ``model.pt`` replaced by an attack."""

    def __reduce__(self):
        import os

        return os.system, ("touch PAYLOAD_RAN",)


def _model_dir_with(tmp: Path, weights: bytes | None = None, payload: bool = False) -> str:
    """A model directory (model.json + config.yaml) whose model.pt is ``weights`` or a pickle payload."""
    import torch

    d = tmp / "model"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.json").write_text(json.dumps({
        "format": "raysearch-model", "version": 1, "dataset": "x", "fingerprint": None, "label_names": ["a"],
        "backbone": "tiny_cnn", "image_size": 16, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "thresholds": [0.5], "threshold_source": "default"}))
    if payload:
        torch.save({"x": _Payload()}, d / "model.pt")
    else:
        (d / "model.pt").write_bytes(weights or b"")
    return str(d)


def _dup_key_model_json(tmp: Path) -> str:
    """A model directory whose model.json names label_names twice (JSON would keep the second)."""
    d = Path(_model_dir_with(tmp, b"x"))
    text = (d / "model.json").read_text()
    (d / "model.json").write_text(text[:-1] + ', "label_names": ["b", "c"]}')
    return str(d)


def _truncated_state_dict(tmp: Path) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2000)}, buf)
    return buf.getvalue()[:3000]  # the zip's start, without its central directory


CASES = [
    # --- prepare: raw dumps
    Case("prepare-raw-missing", lambda t: ["prepare", "-d", "movielens", "--raw", str(t / "nope")], needles=("nope",)),
    Case("prepare-not-a-dump", lambda t: ["prepare", "-d", "movielens", "--raw", str((t / "e").mkdir() or t / "e")],
         needles=("not a MovieLens dump",)),
    Case("prepare-unknown-dataset", lambda t: ["prepare", "-d", "movielenz", "--raw", str(t)],
         needles=("unknown dataset 'movielenz'", "movielens")),
    Case("prepare-bad-header", lambda t: _prep(t, movies="id,name\n1,x\n"), needles=("movies.csv:1", "header")),
    Case("prepare-non-utf8-line-3", lambda t: _prep(t, movies=b"movieId,title,genres\n1,A (1995),Drama\n2,B\xff\xfe (1995),Drama\n"),
         needles=("movies.csv:3", "utf-8")),
    Case("prepare-flag-not-applicable", lambda t: _prep(t) + ["--min-repins", "3"], needles=("--min-repins", "movielens")),
    Case("prepare-posters-missing", lambda t: ["prepare", "-d", "movielens", "--raw",
                                               str(_ml_without_posters(t))], needles=("poster folder does not exist",)),
    Case("prepare-duplicate-rating-rows", lambda t: _prep(t, ratings="userId,movieId,rating,timestamp\n1,1,4.0,1\n"
                                                       "1,1,4.0,1\n2,2,5.0,3\n2,3,1.0,4\n2,3,1.0,4\n"),
         expect="skip", needles=("exact duplicate row (first kept)",), kind="counted skip"),
    Case("prepare-malformed-rating", lambda t: _prep(t, ratings="userId,movieId,rating,timestamp\n1,1,4.0,1\n"
                                                  "1,2,nan,2\n2,2,5.0,3\n2,3,1.0,4\n3,1,x,5\n"),
         expect="skip", needles=("malformed line",), kind="counted skip"),
    Case("prepare-unknown-movie", lambda t: _prep(t, ratings="userId,movieId,rating,timestamp\n1,1,4.0,1\n1,9,4.0,1\n"
                                               "2,2,5.0,3\n"),
         expect="skip", needles=("unknown movieId (not in the movies file)",), kind="counted skip"),
    Case("prepare-all-lines-garbage-huge", lambda t: _prep(t, movies="movieId,title,genres\n" + ("x" * 100000 + ",a,b\n") * 3),
         needles=("movies.csv", "unusable", "characters")),
    # --- prepared dataset folders
    Case("meta-binary", lambda t: _stats(t, lambda f: (f / "meta.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")),
         needles=("meta.json", "not UTF-8")),
    Case("meta-invalid-json", lambda t: _stats(t, lambda f: (f / "meta.json").write_text("{name: x")),
         needles=("meta.json", "invalid JSON")),
    Case("meta-not-object", lambda t: _stats(t, lambda f: (f / "meta.json").write_text("[1, 2]")),
         needles=("meta.json", "JSON object")),
    Case("meta-labels-null", lambda t: _stats(t, lambda f: edit_meta(f, labels=None)),
         needles=("meta.json", "'labels'", "None")),
    Case("meta-label-twice", lambda t: _stats(t, lambda f: edit_meta(f, labels=["a", "b", "a"])),
         needles=("meta.json", "'a' is listed twice")),
    Case("meta-missing-key", lambda t: _stats(t, lambda f: (f / "meta.json").write_text('{"name": "x"}')),
         needles=("meta.json", "missing key")),
    Case("items-null-image", lambda t: _stats(t, lambda f: edit_items(f, lambda d: d.assign(image=[None, *d.image[1:]]))),
         needles=("items.parquet", "null or empty image path", "rows 0")),
    Case("items-image-escapes", lambda t: _stats(t, lambda f: edit_items(f, lambda d: d.assign(image=["../x.jpg", *d.image[1:]]))),
         needles=("items.parquet", "escapes", "rows 0")),
    Case("items-null-labels", lambda t: _stats(t, lambda f: edit_items(f, lambda d: d.assign(labels=[None, *d.labels[1:]]))),
         needles=("items.parquet", "null labels", "rows 0")),
    Case("items-unknown-label", lambda t: _stats(t, lambda f: edit_items(f, lambda d: d.assign(labels=[["zz"], *d.labels[1:]]))),
         needles=("items.parquet", "vocabulary", "rows 0")),
    Case("items-duplicate-id", lambda t: _stats(t, lambda f: edit_items(f, lambda d: d.assign(item_id=["i0", "i0", "i2", "i3"]))),
         needles=("items.parquet", "duplicate item_id", "rows 0, 1")),
    Case("items-not-parquet", lambda t: _stats(t, lambda f: (f / "items.parquet").write_bytes(b"not parquet at all")),
         needles=("items.parquet", "not a readable Parquet table")),
    Case("interactions-unknown-item", lambda t: _stats(t, lambda f: pq.write_table(
        pa.table({"user_id": ["u"], "item_id": ["nope"]}), f / "interactions.parquet")),
         needles=("interactions.parquet", "unknown item_id", "rows 0")),
    Case("data-root-is-a-file", lambda t: _prep(t) + ["--data-root", _write(t / "f", "x")], needles=("f",)),
    Case("dataset-not-prepared", lambda t: ["stats", "--dataset", "movielens"], needles=("not prepared", "raysearch prepare")),
    Case("dataset-unknown", lambda t: ["stats", "--dataset", "nope"], needles=("unknown dataset 'nope'",)),
    # --- train flags and files (all refused before any data work)
    Case("train-alpha-nan", lambda t: ["train", "--alpha", "nan"], needles=("train.alpha", "finite")),
    Case("train-omega-nan", lambda t: ["train", "--omega", "nan"], needles=("train.omega", "finite")),
    Case("train-lr-nan", lambda t: ["train", "--lr", "nan"], needles=("train.lr", "finite")),
    Case("train-lr-inf", lambda t: ["train", "--lr", "inf"], needles=("train.lr", "finite")),
    Case("train-image-size-1", lambda t: ["train", "--image-size", "1"], needles=("train.image_size", ">= 16")),
    Case("train-device-cuda-no-gpu", lambda t: ["train", "--device", "cuda", "--backbone", "tiny_cnn", "--weights", "none"],
         needles=("--device cuda", "no such CUDA device")),
    Case("train-device-tpu9", lambda t: ["train", "--device", "tpu9"], needles=("train.device 'tpu9' unknown",)),
    Case("train-optimizer", lambda t: ["train", "--optimizer", "adam"], needles=("train.optimizer 'adam' unknown", "adamw")),
    Case("train-sequential-1-epoch", lambda t: ["train", "--method", "sequential", "--epochs", "1", "--backbone",
                                                "tiny_cnn", "--weights", "none"], needles=("sequential", "epochs >= 2")),
    Case("train-unknown-backbone", lambda t: ["train", "--backbone", "resnet19"], needles=("unknown backbone 'resnet19'",)),
    Case("train-huge-backbone-name", lambda t: ["train", "--backbone", "r" * 50000], needles=("unknown backbone", "characters")),
    Case("train-config-missing", lambda t: ["train", "--config", str(t / "nope.yaml")], needles=("nope.yaml",)),
    Case("train-config-binary", lambda t: ["train", "--config", _write(t / "c.yaml", b"\x00\x9f\x92\x96 bin")],
         needles=("c.yaml", "not UTF-8")),
    Case("train-config-alias-bomb", lambda t: ["train", "--config", _write(t / "bomb.yaml", BOMB)],
         needles=("bomb.yaml", "aliases")),
    Case("train-config-merge-key", lambda t: ["train", "--config", _write(t / "m.yaml", "base: &b {lr: 1}\ntrain: {<<: *b}\n")],
         needles=("m.yaml", "aliases")),
    Case("train-config-python-tag", lambda t: ["train", "--config", _write(t / "t.yaml", "train: !!python/object/apply:os.system [echo hi]\n")],
         needles=("t.yaml", "not valid YAML")),
    Case("train-config-unknown-key", lambda t: ["train", "--config", _write(t / "k.yaml", "train: {lrr: 1}\n")],
         needles=("k.yaml", "'lrr'")),
    Case("train-config-huge-value", lambda t: ["train", "--config", _write(t / "h.yaml", "train: {lr: '" + "x" * 100000 + "'}\n")],
         needles=("h.yaml", "characters")),
    Case("train-config-deep-nesting", lambda t: ["train", "--config", _write(t / "d.yaml", "[" * 5000 + "]" * 5000)],
         needles=("d.yaml",)),
    Case("train-weights-missing", lambda t: ["train", "--weights", str(t / "w.pt"), "--backbone", "tiny_cnn"],
         needles=("w.pt", "no such file")),
    Case("train-weights-empty", lambda t: ["train", "--weights", _write(t / "w.pt", b""), "--backbone", "tiny_cnn"],
         needles=("w.pt", "empty file")),
    Case("train-weights-garbage", lambda t: ["train", "--weights", _write(t / "w.pt", b"PK\x03\x04garbage"), "--backbone", "tiny_cnn"],
         needles=("w.pt", "not a loadable weights file")),
    Case("train-weights-pickled-object", lambda t: ["train", "--weights", _pickled_object(t), "--backbone", "tiny_cnn"],
         needles=("w.pt", "not a plain state dict")),
    Case("train-weights-plain-pickle", lambda t: ["train", "--weights", _write(t / "w.pt", pickle.dumps({"a": 1})),
                                                  "--backbone", "tiny_cnn"], needles=("w.pt",)),
    # --- issue 19: flawed errors, memory estimates, user-supplied model files
    Case("prepare-raw-is-a-file", lambda t: ["prepare", "-d", "movielens", "--raw", _write(t / "dump.zip", "x")],
         needles=("dump.zip: is a file, not a folder", "--raw")),
    Case("prepare-images-is-a-file", lambda t: _prep(t) + ["--images", _write(t / "posters.txt", "x")],
         needles=("posters.txt", "is a file")),
    Case("dataset-meta-deleted", lambda t: _stats(t, lambda f: (f / "meta.json").unlink()),
         needles=("meta.json is missing", "items.parquet")),
    Case("dataset-folder-empty", lambda t: ["stats", "--dataset", str((t / "e").mkdir() or t / "e")],
         needles=("not a prepared dataset folder", "no meta.json")),
    Case("dataset-is-a-file", lambda t: ["stats", "--dataset", _write(t / "ds.parquet", "x")],
         needles=("ds.parquet: is a file, not a dataset folder",)),
    Case("dataset-path-missing", lambda t: ["stats", "--dataset", str(t / "nope")],
         needles=("nope: no such dataset folder",)),
    Case("train-image-size-1e9", lambda t: ["train", "--set", "train.image_size=1000000000", "--backbone", "tiny_cnn",
                                            "--weights", "none"], needles=("train.image_size", "1000000000")),
    Case("train-batch-beyond-memory", lambda t: ["train", "--image-size", "512", "--batch-size", "100000000",
                                                 "--backbone", "tiny_cnn", "--weights", "none"],
         needles=("train.batch_size=100000000", "memory")),
    Case("predict-model-garbage-onnx", lambda t: ["predict", "--model", _write(t / "m.onnx", b"\x08\x07garbage"),
                                                  str(t / "x.jpg")], needles=("m.onnx", "ONNX")),
    Case("predict-model-truncated-pt", lambda t: ["predict", "--model", _write(t / "best.pt", _truncated_state_dict(t)),
                                                  str(t / "x.jpg")], needles=("best.pt", "truncated or corrupt")),
    Case("predict-model-truncated-ts", lambda t: ["predict", "--model", _write(t / "m.ts", _truncated_state_dict(t)),
                                                  str(t / "x.jpg")], needles=("m.ts", "truncated or corrupt")),
    Case("predict-model-dir-empty-weights", lambda t: ["predict", "--model", _model_dir_with(t, b""), str(t / "x.jpg")],
         needles=("model.pt", "empty file")),
    Case("export-model-dir-truncated-weights", lambda t: ["export", "--model", _model_dir_with(t, _truncated_state_dict(t)),
                                                          "--format", "torchscript", "--out", str(t / "out.ts")],
         needles=("model.pt", "truncated or corrupt")),
    Case("export-model-dir-pickle-payload", lambda t: ["export", "--model", _model_dir_with(t, payload=True),
                                                       "--format", "torchscript", "--out", str(t / "out.ts")],
         needles=("model.pt", "holds pickled Python objects", "never runs")),
    Case("predict-model-json-duplicate-key", lambda t: ["predict", "--model", _dup_key_model_json(t), str(t / "x.jpg")],
         needles=("model.json", "'label_names' is given twice")),
    # --- cf / download flags
    Case("cf-unknown-model", lambda t: ["cf", "--model", "svdpp"], needles=("unknown CF model 'svdpp'",)),
    Case("cf-lr-nan", lambda t: ["cf", "--lr", "nan"], needles=("cf.lr", "finite")),
    Case("cf-also-bad", lambda t: ["cf", "--also", "bpr:lr"], needles=("--also",)),
    Case("cf-also-alias", lambda t: ["cf", "--also", "bpr:lr=*x"], needles=("--also",)),
    Case("download-movielens", lambda t: ["download-images", "-d", "movielens", "--raw", str(t)], needles=("movielens", "image URLs")),
    Case("download-workers-0", lambda t: ["download-images", "-d", "toys", "--raw", str(t), "--workers", "0"],
         needles=("workers >= 1",)),
    Case("download-timeout-nan", lambda t: ["download-images", "-d", "toys", "--raw", str(t), "--timeout", "nan"],
         needles=("finite",)),
]


def _ml_without_posters(t: Path) -> Path:
    raw = make_ml(t / "raw")
    for p in (raw / "posters").iterdir():
        p.unlink()
    (raw / "posters").rmdir()
    return raw


def error_line(res) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, res.stderr
    assert len(lines[0]) < 2200
    return lines[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path):
    home = tmp_path / "home"
    argv = case.setup(tmp_path)
    if argv[0] != "download-images" and "--data-root" not in argv:  # download-images writes next to --raw
        argv += ["--data-root", str(home)]
    before, before_inputs = snapshot(home), snapshot(tmp_path)
    res = runner.invoke(app, argv)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if case.expect == "error":
        assert res.exit_code == case.code, (res.exit_code, res.stdout, res.stderr)
        line = error_line(res)
        for n in case.needles:
            assert n in line, line
        for advice in ("weights_only", "If you are seeing this error", "miniz", "[ONNXRuntimeError]"):
            assert advice not in line, line  # what is wrong with the file, never a library's advice
        assert not Path("PAYLOAD_RAN").exists() and not (tmp_path / "PAYLOAD_RAN").exists()
        assert snapshot(home) == before, "an error must write nothing under the data root"
        after_inputs = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("home/")}
        assert after_inputs == {k: v for k, v in before_inputs.items() if not k.startswith("home/")}, \
            "inputs must not change"
    else:
        assert res.exit_code == 0, (res.stdout, res.stderr)
        rep = json.loads(res.stdout)
        reasons = {s["reason"]: s["count"] for s in rep["skipped"]}
        for n in case.needles:
            assert reasons.get(n, 0) >= 1, reasons


def test_duplicate_rating_rows_counted_once(tmp_path):
    raw = make_ml(tmp_path / "raw", ratings="userId,movieId,rating,timestamp\n1,1,4.0,1\n1,1,4.0,1\n1,1,4.0,1\n"
                                           "2,2,5.0,3\n1,1,3.0,9\n")
    res = runner.invoke(app, ["prepare", "-d", "movielens", "--raw", str(raw), "--data-root", str(tmp_path / "h"), "--json"])
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout)
    dup = next(s for s in rep["skipped"] if s["reason"] == "exact duplicate row (first kept)")
    assert dup["count"] == 2 and dup["examples"][0] == "ratings.csv:3: user 1, movieId 1"
    assert rep["kept"]["interactions"] == 3  # a re-rating (other rating/time) is not an exact duplicate


def test_prepare_existing_without_overwrite_keeps_it(tmp_path):
    home = tmp_path / "home"
    argv = ["prepare", "-d", "movielens", "--raw", str(make_ml(tmp_path / "raw")), "--data-root", str(home)]
    assert runner.invoke(app, argv).exit_code == 0
    before = snapshot(home)
    res = runner.invoke(app, argv)
    assert res.exit_code == 2 and "pass --overwrite" in error_line(res)
    assert snapshot(home) == before


def test_prepare_while_another_runs_refuses(tmp_path):
    from raysearch import _io

    home = tmp_path / "home"
    argv = ["prepare", "-d", "movielens", "--raw", str(make_ml(tmp_path / "raw")), "--data-root", str(home)]
    with _io.file_lock(home / "datasets" / ".movielens.lock"):
        res = runner.invoke(app, argv)
    assert res.exit_code == 2
    assert "another `raysearch prepare` of it is running" in error_line(res)
    assert not (home / "datasets" / "movielens").exists()
    assert [p.name for p in (home / "datasets").iterdir()] == [".movielens.lock"]


def test_debug_shows_the_traceback_and_plain_bugs_are_not_swallowed():
    from raysearch._cli import guarded
    from raysearch.registry import UnknownNameError

    res = runner.invoke(app, ["--debug", "stats", "--dataset", "nope"])
    assert isinstance(res.exception, UnknownNameError)
    with pytest.raises(ZeroDivisionError):
        guarded(lambda: 1 / 0)
    with pytest.raises(ValueError):  # a bare ValueError is a bug, not bad input
        guarded(lambda: int("x"))


def test_json_stdout_is_the_json_alone(tmp_path, monkeypatch):
    """Whatever a library prints while a --json command runs goes to stderr."""
    import raysearch.data as data_pkg

    real = data_pkg.dataset_stats

    def noisy(ds):
        print("a library banner on stdout")
        return real(ds)

    monkeypatch.setattr(data_pkg, "dataset_stats", noisy)
    folder = make_folder(tmp_path / "ds")
    res = runner.invoke(app, ["stats", "--dataset", str(folder), "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["images"] == 4
    assert "banner" in res.stderr
    res = runner.invoke(app, ["stats", "--dataset", str(folder)])  # without --json: stdout as usual
    assert "banner" in res.stdout


def test_verbose_flag_shows_info_logs(tmp_path):
    folder = make_folder(tmp_path / "ds")
    (folder / "images" / "0.jpg").write_bytes((folder / "images" / "1.jpg").read_bytes())
    res = runner.invoke(app, ["-v", "stats", "--dataset", str(folder), "--json"])
    assert res.exit_code == 0
    assert "changed since" in res.stderr
    res = runner.invoke(app, ["-q", "stats", "--dataset", str(folder), "--rehash", "--json"])
    assert res.exit_code == 0 and "changed since" not in res.stderr
    import logging

    logger = logging.getLogger("raysearch")  # the command's logging setup is undone when it ends
    assert logger.propagate and logger.level == logging.NOTSET and not logger.handlers


@pytest.mark.timeout(180)
@pytest.mark.parametrize("argv", [
    ["cf", "--dataset", "synthetic-tiny", "--epochs", "2", "--no-eval", "--json"],
    ["train", "--dataset", "synthetic-tiny", "--backbone", "tiny_cnn", "--weights", "none", "--image-size", "16",
     "--epochs", "1", "--method", "mtl", "--cf-model", "bpr", "--json"],
], ids=["cf", "train"])
def test_real_json_commands_print_only_json(argv, home):
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, (res.stderr[-2000:], res.exception)
    assert isinstance(json.loads(res.stdout), dict)
