"""Edge-aware refinement of a probability map along the frame's own edges: the guided filter (He, Sun and Tang,
"Guided Image Filtering", ECCV 2010 / TPAMI 2013), grey guide, box windows.

The few-shot network predicts at 1/8 of its input size and its logits are upsampled bilinearly, so its boundary is
soft and rounded; flow-warped priors blur a little with every warp. The guided filter makes the probability locally
an affine function of the image intensity, which moves the 0.5 level onto the intensity edge next to it. It runs
at the network's input size (about 1 ms per object and frame at 256 px on one core).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def guided_filter(guide: np.ndarray, values: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """``values (H,W)`` filtered with the grey ``guide (H,W)`` (float, about [0, 1]) over ``(2 radius + 1)^2``
    windows; ``eps`` regularises flat regions (larger: smoother, closer to a box blur)."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    i, p = guide.astype(np.float32, copy=False), values.astype(np.float32, copy=False)
    mean_i, mean_p = box(i), box(p)
    a = (box(i * p) - mean_i * mean_p) / (box(i * i) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box(a) * i + box(b)


@dataclass(frozen=True)
class EdgeRefinement:
    """Probabilities snapped to the frame's edges (``inference.yaml`` ``edge_radius``; 0 = off).

    Args:
        radius: window radius in pixels at the network's input size.
        eps: regularisation of the filter on intensities in [0, 1].
    """

    radius: int = 4
    eps: float = 1e-4

    @property
    def on(self) -> bool:
        return self.radius > 0

    def __call__(self, grey: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """``prob (H,W)`` refined along the edges of ``grey (H,W)`` uint8 of the same size, clipped to [0, 1]."""
        if not self.on or not prob.any():
            return prob
        return np.clip(guided_filter(grey.astype(np.float32) / 255.0, prob, self.radius, self.eps), 0.0, 1.0)
