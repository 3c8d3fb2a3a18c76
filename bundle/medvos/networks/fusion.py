"""Cross-resolution fusion of the pseudo mask with mid-level query and support features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medvos.networks.parts import Part


class CrossResolutionFusion(Part):
    """``f = Conv1x1(Concat(up(p), G(q), mean_k G(s_k * m_k)))`` (+ BN + ReLU).

    Args:
        mid_channels: channels of G.
        out_channels: channels of ``f``.
    """

    def __init__(self, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mid_channels, self.out_channels = mid_channels, out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(1 + 2 * mid_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, pseudo: torch.Tensor, query_mid: torch.Tensor, support_mid: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pseudo: ``(B, 1, h, w)`` pseudo mask (deep resolution).
            query_mid: ``(B, Cm, H/8, W/8)`` G(query).
            support_mid: ``(B, Cm, H/8, W/8)`` G(masked support), averaged over shots.

        Returns:
            ``(B, out_channels, H/8, W/8)``.
        """
        up = F.interpolate(pseudo, size=query_mid.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([up, query_mid, support_mid], dim=1))
