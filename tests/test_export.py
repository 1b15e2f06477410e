"""raysearch export: TorchScript and ONNX files that plain torch.jit / onnxruntime can use, carrying the
vocabulary, image size, normalisation and thresholds, with scores equal to PyTorch's within 1e-4."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import cli, split_image_paths, train_tiny

from raysearch.export import ExportError, export_model, load_exported
from raysearch.model.io import load_model
from raysearch.predict import predict

ATOL = 1e-4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_plain_load_matches_pytorch(trained, tmp_path):
    run, data, res, model_dir = trained
    out = tmp_path / "model.ts"
    r = cli("export", "--model", str(model_dir), "--format", "torchscript", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["max_abs_diff"] <= ATOL
    r = cli("export", "--model", str(model_dir), "--format", "torchscript", "--out", str(out))
    assert r.exit_code == 2 and "already exists" in r.output  # never replaced silently
    r = cli("export", "--model", str(model_dir), "--format", "torchscript", "--out", str(out), "--overwrite", "--json")
    assert r.exit_code == 0, r.output
    # plain torch.jit.load: uint8 images in, scores out; metadata in the extra file
    extra = {"raysearch.json": ""}
    m = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["raysearch.json"])
    assert meta["label_names"] == data.label_names and meta["image_size"] == 16
    assert meta["thresholds"] == json.loads((model_dir / "model.json").read_text())["thresholds"]
    x = torch.from_numpy(np.ascontiguousarray(data.images[data.split.test]))
    with torch.inference_mode():
        got = m(x).numpy()
    assert np.abs(got - res.test_scores).max() <= ATOL
    assert "cf_head" not in "".join(k for k, _ in m.named_parameters())  # classification head only


def test_onnx_plain_onnxruntime_matches_pytorch(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")  # a dev/export extra: installed in CI
    run, data, res, model_dir = trained
    out = tmp_path / "model.onnx"
    rep = export_model(load_model(model_dir), "onnx", out)
    assert rep.max_abs_diff <= ATOL and out.is_file()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["raysearch"])
    assert meta["label_names"] == data.label_names and meta["mean"] == [0.485, 0.456, 0.406]
    (inp,) = sess.get_inputs()
    assert inp.type == "tensor(uint8)" and list(inp.shape[1:]) == [16, 16, 3]
    got = sess.run(None, {inp.name: np.ascontiguousarray(data.images[data.split.test])})[0]
    assert np.abs(got - res.test_scores).max() <= ATOL


def test_predict_with_an_exported_file(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    run, data, res, model_dir = trained
    paths = split_image_paths(data)
    ref = predict(model_dir, paths)
    for fmt, name in (("torchscript", "m.pt"), ("onnx", "m.onnx")):
        f = export_model(load_model(model_dir), fmt, tmp_path / name).path
        pred = load_exported(f)
        assert pred.info.label_names == data.label_names and pred.info.threshold_source == "val_f1"
        got = predict(f, paths)
        assert np.abs(got.scores - ref.scores).max() <= ATOL
        assert list(got.table["top_labels"]) == list(ref.table["top_labels"])
        r = cli("predict", "--model", str(f), *paths[:2], "--json")
        assert r.exit_code == 0, r.output
        assert len(json.loads(r.stdout)["predictions"]) == 2
    # an exported file carries no split: asking for one is a one-line error
    r = cli("predict", "--model", str(tmp_path / "m.pt"), "--dataset", "synthetic-tiny", "--split", "test")
    assert r.exit_code == 2 and "no split config" in r.output


def test_export_errors_are_one_line(trained, tmp_path):
    run, data, res, model_dir = trained
    r = cli("export", "--model", str(model_dir), "--format", "tflite", "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and "onnx, torchscript" in r.output  # EXPORT_FORMATS.names()
    r = cli("export", "--model", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "x.pt"))
    assert r.exit_code == 2 and ".onnx" in r.output
    r = cli("export", "--model", str(tmp_path / "nope"), "--format", "onnx", "--out", str(tmp_path / "x.onnx"))
    assert r.exit_code == 2 and "nope" in r.output
    with pytest.raises(ExportError, match="--format"):
        export_model(load_model(model_dir), "coreml", tmp_path / "x")
    not_exported = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(1)}, not_exported)
    r = cli("predict", "--model", str(not_exported), split_image_paths(data)[0])
    assert r.exit_code == 2 and "not a raysearch model" in r.output


# ----------------------------------------------------------------------------- issue 19: bad files, write failures

ADVICE = ("weights_only", "If you are seeing this error", "miniz", "[ONNXRuntimeError]", "Traceback")


def _one_error_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.exit_code, r.stderr)
    for advice in ADVICE:  # what is wrong with the file, never a library's advice
        assert advice not in lines[0], lines[0]
    return lines[0]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_truncated_or_damaged_model_files_are_one_line_errors(trained, tmp_path):
    """`predict --model truncated.onnx` was onnxruntime's InvalidProtobuf traceback; a truncated model.pt
    on `export` was torch's "internal miniz error ... If you are seeing this error" text; a damaged
    TorchScript file loaded silently (torch checks no CRC)."""
    pytest.importorskip("onnxruntime")
    run, data, res, model_dir = trained
    image = split_image_paths(data)[0]
    files = {fmt: export_model(load_model(model_dir), fmt, tmp_path / f"m.{fmt}").path for fmt in ("torchscript", "onnx")}
    cases = []
    for fmt, f in files.items():
        raw = f.read_bytes()
        for frac in (0.05, 0.5, 0.99):
            cut = tmp_path / f"cut{int(frac * 100)}-{f.name}"
            cut.write_bytes(raw[:int(len(raw) * frac)])
            cases.append((cut, "truncated or corrupt"))
    damaged = bytearray(files["torchscript"].read_bytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 8] = bytes(b ^ 0xFF for b in damaged[len(damaged) // 2:len(damaged) // 2 + 8])
    (tmp_path / "damaged.ts").write_bytes(damaged)
    cases.append((tmp_path / "damaged.ts", "corrupt"))
    (tmp_path / "empty.onnx").write_bytes(b"")
    cases.append((tmp_path / "empty.onnx", "empty file"))
    cut_dir = tmp_path / "cut_dir"  # a model directory whose model.pt was cut short
    shutil.copytree(model_dir, cut_dir)
    (cut_dir / "model.pt").write_bytes((model_dir / "model.pt").read_bytes()[:3000])
    cases.append((cut_dir, "truncated or corrupt"))
    for path, needle in cases:
        line = _one_error_line(cli("predict", "--model", str(path), image))
        assert str(path) in line and needle in line, line
    for model in (cut_dir, tmp_path / "cut50-m.torchscript"):
        line = _one_error_line(cli("export", "--model", str(model), "--format", "torchscript",
                                   "--out", str(tmp_path / "out.ts")))
        assert "truncated or corrupt" in line, line
    assert not (tmp_path / "out.ts").exists()


def _cli_under_limit(blocks: int, *argv: str, cwd=None) -> subprocess.CompletedProcess:
    """The real `raysearch` command in a shell with `ulimit -f BLOCKS` (1 KiB blocks), bounded by a timeout."""
    cmd = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "raysearch.cli", *argv))
    return subprocess.run(["bash", "-c", f"ulimit -f {blocks}; exec {cmd}"], capture_output=True, text=True,
                          timeout=240, cwd=cwd)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_under_a_file_size_limit_is_one_line_and_leaves_no_temp_file(trained, tmp_path, fmt):
    """`(ulimit -f 20; raysearch export --format torchscript --out m.ts)` was SIGABRT from torch.jit.save
    (c10::Error "unexpected pos", 49 C++ frames) and a `.m.ts.*.tmp` left beside --out."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    run, data, res, model_dir = trained
    out = tmp_path / "out" / ("m.onnx" if fmt == "onnx" else "m.ts")
    out.parent.mkdir()
    r = _cli_under_limit(20, "export", "--model", str(model_dir), "--format", fmt, "--out", str(out))
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])  # not -6 (SIGABRT) nor -25 (SIGXFSZ)
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr and "frame #" not in r.stderr, r.stderr[-3000:]
    assert str(out) in lines[0] and "file too large" in lines[0] and "ulimit -f 20" in lines[0], lines[0]
    assert list(out.parent.iterdir()) == []  # neither the file nor a temp file


@pytest.mark.timeout(600)
def test_export_write_failing_midway_is_one_line_and_leaves_no_temp_file(trained, tmp_path):
    """The same with the up-front size check off: the kernel's EFBIG in the middle of the write."""
    run, data, res, model_dir = trained
    out = tmp_path / "out" / "m.ts"
    out.parent.mkdir()
    script = ("import sys; import raysearch._io as io; io.check_free_space = lambda *a, **k: None; "
              "from raysearch.cli import main; sys.argv[0] = 'raysearch'; main()")
    cmd = " ".join(shlex.quote(a) for a in (sys.executable, "-c", script, "export", "--model", str(model_dir),
                                            "--format", "torchscript", "--out", str(out)))
    r = subprocess.run(["bash", "-c", f"ulimit -f 20; exec {cmd}"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert str(out) in lines[0] and "file too large" in lines[0] and "ulimit -f 20" in lines[0], lines[0]
    assert list(out.parent.iterdir()) == []


@pytest.mark.timeout(600)
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_predict_out_under_a_file_size_limit_names_the_out_file_and_the_limit(trained, tmp_path, suffix):
    """`predict --out` under `ulimit -f` was "File too large" / "Error writing bytes ... [errno 27]",
    naming no file."""
    run, data, res, model_dir = trained
    out = tmp_path / "out" / f"p{suffix}"
    out.parent.mkdir()
    images = split_image_paths(data)
    r = _cli_under_limit(1, "predict", "--model", str(model_dir), "--out", str(out), *images)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert str(out) in lines[0] and "file too large" in lines[0] and "ulimit -f 1" in lines[0], lines[0]
    assert "errno" not in lines[0]
    assert list(out.parent.iterdir()) == []
