"""Training-free baselines measured on the same videos and supports as the models.

- copy: the support mask copied to every frame;
- optical flow: the support mask warped frame to frame with OpenCV dense flow (DIS or Farneback), forward
  and backward from the support frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def copy_mask(labels: np.ndarray, support_frames: Sequence[int]) -> np.ndarray:
    """Each frame gets the labels of the nearest support frame. ``labels (T,H,W)`` -> ``(T,H,W)`` uint8."""
    sup = np.asarray(sorted(int(s) for s in support_frames))
    nearest = sup[np.abs(np.arange(labels.shape[0])[:, None] - sup[None]).argmin(1)]
    return labels[nearest].astype(np.uint8)


def grey_frame(frame: np.ndarray) -> np.ndarray:
    """``(3,H,W)`` in [0,1] -> uint8 grey ``(H,W)`` (the input of OpenCV optical flow)."""
    return np.clip(frame.mean(0) * 255, 0, 255).astype(np.uint8)


class FlowPropagator:
    """Warp label maps between consecutive frames with dense optical flow.

    Args:
        method: ``"dis"`` (cv2.DISOpticalFlow, medium preset) or ``"farneback"``.
    """

    def __init__(self, method: str = "dis") -> None:
        if method not in ("dis", "farneback"):
            raise ValueError(f"unknown optical-flow method '{method}'")
        self.method = method
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if method == "dis" else None

    def flow(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Flow ``(H,W,2)`` such that ``dst(x) ~ src(x + flow(x))`` for grey uint8 frames (backward flow)."""
        if self._dis is not None:
            return self._dis.calc(dst, src, None)
        return cv2.calcOpticalFlowFarneback(dst, src, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    @staticmethod
    def warp(values: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Backward-warp ``values (H,W[,C])`` float32 with ``flow`` (border replicated)."""
        h, w = flow.shape[:2]
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return cv2.remap(values, gx + flow[..., 0], gy + flow[..., 1], interpolation, borderMode=cv2.BORDER_REPLICATE)

    def propagate(self, frames: np.ndarray, labels: np.ndarray, support_frames: Sequence[int]) -> np.ndarray:
        """Propagate the labels of each support frame to the frames nearer to it than to any other support.

        ``frames (T,3,H,W)`` in [0,1]; ``labels (T,H,W)``. Returns ``(T,H,W)`` uint8.
        """
        t_total = frames.shape[0]
        sup = sorted(int(s) for s in support_frames)
        values = [int(v) for v in np.unique(labels[sup]) if v != 0]
        out = copy_mask(labels, sup)
        grey = [None] * t_total
        for k, s in enumerate(sup):
            lo = (sup[k - 1] + s) // 2 + 1 if k > 0 else 0
            hi = (s + sup[k + 1]) // 2 if k + 1 < len(sup) else t_total - 1
            for direction, stop in ((1, hi), (-1, lo)):
                onehot = np.stack([(labels[s] == v).astype(np.float32) for v in values], -1)
                prev = s
                for t in range(s + direction, stop + direction, direction):
                    for i in (prev, t):
                        if grey[i] is None:
                            grey[i] = grey_frame(frames[i])
                    onehot = self.warp(onehot, self.flow(grey[prev], grey[t]))
                    if onehot.ndim == 2:
                        onehot = onehot[..., None]
                    best = onehot.argmax(-1)
                    out[t] = np.where(onehot.max(-1) > 0.5, np.asarray(values, np.uint8)[best], 0)
                    prev = t
        return out
