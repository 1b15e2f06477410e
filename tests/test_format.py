"""The canonical dataset folder: writing, loading, validation errors, fingerprint, stats."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysearch.data import DatasetError, dataset_stats, load_folder, write_dataset
from raysearch.data.format import INTERACTIONS_FILE, ITEMS_FILE, ITEMS_SCHEMA, META_FILE, gini


def _tables():
    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "image": ["images/a.png", "images/b.png", "images/sub/c.png", "images/d.png"],
        "labels": [["cat"], ["cat", "dog"], ["dog"], ["cat"]],
    })
    inter = pd.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u1"],
        "item_id": ["a", "b", "b", "c", "d", "a"],  # (u1, a) twice: binarised in the matrix
        "rating": [5.0, 3.0, 4.0, 1.0, 2.0, 4.0],
    })
    return items, inter


def _write(root, items=None, inter=None, **kw):
    i0, r0 = _tables()
    return write_dataset(root, i0 if items is None else items, r0 if inter is None else inter,
                         name=kw.pop("name", "toy"), source="test", **kw)


def _corrupt_items(root, items: pd.DataFrame) -> None:
    """Overwrite items.parquet behind write_dataset's back (as a hand-edited folder would be)."""
    pq.write_table(pa.Table.from_pandas(items, schema=ITEMS_SCHEMA, preserve_index=False), root / ITEMS_FILE)


def test_roundtrip_and_accessors(tmp_path):
    ds = load_folder(_write(tmp_path / "ds", params={"k": 1}))
    assert ds.name == "toy" and ds.n_items == 4 and len(ds.fingerprint) == 16
    assert ds.label_names == ["cat", "dog"]  # by descending frequency
    np.testing.assert_array_equal(ds.label_matrix, [[1, 0], [1, 1], [0, 1], [1, 0]])
    assert ds.label_matrix.dtype == np.float32
    assert ds.item_index == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert ds.image_path(2) == tmp_path / "ds" / "images/sub/c.png"
    assert ds.meta["params"] == {"k": 1} and ds.meta["source"] == "test"
    assert list(ds.interactions.columns) == ["user_id", "item_id", "rating"]
    m = ds.interaction_matrix()
    assert m.shape == (3, 4) and m.max() == 1.0 and m.nnz == 5
    np.testing.assert_array_equal(ds.n_interactions_per_item(), [1, 2, 1, 1])


def test_explicit_vocabulary_order_is_kept(tmp_path):
    ds = load_folder(_write(tmp_path / "ds", labels=["dog", "cat", "bird"]))
    assert ds.label_names == ["dog", "cat", "bird"]
    assert ds.label_matrix[:, 2].sum() == 0


def test_interaction_matrix_restricted_to_items_keeps_all_columns(tmp_path):
    ds = load_folder(_write(tmp_path / "ds"))
    m = ds.interaction_matrix(np.array([0, 2]))
    assert m.shape == (3, 4)
    np.testing.assert_array_equal(np.asarray(m.sum(0)).ravel(), [1, 0, 1, 0])


def test_duplicate_item_ids_name_the_rows(tmp_path):
    items, _ = _tables()
    items.loc[3, "item_id"] = "b"
    with pytest.raises(DatasetError, match=r"items\.parquet: duplicate item_id \['b'\] in rows 1, 3"):
        load_folder(_write(tmp_path / "ds", items=items))


def test_unknown_item_ids_in_interactions_name_the_rows(tmp_path):
    _, inter = _tables()
    inter.loc[4, "item_id"] = "zzz"
    with pytest.raises(DatasetError, match=r"interactions\.parquet: unknown item_id \['zzz'\] in rows 4"):
        load_folder(_write(tmp_path / "ds", inter=inter))


@pytest.mark.parametrize("bad", ["../outside.png", "images/../../x.png", "/etc/passwd"])
def test_image_paths_escaping_the_folder_name_the_row(tmp_path, bad):
    root = _write(tmp_path / "ds")
    items, _ = _tables()
    items.loc[2, "image"] = bad
    _corrupt_items(root, items)
    with pytest.raises(DatasetError, match=r"escapes the dataset folder .* rows 2") as e:
        load_folder(root)
    assert bad in str(e.value)


def test_labels_outside_vocabulary_and_missing_files(tmp_path):
    root = _write(tmp_path / "ds")
    items, _ = _tables()
    items.at[1, "labels"] = ["cat", "fish"]
    _corrupt_items(root, items)
    with pytest.raises(DatasetError, match="vocabulary in rows 1"):
        load_folder(root)
    (root / INTERACTIONS_FILE).unlink()
    with pytest.raises(DatasetError, match="missing interactions.parquet"):
        load_folder(root)


def test_null_labels_cell_is_named_as_such(tmp_path):
    root = _write(tmp_path / "ds")
    items, _ = _tables()
    items["labels"] = items["labels"].astype(object)
    items.at[2, "labels"] = None
    _corrupt_items(root, items)
    with pytest.raises(DatasetError, match="null labels .* rows 2"):
        load_folder(root)


def test_bad_meta_json_is_named(tmp_path):
    root = _write(tmp_path / "ds")
    (root / META_FILE).write_text("{not json")
    with pytest.raises(DatasetError, match="meta.json: invalid JSON"):
        load_folder(root)
    (root / META_FILE).write_text(json.dumps({"name": "x", "labels": []}))
    with pytest.raises(DatasetError, match="missing key 'fingerprint'"):
        load_folder(root)


def test_check_images_names_missing_file(tmp_path):
    root = _write(tmp_path / "ds")
    with pytest.raises(DatasetError, match=r"image file missing for rows 0, 1, 2, 3"):
        load_folder(root, check_images=True)


def test_fingerprint_is_stable_and_changes_with_content(tmp_path):
    base = load_folder(_write(tmp_path / "a")).fingerprint
    assert load_folder(_write(tmp_path / "b", name="other-name")).fingerprint == base  # content, not name
    items, inter = _tables()
    items.at[0, "labels"] = ["dog"]
    changed = [load_folder(_write(tmp_path / "c", items=items)).fingerprint]
    items, inter = _tables()
    inter.loc[0, "rating"] = 1.0
    changed.append(load_folder(_write(tmp_path / "d", inter=inter)).fingerprint)
    items, inter = _tables()
    items.loc[0, "image"] = "images/a2.png"
    changed.append(load_folder(_write(tmp_path / "e", items=items)).fingerprint)
    changed.append(load_folder(_write(tmp_path / "f", labels=["dog", "cat"])).fingerprint)
    assert len({base, *changed}) == 5


def test_gini_index():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([1, 2, 3, 4])) == pytest.approx(0.25)  # sum|xi-xj| / (2 n^2 mean)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)  # (n-1)/n: one class has all
    assert gini(np.array([4, 1, 3, 2])) == gini(np.array([1, 2, 3, 4]))  # order-free
    assert gini(np.array([])) == 0.0 and gini(np.zeros(3)) == 0.0


def test_dataset_stats_is_the_table2_row(tmp_path):
    s = dataset_stats(load_folder(_write(tmp_path / "ds")))
    assert s["images"] == 4 and s["interactions"] == 6 and s["users"] == 3 and s["labels"] == 2
    assert s["sparsity"] == pytest.approx(6 / 12)
    assert s["avg_pos_labels"] == pytest.approx(5 / 4)
    assert s["gini"] == pytest.approx(gini(np.array([3, 2])))
