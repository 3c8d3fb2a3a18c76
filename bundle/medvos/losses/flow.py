"""Flows of a clip (:mod:`medvos.flow`) and differentiable ``grid_sample`` warping, for TCR and TPS."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medvos.flow import DenseFlow, grey_frame


def backward_flows(frames: torch.Tensor) -> torch.Tensor:
    """Flows ``(T-1, 2, H, W)`` (pixels; x then y) such that ``frame[t](p) ~ frame[t-1](p + flow[t-1](p))``.

    ``frames``: ``(T, 3, H, W)`` in [0, 1] (any device; flow is computed on CPU with OpenCV DIS).
    """
    arr = frames.detach().float().cpu().numpy()
    flow = DenseFlow("dis")
    grey = [grey_frame(f) for f in arr]
    flows = [flow(grey[t - 1], grey[t]) for t in range(1, len(grey))]
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(frames.device)


def warp(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward-warp ``x (N,C,H,W)`` with ``flow (N,2,H',W')`` (resized to x's grid); bilinear, border padding.

    Returns ``(warped (N,C,H,W), valid (N,1,H,W))`` where valid marks samples that fell inside the source image.
    """
    n, _, h, w = x.shape
    if flow.shape[-2:] != (h, w):
        sy, sx = h / flow.shape[-2], w / flow.shape[-1]
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        flow = torch.stack([flow[:, 0] * sx, flow[:, 1] * sy], dim=1)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    px, py = xs[None] + flow[:, 0], ys[None] + flow[:, 1]
    grid = torch.stack([2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1], dim=-1).to(x.dtype)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    valid = ((px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)).to(x.dtype)[:, None]
    return warped, valid
