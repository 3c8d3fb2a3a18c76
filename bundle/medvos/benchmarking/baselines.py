"""Training-free baselines measured on the same videos and supports as the models.

- copy: the support mask copied to every frame;
- optical flow: the support mask warped frame to frame with OpenCV dense flow (DIS or Farneback), forward
  and backward from the support frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medvos.flow import DenseFlow, grey_frame, warp


def copy_mask(labels: np.ndarray, support_frames: Sequence[int]) -> np.ndarray:
    """Each frame gets the labels of the nearest support frame. ``labels (T,H,W)`` -> ``(T,H,W)`` uint8."""
    sup = np.asarray(sorted(int(s) for s in support_frames))
    nearest = sup[np.abs(np.arange(labels.shape[0])[:, None] - sup[None]).argmin(1)]
    return labels[nearest].astype(np.uint8)


class FlowPropagator:
    """Warp label maps between consecutive frames with dense optical flow (:class:`medvos.flow.DenseFlow`).

    Args:
        method: ``"dis"`` (cv2.DISOpticalFlow, medium preset) or ``"farneback"``.
    """

    def __init__(self, method: str = "dis") -> None:
        self.flow = DenseFlow(method)
        self.method = method

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
                    onehot = warp(onehot, self.flow(grey[prev], grey[t]))
                    if onehot.ndim == 2:
                        onehot = onehot[..., None]
                    best = onehot.argmax(-1)
                    out[t] = np.where(onehot.max(-1) > 0.5, np.asarray(values, np.uint8)[best], 0)
                    prev = t
        return out
