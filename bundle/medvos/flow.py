"""Dense optical flow and warping (OpenCV DIS), shared by inference (motion prior, flow baseline) and the losses.

Convention: a *backward* flow ``f`` from ``src`` to ``dst`` satisfies ``dst(x) ~ src(x + f(x))``, so
``warp(values_of_src, f)`` moves ``src``'s values onto ``dst``'s grid.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

FLOW_METHODS = ("dis", "farneback")


def grey_frame(frame: np.ndarray) -> np.ndarray:
    """``(3,H,W)`` in [0,1] -> uint8 grey ``(H,W)`` (the input of OpenCV optical flow)."""
    return np.clip(frame.mean(0) * 255, 0, 255).astype(np.uint8)


DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class DenseFlow:
    """Backward flow between grey uint8 frames with ``"dis"`` (cv2.DISOpticalFlow, ``preset`` medium by default)
    or ``"farneback"``."""

    def __init__(self, method: str = "dis", preset: str = "medium") -> None:
        if method not in FLOW_METHODS:
            raise ValueError(f"unknown optical-flow method '{method}' (expected one of {FLOW_METHODS})")
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset '{preset}' (expected one of {sorted(DIS_PRESETS)})")
        self.method, self.preset = method, preset
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset]) if method == "dis" else None

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Flow ``(H,W,2)`` float32 such that ``dst(x) ~ src(x + flow(x))``."""
        if self._dis is not None:
            return self._dis.calc(dst, src, None)
        return cv2.calcOpticalFlowFarneback(dst, src, None, 0.5, 3, 15, 3, 5, 1.2, 0)


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def warp(values: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Backward-warp ``values (H,W[,C])`` float32 with ``flow (H,W,2)`` (border replicated)."""
    gx, gy = _grid(*flow.shape[:2])
    return cv2.remap(values, gx + flow[..., 0], gy + flow[..., 1], interpolation, borderMode=cv2.BORDER_REPLICATE)


def forward_backward_error(flow: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """Per-pixel round-trip error ``|flow(x) + reverse(x + flow(x))|`` (pixels) on ``flow``'s grid: near 0 where the
    flow is reliable, large at occlusions, cuts and large motion."""
    round_trip = flow + warp(reverse, flow)
    return cv2.magnitude(np.ascontiguousarray(round_trip[..., 0]), np.ascontiguousarray(round_trip[..., 1]))
