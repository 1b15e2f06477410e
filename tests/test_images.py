"""Image cache (decode once, memmap, atomic, by-content decoding, bad-file handling)
and the batch transforms."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from raysearch.data import images as imgmod
from raysearch.data import load_folder, write_dataset
from raysearch.data.images import (
    IMAGENET_MEAN, IMAGENET_STD, ImageError, eval_batch, image_cache_path, load_image_cache,
    scan_images, skipped_images, train_batch,
)

torch.set_num_threads(1)


def _img(seed: int, w: int = 40, h: int = 30, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def _dataset(root, *, corrupt: bool = False):
    """Five items: JPEG, PNG, a PNG named .jpg, a grayscale and an RGBA image (+ a corrupt one)."""
    (root / "images").mkdir(parents=True)
    _img(0).save(root / "images/a.jpg", format="JPEG")
    _img(1).save(root / "images/b.png", format="PNG")
    _img(2, 30, 40).save(root / "images/c.jpg", format="PNG")  # wrong extension
    _img(3, mode="L").save(root / "images/d.png")
    _img(4, mode="RGBA").save(root / "images/e.png")
    names = ["a.jpg", "b.png", "c.jpg", "d.png", "e.png"]
    if corrupt:
        good = (root / "images/a.jpg").read_bytes()
        (root / "images/f.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
        (root / "images/g.png").write_bytes(b"not an image at all")
        names += ["f.jpg", "g.png"]
    items = pd.DataFrame({
        "item_id": [f"it{i}" for i in range(len(names))],
        "image": [f"images/{n}" for n in names],
        "labels": [["x"]] * len(names),
    })
    inter = pd.DataFrame({"user_id": ["u0"], "item_id": ["it0"]})
    write_dataset(root, items, inter, name="imgs", source="test")
    return load_folder(root)


def test_cache_is_built_once_memmapped_and_correct(tmp_path, monkeypatch):
    ds = _dataset(tmp_path / "ds")
    home = tmp_path / "home"
    x = load_image_cache(ds, 16, home, progress=False)
    assert isinstance(x, np.memmap) and x.dtype == np.uint8 and x.shape == (5, 16, 16, 3)
    assert not x.flags.writeable
    path = image_cache_path(ds, 16, home)
    assert path.name == f"{ds.fingerprint}-16.npy" and path.parent == home / "cache" / "images"
    assert not list(path.parent.glob("*.tmp"))  # atomic: no temp left behind
    # the c.jpg slot (a PNG named .jpg) equals decoding it directly
    np.testing.assert_array_equal(x[2], imgmod.decode_image(ds.image_path(2), 16))
    assert x[3].std() > 0 and (x[3, ..., 0] == x[3, ..., 1]).all()  # grayscale -> RGB
    stamp = path.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("decoded again on a cache hit")

    monkeypatch.setattr(imgmod, "decode_image", boom)
    y = load_image_cache(ds, 16, home, progress=False)
    np.testing.assert_array_equal(x, y)
    assert path.stat().st_mtime_ns == stamp


def test_other_size_is_another_cache_and_a_truncated_cache_is_rebuilt(tmp_path):
    ds = _dataset(tmp_path / "ds")
    home = tmp_path / "home"
    a = np.array(load_image_cache(ds, 8, home, progress=False))  # a copy: the file is damaged below
    b = load_image_cache(ds, 12, home, progress=False)
    assert a.shape[1:3] == (8, 8) and b.shape[1:3] == (12, 12)
    p = image_cache_path(ds, 8, home)
    p.write_bytes(p.read_bytes()[:100])  # truncated by a crash
    c = load_image_cache(ds, 8, home, progress=False)
    np.testing.assert_array_equal(a, c)


def test_shorter_side_resize_then_centre_crop():
    # a 60x20 image whose centre third is white: after shorter-side resize + centre crop it is
    # white (up to bicubic ringing from the black neighbours in the outermost columns)
    arr = np.zeros((20, 60, 3), dtype=np.uint8)
    arr[:, 20:40] = 255
    img = Image.fromarray(arr)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    buf.seek(0)
    out = imgmod.decode_image(buf, 10)
    assert out.shape == (10, 10, 3) and out[:, 1:-1].min() >= 250 and out.min() >= 200


def test_corrupt_image_error_names_the_file(tmp_path):
    ds = _dataset(tmp_path / "ds", corrupt=True)
    with pytest.raises(ImageError) as e:
        load_image_cache(ds, 16, tmp_path / "home", progress=False)
    msg = str(e.value)
    assert "f.jpg" in msg and "g.png" in msg and "2 unreadable" in msg and "it6" in msg


def test_skip_mode_zero_fills_and_counts(tmp_path, caplog):
    ds = _dataset(tmp_path / "ds", corrupt=True)
    home = tmp_path / "home"
    with caplog.at_level("WARNING"):
        x = load_image_cache(ds, 16, home, on_error="skip", progress=False)
    assert x.shape == (7, 16, 16, 3)
    assert (x[5] == 0).all() and (x[6] == 0).all() and x[:5].any(axis=(1, 2, 3)).all()
    assert skipped_images(ds, 16, home) == ["it5", "it6"]
    assert "2 unreadable" in caplog.text and "it5" in caplog.text
    # the same cache later requested strictly still refuses, naming the files
    with pytest.raises(ImageError, match="g.png"):
        load_image_cache(ds, 16, home, progress=False)
    # fixing the files makes the next call rebuild the cache
    _img(5).save(ds.image_path(5), format="JPEG")
    _img(6).save(ds.image_path(6), format="PNG")
    y = load_image_cache(ds, 16, home, progress=False)
    assert y[5].any() and y[6].any() and skipped_images(ds, 16, home) == []


def test_scan_images_lists_rows_paths_reasons(tmp_path):
    ds = _dataset(tmp_path / "ds", corrupt=True)
    ds.image_path(0).unlink()
    bad = scan_images(ds)
    assert [b.row for b in bad] == [0, 5, 6]
    assert bad[0].path == ds.image_path(0) and bad[0].reason == "file missing"
    assert all(isinstance(b.reason, str) and b.reason for b in bad)


def test_bad_arguments_are_clear(tmp_path):
    ds = _dataset(tmp_path / "ds")
    with pytest.raises(ValueError, match="on_error"):
        load_image_cache(ds, 16, tmp_path / "home", on_error="ignore")
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        eval_batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        eval_batch(torch.zeros(2, 8, 8, 3))


def _batch(n=6, s=16):
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, s, s, 3), dtype=np.uint8))


def test_eval_batch_normalises_to_float_nchw():
    x = _batch()
    y = eval_batch(x)
    assert y.dtype == torch.float32 and y.shape == (6, 3, 16, 16) and y.is_contiguous()
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expect = (x[1, 4, 5].float() / 255 - mean) / std
    torch.testing.assert_close(y[1, :, 4, 5], expect)
    white = eval_batch(torch.full((1, 2, 2, 3), 255, dtype=torch.uint8))
    torch.testing.assert_close(white[0, :, 0, 0], (1 - mean) / std)
    # numpy (e.g. a read-only memmap slice) is accepted too
    torch.testing.assert_close(eval_batch(x.numpy()), y)


def test_train_batch_shapes_determinism_and_augmentation():
    x = _batch()
    a = train_batch(x, torch.Generator().manual_seed(3))
    b = train_batch(x, torch.Generator().manual_seed(3))
    c = train_batch(x, torch.Generator().manual_seed(4))
    assert a.dtype == torch.float32 and a.shape == (6, 3, 16, 16)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, eval_batch(x))  # it does augment
    # values stay within the normalised range of the image (bilinear interpolation of pixels)
    e = eval_batch(x)
    assert a.min() >= e.min() - 1e-5 and a.max() <= e.max() + 1e-5


def test_train_batch_identity_crop_and_pure_flip():
    x = _batch(3, 8)
    g = torch.Generator().manual_seed(0)
    ident = train_batch(x, g, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0)
    torch.testing.assert_close(ident, eval_batch(x), atol=1e-5, rtol=0)
    flipped = train_batch(x, g, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0)
    torch.testing.assert_close(flipped, eval_batch(x).flip(-1), atol=1e-5, rtol=0)


def _grid_sample_reference(x: torch.Tensor, boxes) -> torch.Tensor:
    """The previous float implementation (normalise, then ``affine_grid``/``grid_sample`` over each
    crop box with half-pixel centres) applied to the integer boxes ``train_batch`` drew."""
    f = eval_batch(x)
    n, _, h, w = f.shape
    cw, ch = boxes.width.double() / w, boxes.height.double() / h
    cx = (2 * boxes.left.double() + boxes.width.double()) / w - 1  # box centre in [-1, 1]
    cy = (2 * boxes.top.double() + boxes.height.double()) / h - 1
    sign = torch.where(boxes.flip, -1.0, 1.0).double()
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = cw * sign, cx, ch, cy
    grid = torch.nn.functional.affine_grid(theta.float(), [n, 3, h, w], align_corners=False)
    return torch.nn.functional.grid_sample(f, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_train_batch_resamples_like_grid_sample_over_its_crop_boxes():
    """Cropping/resizing on uint8 gives the float grid_sample result up to uint8 rounding of the
    resized pixels, except on the output's outer one-pixel ring: there grid_sample interpolates
    with the image pixels just outside the box, the crop-then-resize (torchvision's
    ``resized_crop``) clamps to the box edge."""
    x = _batch(16, 32)
    boxes = imgmod.crop_boxes(16, 32, 32, torch.Generator().manual_seed(5))
    assert (boxes.width < 32).any() and boxes.flip.any() and (~boxes.flip).any()
    got = train_batch(x, torch.Generator().manual_seed(5))
    ref = _grid_sample_reference(x, boxes)
    step = 1 / 255 / min(IMAGENET_STD)  # one uint8 level after normalisation
    err = (got - ref).abs()[:, :, 1:-1, 1:-1]
    assert err.max() <= 1.01 * step
    assert err.mean() <= 0.3 * step


def test_crop_boxes_draw_the_random_resized_crop_distribution():
    """Same draws as the continuous formulation (area ~ U(scale), log-uniform aspect, clipped,
    uniform position, flip p): the integer boxes are those values rounded to whole pixels."""
    n, h, w = 4000, 128, 96
    boxes = imgmod.crop_boxes(n, h, w, torch.Generator().manual_seed(1), scale=(0.5, 0.9), flip=0.3)
    r = torch.rand(n, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    area = 0.5 + 0.4 * r[:, 0]
    aspect = torch.exp(np.log(3 / 4) + (np.log(4 / 3) - np.log(3 / 4)) * r[:, 1])
    fw, fh = torch.sqrt(area * aspect).clamp(max=1), torch.sqrt(area / aspect).clamp(max=1)
    assert (boxes.width - fw * w).abs().max() <= 0.5 + 1e-9
    assert (boxes.height - fh * h).abs().max() <= 0.5 + 1e-9
    assert (boxes.left >= 0).all() and (boxes.left + boxes.width <= w).all()
    assert (boxes.top >= 0).all() and (boxes.top + boxes.height <= h).all()
    assert (boxes.left - r[:, 2] * (w - boxes.width)).abs().max() <= 0.5 + 1e-9
    frac = (boxes.width * boxes.height).double() / (w * h)
    assert abs(frac.mean().item() - (fw * fh).mean().item()) < 2e-3
    assert 0.27 < boxes.flip.double().mean().item() < 0.33
    # the left offset is uniform over the free room: its normalised position averages 0.5
    room = (w - boxes.width).double()
    assert abs((boxes.left[room > 10] / room[room > 10]).mean().item() - 0.5) < 0.03
