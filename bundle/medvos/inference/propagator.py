"""Few-shot propagation: segment every frame of a cine from its annotated support frame(s).

Frames are processed in windows of ``window`` consecutive frames, resized to the network's input size; the
support is encoded once per object and cached. Memory holds one window at a time plus the outputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medvos.io.errors import MaskMismatchError


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=mode == "bilinear")


def frame_confidence(prob: torch.Tensor) -> torch.Tensor:
    """Per-frame certainty in [0, 1]: mean over pixels of ``|2p - 1|`` for foreground probability ``p``."""
    return (2 * prob - 1).abs().flatten(1).mean(1)


class FewShotPropagator:
    """Segments frames given supports with a few-shot network (phase-1 image model or relearned model).

    The network must provide ``encode_support(support, mask)`` and ``segment(query, support, out_size)``.

    Args:
        network: the model (put in eval mode by the caller).
        image_size: network input size ``(h, w)`` or int.
        window: frames per forward pass (the TAU window of a relearned model).
        threshold: foreground probability threshold for a label.
    """

    def __init__(self, network: nn.Module, image_size: int | Sequence[int] = 256, window: int = 8,
                 threshold: float = 0.5) -> None:
        self.network = network
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.window = window
        self.threshold = threshold

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def encode(self, frames: torch.Tensor, masks: torch.Tensor):  # noqa: ANN201
        """Support ``frames (K,3,H,W)`` in [0,1] and binary ``masks (K,H,W)`` -> cached encoding (batch 1)."""
        if masks.flatten(1).sum(1).min() <= 0:
            raise MaskMismatchError("support", "a support mask is empty: annotate the object on the support frame")
        s = _resize(frames.to(self.device, torch.float32), self.image_size, "bilinear")
        m = _resize(masks[:, None].to(self.device, torch.float32), self.image_size, "nearest")
        return self.network.encode_support(s[None], m[None])

    def windows(self, frames: torch.Tensor, support) -> Iterator[tuple[int, torch.Tensor]]:  # noqa: ANN001
        """Yield ``(start, foreground probability (n,H,W))`` per window of frames at the frames' own size."""
        size = tuple(frames.shape[-2:])
        for start in range(0, frames.shape[0], self.window):
            q = _resize(frames[start : start + self.window].to(self.device, torch.float32), self.image_size, "bilinear")
            logits = self.network.segment(q, support, self.image_size)
            prob = torch.softmax(logits, dim=1)[:, 1:2]
            yield start, _resize(prob, size, "bilinear")[:, 0].float().cpu()

    @torch.inference_mode()
    def propagate(self, frames: torch.Tensor, labels: torch.Tensor, support_frames: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Propagate every object of the support frames' labels to all frames.

        Args:
            frames: ``(T, 3, H, W)`` in [0, 1].
            labels: ``(T, H, W)`` or ``(T,1,H,W)`` integer labels (only the support frames are read).
            support_frames: indices of the annotated frames used as supports.

        Returns:
            ``(label map (T,H,W) uint8, foreground probability per label (L,T,H,W) float16, confidence (T,))``.
            Support frames keep their given labels. Each pixel gets the most probable object whose probability
            exceeds ``threshold``, else background.
        """
        if labels.ndim == 4:
            labels = labels[:, 0]
        sup = [int(t) for t in support_frames]
        sup_labels = labels[sup]
        values = [int(v) for v in torch.unique(sup_labels) if v != 0]
        if not values:
            raise MaskMismatchError("support", f"support frame(s) {sup} carry no annotated object")
        t, h, w = labels.shape
        probs = np.zeros((len(values), t, h, w), np.float16)
        for li, v in enumerate(values):
            masks = (sup_labels == v).float()
            keep = [k for k in range(len(sup)) if masks[k].sum() > 0]
            enc = self.encode(frames[[sup[k] for k in keep]], masks[keep])
            for start, p in self.windows(frames, enc):
                probs[li, start : start + p.shape[0]] = p.numpy()
        best = probs.argmax(0)
        best_p = probs.max(0).astype(np.float32)
        out = np.where(best_p > self.threshold, np.asarray(values, np.uint8)[best], 0).astype(np.uint8)
        out[sup] = labels[sup].cpu().numpy().astype(np.uint8)
        conf = frame_confidence(torch.from_numpy(best_p).flatten(1)).numpy()
        conf[sup] = 1.0
        return out, probs, conf
