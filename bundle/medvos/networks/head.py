"""Segmentation head: Conv3x3 (+BN+ReLU) -> Conv1x1 to classes; softmax is applied by the caller/loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medvos.networks.parts import Part


class SegmentationHead(Part):
    """``(B, C, h, w)`` -> logits ``(B, num_classes, H, W)`` upsampled (bilinear) to ``out_size``."""

    def __init__(self, channels: int, num_classes: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.conv3 = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.conv1 = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        y = self.conv1(self.conv3(x))
        if out_size is not None:
            y = F.interpolate(y, size=out_size, mode="bilinear", align_corners=False)
        return y
