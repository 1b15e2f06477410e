"""raysearch export: TorchScript and ONNX files that plain torch.jit / onnxruntime can use, carrying the
vocabulary, image size, normalisation and thresholds, with scores equal to PyTorch's within 1e-4."""
from __future__ import annotations

import json

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
    assert r.exit_code == 2 and "torchscript, onnx" in r.output
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
