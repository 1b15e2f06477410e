"""raysearch predict: the saved model directory (val-F1 thresholds), scores of new images equal to
fit's test predictions (Python API, CLI, Ray Data batch path), unreadable images as named skips,
other-dataset models as one-line errors, legacy checkpoints and sweep run directories."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from raysearch.cli import app
from raysearch.config import RunConfig, SplitConfig, TrainConfig, dump_run_config
from raysearch.model.io import (META_FILE, ModelMismatchError, check_compatible, f1_thresholds, load_model,
                                save_model, score_images)
from raysearch.predict import SCORE_PREFIX, collect_images, predict, predict_ray, write_predictions

torch.set_num_threads(1)
DATASET = "synthetic-tiny"


def tiny_run(**kw) -> RunConfig:
    t = dict(method="image_only", backbone="tiny_cnn", weights="none", image_size=16, epochs=2, batch_size=16, seed=0)
    t.update(kw)
    return RunConfig(dataset=DATASET, split=SplitConfig(seed=0), train=TrainConfig(**t))


def train_tiny(out_dir: Path):
    """(run, data, fit result, model dir) for a 2-epoch tiny_cnn on synthetic-tiny (seeded, ~2 s)."""
    from raysearch.train import fit, prepare_training_data

    run = tiny_run()
    data = prepare_training_data(run)
    res = fit(run, data, progress=False)
    return run, data, res, save_model(out_dir, res.best_state, run, data, res)


def split_image_paths(data) -> list[str]:
    from raysearch.data.registry import load_dataset

    ds = load_dataset(DATASET)
    return [str(ds.image_path(int(i))) for i in data.split.test]




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("model") / "tiny")


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_model_directory_holds_what_inference_needs(trained):
    run, data, res, model_dir = trained
    assert {p.name for p in model_dir.iterdir()} >= {"model.pt", META_FILE, "config.yaml", "result.json"}
    meta = json.loads((model_dir / META_FILE).read_text())
    assert meta["dataset"] == DATASET and meta["fingerprint"] == data.fingerprint
    assert meta["label_names"] == data.label_names and meta["backbone"] == "tiny_cnn" and meta["image_size"] == 16
    assert meta["threshold_source"] == "val_f1" and len(meta["thresholds"]) == len(data.label_names)
    assert meta["val_positives"] == data.labels[data.split.val].sum(0).astype(int).tolist()
    assert meta["val_map"] == pytest.approx(res.best_val_map)
    # the stored thresholds are the F1-optimal cuts of the val predictions
    m = load_model(model_dir)
    val = data.split.val
    thr, f1 = f1_thresholds(m.scores(data.images[val]), data.labels[val])
    assert np.allclose(thr, meta["thresholds"]) and f1 == pytest.approx(meta["val_f1"])
    assert torch.load(model_dir / "model.pt", weights_only=True).keys() == res.best_state.keys()


def test_thresholds_are_cut_on_fits_own_val_scores(trained, tmp_path, monkeypatch):
    """fit keeps the best epoch's val scores; save_model cuts the thresholds on them rather than
    scoring the val images again (for a frozen trunk a full backbone pass, ~11 s of a posters trial),
    and scores the images when the given scores are not this split's."""
    import raysearch.model.io as mio
    from raysearch.metrics import mean_average_precision

    run, data, res, model_dir = trained
    val = data.split.val
    m = load_model(model_dir)
    assert res.val_scores.shape == (len(val), len(data.label_names))
    assert mean_average_precision(data.labels[val], res.val_scores) == pytest.approx(res.best_val_map)
    np.testing.assert_allclose(res.val_scores, m.scores(data.images[val]), atol=1e-5)  # the same function
    given = np.random.default_rng(0).random(res.val_scores.shape).astype(np.float32)
    real_scoring = mio.score_images

    def no_scoring(*a, **kw):
        raise AssertionError("the val images were scored again")

    monkeypatch.setattr(mio, "score_images", no_scoring)
    meta = json.loads((save_model(tmp_path / "given", res.best_state, run, data, {}, val_scores=given)
                       / META_FILE).read_text())
    assert np.allclose(meta["thresholds"], f1_thresholds(given, data.labels[val])[0])
    save_model(tmp_path / "from-result", res.best_state, run, data, res)  # a TrainResult brings its own
    monkeypatch.setattr(mio, "score_images", real_scoring)
    meta = json.loads((save_model(tmp_path / "other", res.best_state, run, data, {}, val_scores=given[:-1])
                       / META_FILE).read_text())
    assert np.allclose(meta["thresholds"], f1_thresholds(m.scores(data.images[val]), data.labels[val])[0])


def test_fit_keeps_the_val_scores_of_the_best_epoch_not_the_last(tmp_path, monkeypatch):
    """The scores save_model cuts on belong to the weights it saves: epoch 1 is made the best of 3."""
    import raysearch.train.loop as loop
    from raysearch.train import fit, prepare_training_data

    run = tiny_run(epochs=3)
    data = prepare_training_data(run)
    real, seen = loop.mean_average_precision, []

    def epoch_one_is_best(labels, scores):
        seen.append(np.array(scores, copy=True))
        return (0.9, 0.5, 0.4)[len(seen) - 1] if len(seen) <= 3 else real(labels, scores)

    monkeypatch.setattr(loop, "mean_average_precision", epoch_one_is_best)
    res = fit(run, data, progress=False)
    assert res.best_epoch == 1 and res.epochs_run == 3 and len(seen) == 4  # 3 val passes + the test mAP
    np.testing.assert_array_equal(res.val_scores, seen[0])
    assert not np.allclose(seen[0], seen[2])  # the last epoch's weights score differently
    m = load_model(save_model(tmp_path / "m", res.best_state, run, data, res))
    np.testing.assert_allclose(m.scores(data.images[data.split.val]), seen[0], atol=1e-5)


def test_mlp_trunk_model_scores_like_fit(tmp_path):
    """train.trunk=mlp (frozen backbone, cached pooled features, shared MLP under the heads)."""
    from raysearch.train import fit, prepare_training_data

    run = tiny_run(trunk="mlp", trunk_hidden=16)
    data = prepare_training_data(run)
    res = fit(run, data, progress=False)
    pred = predict(save_model(tmp_path / "m", res.best_state, run, data, res), split_image_paths(data))
    np.testing.assert_allclose(pred.scores, res.test_scores, atol=1e-5)


def test_f1_thresholds_pick_the_best_cut():
    scores = np.array([[0.9, 0.2], [0.8, 0.1], [0.3, 0.3], [0.1, 0.05]], np.float32)
    labels = np.array([[1, 0], [1, 0], [0, 0], [1, 0]], np.float32)
    thr, f1 = f1_thresholds(scores, labels, min_positives=1)
    # class 0: cutting below 0.8 gives P=1 R=2/3 (F1 0.8); taking all four gives F1 6/7: the best
    assert f1[0] == pytest.approx(6 / 7) and 0 < thr[0] <= 0.1
    assert thr[1] == 0.5 and f1[1] is None  # no positive: the default cut, said as None
    thr, f1 = f1_thresholds(scores, labels)  # 3 positives < MIN_VAL_POSITIVES: too few to fit a cut
    assert thr[0] == 0.5 and f1[0] is None


def test_scoring_a_split_by_index_gathers_a_batch_at_a_time(trained):
    """score_images(images, index=idx) == score_images(images[idx]) exactly, without copying the split
    (a shared read-only array stays unwritable and un-copied)."""
    run, data, res, model_dir = trained
    scorer = load_model(model_dir).module
    images = np.array(data.images)
    images.setflags(write=False)
    idx = np.asarray(data.split.val)[::-1]
    np.testing.assert_array_equal(score_images(scorer, images, batch_size=7, index=idx),
                                  score_images(scorer, images[idx], batch_size=7))
    assert score_images(scorer, images, index=idx[:0]).shape == (0, len(data.label_names))


def test_scores_fill_one_array_whatever_the_batch_size(trained):
    """Both scoring paths write each batch into one preallocated array (no per-batch list pinning
    the heap): a batch size that does not divide the items, one batch for all, and no items at all
    give the same scores and shapes."""
    from raysearch.train.evaluate import predict as fit_predict
    from raysearch.train.inputs import Inputs
    from raysearch.train.loop import build_model

    run, data, res, model_dir = trained
    model, split_at = build_model(run, data)
    model.load_state_dict(res.best_state)
    items = np.asarray(data.split.test)
    inputs = Inputs(source=data.images, split_at=split_at, device=torch.device("cpu"), aug_gen=torch.Generator())
    n_labels = len(data.label_names)
    small, whole = (fit_predict(model, inputs, items, n_labels, batch_size=b) for b in (7, 10_000))
    assert small.shape == (len(items), n_labels) and small.dtype == np.float32
    np.testing.assert_allclose(small, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(small, res.test_scores, rtol=0, atol=1e-6)  # what fit itself scored
    assert fit_predict(model, inputs, items[:0], n_labels).shape == (0, n_labels)
    scorer = load_model(model_dir).module
    np.testing.assert_allclose(score_images(scorer, data.images[items], batch_size=7),
                               score_images(scorer, data.images[items], batch_size=10_000), rtol=0, atol=1e-6)


def test_python_api_scores_equal_fit_test_predictions(trained):
    run, data, res, model_dir = trained
    pred = predict(model_dir, split_image_paths(data), top_k=2)
    assert not pred.skipped and len(pred.table) == len(data.split.test)
    np.testing.assert_array_equal(pred.scores, res.test_scores)
    row = pred.table.iloc[0]
    assert len(row["top_labels"]) == 2 and row["top_scores"][0] >= row["top_scores"][1]
    thr = np.asarray(json.loads((model_dir / META_FILE).read_text())["thresholds"])
    s0 = res.test_scores[0]
    assert set(row["labels"]) == {data.label_names[j] for j in np.flatnonzero(s0 >= thr)}
    # a global --threshold replaces the per-class cuts
    all_on = predict(model_dir, split_image_paths(data)[:3], threshold=0.0)
    assert all(len(ls) == len(data.label_names) for ls in all_on.table["labels"])


def test_cli_predict_files_and_dataset_split(trained, tmp_path):
    run, data, res, model_dir = trained
    paths = split_image_paths(data)
    r = cli("predict", "--model", str(model_dir), "--dataset", DATASET, "--split", "test", "--json", "--top-k", "5")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_images"] == len(paths) and out["n_skipped"] == 0
    got = np.array([[t["score"] for t in sorted(p["top"], key=lambda t: data.label_names.index(t["label"]))]
                    for p in out["predictions"]])
    np.testing.assert_allclose(got, res.test_scores, atol=1e-6)
    for suffix in (".csv", ".parquet", ".jsonl"):
        f = tmp_path / f"pred{suffix}"
        r = cli("predict", "--model", str(model_dir), *paths, "--out", str(f))
        assert r.exit_code == 0, r.output
        df = {".csv": pd.read_csv, ".parquet": pd.read_parquet}.get(suffix, lambda p: pd.read_json(p, lines=True))(f)
        np.testing.assert_allclose(df[[SCORE_PREFIX + n for n in data.label_names]].to_numpy(), res.test_scores,
                                   atol=1e-6)
        assert list(df["image"]) == paths
    assert json.loads(pd.read_csv(tmp_path / "pred.csv")["top_labels"][0])[0] in data.label_names
    # a file the user names is never replaced silently: refused before any work, --overwrite replaces it
    before = (tmp_path / "pred.csv").read_bytes()
    r = cli("predict", "--model", str(model_dir), paths[0], "--out", str(tmp_path / "pred.csv"))
    assert r.exit_code == 2 and "already exists" in r.output and "--overwrite" in r.output
    assert (tmp_path / "pred.csv").read_bytes() == before
    r = cli("predict", "--model", str(model_dir), paths[0], "--out", str(tmp_path / "pred.csv"), "--overwrite")
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "pred.csv")) == 1
    (tmp_path / "dir.csv").mkdir()  # a folder is never a target, --overwrite or not
    r = cli("predict", "--model", str(model_dir), paths[0], "--out", str(tmp_path / "dir.csv"), "--overwrite")
    assert r.exit_code == 2 and "is a folder" in r.output
    # a leftover .shards folder only matters to batch mode, which writes it
    (tmp_path / "solo.csv.shards").mkdir()
    r = cli("predict", "--model", str(model_dir), paths[0], "--out", str(tmp_path / "solo.csv"), "--no-batch")
    assert r.exit_code == 0, r.output
    r = cli("predict", "--model", str(model_dir), paths[0], "--out", str(tmp_path / "p.txt"))
    assert r.exit_code == 2 and "--out" in r.output and ".csv" in r.output


def copy_with_bad_files(paths: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copy(p, folder / Path(p).name)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_corrupt_image_is_a_named_skip(trained, tmp_path):
    run, data, res, model_dir = trained
    paths = split_image_paths(data)[:4]
    folder = copy_with_bad_files(paths, tmp_path / "in")
    r = cli("predict", "--model", str(model_dir), str(folder), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_images"] == 4 and out["n_skipped"] == 1 and out["n_ignored"] == 1
    assert out["skipped"][0]["image"].endswith("corrupt.jpg") and out["skipped"][0]["reason"]
    assert out["ignored"][0].endswith("notes.txt")
    r = cli("predict", "--model", str(model_dir), str(folder))
    assert r.exit_code == 0 and "skipped 1 unreadable image(s)" in r.output and "corrupt.jpg" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("predict", "--model", str(model_dir), str(empty))
    assert r.exit_code == 2 and "no images found" in r.output
    r = cli("predict", "--model", str(model_dir), str(tmp_path / "missing.jpg"))
    assert r.exit_code == 2 and "missing.jpg" in r.output


def other_dataset(folder: Path, src_images: list[str]) -> Path:
    from raysearch.data.format import write_dataset

    (folder / "images").mkdir(parents=True)
    for i, p in enumerate(src_images):
        shutil.copy(p, folder / "images" / f"{i}.png")
    items = pd.DataFrame({"item_id": [str(i) for i in range(len(src_images))],
                          "image": [f"images/{i}.png" for i in range(len(src_images))],
                          "labels": [["cat"] if i % 2 else ["dog"] for i in range(len(src_images))]})
    inter = pd.DataFrame({"user_id": ["u0"] * len(src_images), "item_id": items["item_id"]})
    return write_dataset(folder, items, inter, name="pets", source="test")


def test_model_from_another_dataset_is_a_clear_error(trained, tmp_path):
    run, data, res, model_dir = trained
    pets = other_dataset(tmp_path / "pets", split_image_paths(data)[:4])
    r = cli("predict", "--model", str(model_dir), "--dataset", str(pets), "--split", "all")
    assert r.exit_code == 2
    line = r.output.strip()
    assert "\n" not in line and "trained on dataset 'synthetic-tiny'" in line and "'pets'" in line
    assert "label vocabulary differs" in line and "cat" in line
    info = load_model(model_dir).info
    with pytest.raises(ModelMismatchError, match="backbone is 'tiny_cnn', not 'resnet18'"):
        check_compatible(info, backbone="resnet18")
    with pytest.raises(ModelMismatchError, match="another order"):
        check_compatible(info, label_names=info.label_names[::-1])
    # weights of another architecture: named, one line
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    meta = json.loads((bad / META_FILE).read_text())
    (bad / META_FILE).write_text(json.dumps({**meta, "backbone": "mobilenet_v3_small"}))
    r = cli("predict", "--model", str(bad), split_image_paths(data)[0])
    assert r.exit_code == 2 and "do not match backbone 'mobilenet_v3_small'" in r.output


def test_legacy_checkpoint_and_sweep_run_directory(trained, tmp_path):
    run, data, res, model_dir = trained
    legacy = tmp_path / "run" / "trial_a_00000_0_x" / "checkpoint_000000"
    legacy.mkdir(parents=True)
    torch.save(res.best_state, legacy / "model.pt")
    dump_run_config(run, legacy / "config.yaml")
    m = load_model(legacy)
    assert m.info.thresholds == [0.5] * len(data.label_names) and m.info.threshold_source == "default"
    assert any("no thresholds" in n and "0.5" in n for n in m.info.notes)
    assert m.info.label_names == data.label_names  # read from the dataset the config names
    np.testing.assert_allclose(m.scores(data.images[data.split.test]), res.test_scores, atol=1e-6)
    # a sweep run directory: the best trial (by val mAP) is the model; a moved run dir still resolves
    worse = tmp_path / "run" / "trial_b_00001_1_y" / "checkpoint_000000"
    shutil.copytree(model_dir, worse)
    rows = [dict(trial_id="a", method="image_only", weighting="uniform", best_val_map=0.9, test_map=0.5, epochs_run=2,
                 stop_reason="completed", wall_time_s=1.0, train_time_s=1.0, checkpoint="/elsewhere/trial_a_00000_0_x/checkpoint_000000"),
            dict(trial_id="b", method="image_only", weighting="uniform", best_val_map=0.4, test_map=0.5, epochs_run=2,
                 stop_reason="completed", wall_time_s=1.0, train_time_s=1.0, checkpoint=str(worse))]
    df = pd.DataFrame(rows)
    df["config"] = json.dumps({"dataset": DATASET})
    df.to_parquet(tmp_path / "run" / "results.parquet")
    m = load_model(tmp_path / "run")
    assert m.info.source == str(legacy) and any("best trial a" in n for n in m.info.notes)
    r = cli("predict", "--model", str(tmp_path / "run"), split_image_paths(data)[0])
    assert r.exit_code == 0 and "best trial a" in r.output and "0.5" in r.output


def test_train_out_saves_a_model_directory(trained, tmp_path):
    run, data, res, _ = trained
    out = tmp_path / "cli-model"
    r = cli("train", "--dataset", DATASET, "--method", "image_only", "--backbone", "tiny_cnn", "--weights", "none",
            "--image-size", "16", "--epochs", "2", "--batch-size", "16", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "result.json").read_text())["test_map"] == pytest.approx(res.test_map)
    pred = predict(out, split_image_paths(data))  # CPU training is deterministic: the same model as fit's
    np.testing.assert_array_equal(pred.scores, res.test_scores)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_data_batch_path(trained, ray_session, tmp_path):
    """map_batches with an actor pool: shards + merged file, same scores, skips counted and named."""
    run, data, res, model_dir = trained
    paths = split_image_paths(data)
    folder = copy_with_bad_files(paths, tmp_path / "in")
    out = tmp_path / "pred.parquet"
    images, ignored = collect_images([folder])
    batch = predict_ray(model_dir, paths=images, out=out, workers=1, batch_size=8)
    assert out.is_file() and batch.extra["n_shards"] >= 1
    assert [Path(p).name for p, _ in batch.skipped] == ["corrupt.jpg"]
    local = predict(model_dir, paths=images)
    assert list(batch.table["image"]) == list(local.table["image"])  # input order kept
    np.testing.assert_allclose(batch.scores, local.scores, atol=1e-6)
    merged = pd.read_parquet(out)
    assert len(merged) == len(paths) and list(merged["labels"].map(list)) == list(local.table["labels"])
    # the CLI's batch mode (forced with --batch) on the same Ray
    out2 = tmp_path / "cli.jsonl"
    r = cli("predict", "--model", str(model_dir), str(folder), "--batch", "--workers", "1", "--out", str(out2))
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable" in r.output and len(pd.read_json(out2, lines=True)) == len(paths)
    r = cli("predict", "--model", str(model_dir), str(folder), "--batch")
    assert r.exit_code == 2 and "--out" in r.output
    # batch mode writes <out>.shards/: an existing one is refused too (nothing else written yet)
    (tmp_path / "fresh.jsonl.shards").mkdir()
    r = cli("predict", "--model", str(model_dir), str(folder), "--batch", "--workers", "1",
            "--out", str(tmp_path / "fresh.jsonl"))
    assert r.exit_code == 2 and "fresh.jsonl.shards already exists" in r.output
    assert not (tmp_path / "fresh.jsonl").exists()


def test_write_predictions_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        write_predictions(pd.DataFrame({"image": []}), tmp_path / "x.xlsx")
