"""Temporal Attention Unit (Tan et al., CVPR 2023), used between neck and head in phase 2.

The |B| frames of a clip are stacked as channels, ``(1, |B|*C, h, w)``, so attention over channels is
attention over time: statical attention (large-kernel depthwise convolutions, intra-frame) times dynamical
attention (squeeze-excitation over the stacked channels, inter-frame).
"""

from __future__ import annotations

import torch
from monai.networks.blocks import ChannelSELayer
from monai.networks.layers import DropPath
from torch import nn

from medvos.networks.parts import Part


class TemporalAttention(nn.Module):
    """``H' = SA(H) * DA(H) * H``.

    SA: depthwise 5x5 -> depthwise 7x7 with dilation 3 -> 1x1 (statical, large receptive field).
    DA: MONAI's squeeze-excitation (global average pool -> Linear -> ReLU -> Linear -> Sigmoid, per channel) to
    ``max(dim // reduction, 4)`` hidden units; ``DA(H) * H`` is its output.
    """

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.dw_dilated = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.pw = nn.Conv2d(dim, dim, 1)
        hidden = max(dim // reduction, 4)
        self.se = ChannelSELayer(2, dim, r=max(dim // hidden, 1))  # MONAI: dim // r hidden units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw_dilated(self.dw(x))) * self.se(x)


class TAUAttention(nn.Module):
    """1x1 -> GELU -> :class:`TemporalAttention` -> 1x1, with a shortcut."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.attn = TemporalAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_2(self.attn(self.act(self.proj_1(x))))


class DWMlp(nn.Module):
    """1x1 expand -> depthwise 3x3 -> GELU -> 1x1."""

    def __init__(self, dim: int, ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dw(self.fc1(x))))))


class TAUBlock(nn.Module):
    """``x + DropPath(ls1 * Attn(BN(x)))`` then ``x + DropPath(ls2 * MLP(BN(x)))``; layer scales start at 1e-2."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale: float = 1e-2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = TAUAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = DWMlp(dim, mlp_ratio, drop)
        self.drop_path = DropPath(drop_path)  # MONAI's stochastic depth
        self.ls1 = nn.Parameter(layer_scale * torch.ones(dim))
        self.ls2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.ls2[:, None, None] * self.mlp(self.norm2(x)))


class TAUTranslator(Part):
    """Temporal translator over a clip of ``frames`` feature maps.

    ``(N, C, h, w)`` with N a multiple of ``frames`` (consecutive frames) -> same shape. Internally each clip is
    ``(1, frames*C, h, w)`` -> 1x1 to ``hidden`` -> ``blocks`` x :class:`TAUBlock` -> 1x1 back, added to the input.
    The output projection starts at zero (choice), so the translator is the identity at initialisation and the
    relearned model starts exactly as the image model.
    """

    def __init__(self, frames: int, channels: int, hidden: int = 256, blocks: int = 2, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: float = 0.1) -> None:
        super().__init__()
        self.frames, self.channels = frames, channels
        self.proj_in = nn.Conv2d(frames * channels, hidden, 1)
        rates = torch.linspace(0, drop_path, blocks).tolist() if blocks > 1 else [drop_path]
        self.blocks = nn.Sequential(*[TAUBlock(hidden, mlp_ratio, drop, r) for r in rates])
        self.proj_out = nn.Conv2d(hidden, frames * channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if n % self.frames or c != self.channels:
            raise ValueError(f"TAU expects (k*{self.frames}, {self.channels}, h, w), got {tuple(x.shape)}")
        clips = x.reshape(n // self.frames, self.frames * c, h, w)
        out = clips + self.proj_out(self.blocks(self.proj_in(clips)))
        return out.reshape(n, c, h, w)
