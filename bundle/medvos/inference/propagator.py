"""Few-shot propagation: segment every frame of a cine from its annotated frame(s).

Frames are processed in windows of ``window`` consecutive frames (the TAU window of a relearned model), resized
to the network's input size. Each (annotated frame, object) support is encoded once; a window's query features
are computed once and shared by all supports. Only one window of frames is on the device at a time; outputs are
uint8 labels plus a per-frame confidence, so memory does not grow with the frames processed beyond the outputs.

Several annotated frames (any frames, not only the first) propagate forward and backward; per object the
``fusion`` mode decides which annotation a frame follows:

- ``nearest``: the temporally nearest annotated frame (ties: the earlier);
- ``fuse``: probabilities averaged with weights ``confidence / (1 + |t - a| / window)``;
- ``joint``: all annotated frames of the object encoded together as K shots.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medvos.io.errors import MaskMismatchError
from medvos.networks.exported import query_encoder

FUSION_MODES = ("nearest", "fuse", "joint")


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=mode == "bilinear")


def winning_labels(stack: torch.Tensor, values: Sequence[int], threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel the most probable object of ``stack (n, L, H, W)`` (object ``values[l]``) if above ``threshold``,
    else 0: ``(labels (n,H,W) uint8, winning probability (n,H,W))``."""
    best_p, best = stack.max(1)
    labels = torch.where(best_p > threshold, torch.tensor(list(values), dtype=torch.uint8)[best],
                         torch.zeros((), dtype=torch.uint8))
    return labels, best_p


def frame_confidence(prob: torch.Tensor) -> torch.Tensor:
    """Per-frame certainty in [0, 1]: mean over pixels of ``|2p - 1|`` for foreground probability ``p (N,...)``."""
    return (2 * prob - 1).abs().flatten(1).mean(1)


class Window(NamedTuple):
    """Consecutive propagated frames from ``start``, at the frames' own size.

    ``labels (n,H,W)`` uint8; ``confidence (n,)``; ``probabilities {value: (n,H,W) float16 or float32}``;
    ``drift (n,)``: the
    disagreement of appearance and motion per frame (motion-aware propagation only, else ``None``).
    """

    start: int
    labels: np.ndarray
    confidence: np.ndarray
    probabilities: dict[int, np.ndarray]
    drift: np.ndarray | None = None


@dataclass
class Support:
    """One encoded support: object ``value`` annotated on ``frames``; ``absent``: the annotator said the object is
    not on these frames (an annotated frame without it), so its probability there, and where this is the nearest
    annotation, is 0 (``encoding`` None)."""

    value: int
    frames: list[int]
    encoding: Any
    absent: bool = False


class FewShotPropagator:
    """Segments frames given annotated frames with a few-shot network (phase-1 image model or relearned model).

    The network provides ``encode_support``, ``encode_query`` and ``segment_encoded``.

    Args:
        network: the model (put in eval mode by the caller).
        image_size: network input size ``(h, w)`` or int.
        window: frames per forward pass.
        threshold: foreground probability above which a pixel gets an object.
        fusion: how several annotated frames combine (``nearest``, ``fuse``, ``joint``).
    """

    def __init__(self, network: nn.Module, image_size: int | Sequence[int] = 256, clip_length: int = 8,
                 threshold: float = 0.5, fusion: str = "nearest") -> None:
        if fusion not in FUSION_MODES:
            raise ValueError(f"unknown fusion '{fusion}' (expected one of {FUSION_MODES})")
        self.network = network
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.clip_length = clip_length
        self.threshold = threshold
        self.fusion = fusion
        self.probability_dtype: type = np.float16  # of the streamed probabilities (float32 avoids a conversion)
        self.reuse: Any = None  # an earlier pass's query encodings (:meth:`reuse_from`)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def reuse_from(self, cache: Any) -> None:
        """Take the query encodings of the same frames from ``cache`` (a :class:`medvos.inference.reuse.PassCache`
        an earlier pass filled; None: encode every window) where this network's query encoding is shareable
        (:func:`medvos.networks.exported.query_encoder`)."""
        self.reuse = cache

    def encode_queries(self, start: int, q: torch.Tensor) -> Any:
        """The query encoding of the window of frames ``q`` (at the input size) starting at frame ``start``."""
        encoder = query_encoder(self.network) if self.reuse is not None else None
        if encoder is None:
            return self.network.encode_query(q)
        return self.reuse.get(("query", encoder, start, int(q.shape[0])), lambda: encoder.encode_query(q))

    def encode(self, frames: torch.Tensor, masks: torch.Tensor) -> Any:
        """Support ``frames (K,3,H,W)`` in [0,1] and binary ``masks (K,H,W)`` -> encoding (batch 1, K shots)."""
        if masks.flatten(1).sum(1).min() <= 0:
            raise MaskMismatchError("support", "a support mask is empty: annotate the object on the support frame")
        s = _resize(frames.to(self.device, torch.float32), self.image_size, "bilinear")
        m = _resize(masks[:, None].to(self.device, torch.float32), self.image_size, "nearest")
        return self.network.encode_support(s[None], m[None])

    @torch.inference_mode()
    def supports(self, annotated: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> list[Support]:
        """Encode ``{frame: (image (3,H,W), labels (H,W))}`` into one support per (object, annotation).

        An annotated frame without an object says the object is absent there: an ``absent`` support (``nearest``
        and ``fuse``; ``joint`` pools the frames that show the object and ignores it)."""
        values = sorted({int(v) for _, lab in annotated.values() for v in torch.unique(lab) if v != 0})
        if not values:
            raise MaskMismatchError("support", f"annotated frame(s) {sorted(annotated)} carry no annotated object")
        out = []
        for v in values:
            frames = [a for a in sorted(annotated) if (annotated[a][1] == v).any()]
            groups = [frames] if self.fusion == "joint" else [[a] for a in frames]
            for g in groups:
                imgs = torch.stack([annotated[a][0] for a in g])
                masks = torch.stack([(annotated[a][1] == v).float() for a in g])
                out.append(Support(v, g, self.encode(imgs, masks)))
            if self.fusion != "joint":
                out += [Support(v, [a], None, absent=True) for a in sorted(annotated) if a not in frames]
        return out

    def _distances(self, start: int, n: int, idx: list[int], supports: list[Support]) -> torch.Tensor:
        """``(len(idx), n)``: each frame of the window starting at ``start`` to the nearest frame of each support."""
        t = torch.arange(start, start + n, dtype=torch.float32)
        return torch.stack([(t[:, None] - torch.tensor(supports[i].frames, dtype=torch.float32)).abs().min(1).values
                            for i in idx])

    def _used(self, start: int, n: int, supports: list[Support]) -> set[int]:
        """The supports whose probabilities :meth:`_combine` reads for the window starting at ``start``: every one
        with ``fuse``, else per object the nearest to some frame of the window (the others are not computed)."""
        used: set[int] = set()
        for v in sorted({s.value for s in supports}):
            idx = [i for i, s in enumerate(supports) if s.value == v]
            if self.fusion == "fuse" and len(idx) > 1:
                used.update(idx)
            else:
                used.update(idx[int(c)] for c in self._distances(start, n, idx, supports).argmin(0).unique())
        return used

    def _combine(self, start: int, probs: list[torch.Tensor | None], supports: list[Support]
                 ) -> dict[int, torch.Tensor]:
        """Per object value: foreground probability ``(n,H,W)`` of the window starting at ``start`` (``probs``:
        per support, None where :meth:`_used` says it is not read)."""
        n = next(p for p in probs if p is not None).shape[0]
        out = {}
        for v in sorted({s.value for s in supports}):
            idx = [i for i, s in enumerate(supports) if s.value == v]
            dist = self._distances(start, n, idx, supports)  # (S, n)
            if self.fusion == "fuse" and len(idx) > 1:
                p = torch.stack([probs[i] for i in idx])  # (S, n, H, W)
                w = frame_confidence(p.flatten(0, 1)).view(len(idx), n) / (1.0 + dist / self.clip_length)
                w = w / w.sum(0, keepdim=True).clamp_min(1e-8)
                out[v] = (w[:, :, None, None] * p).sum(0)
            else:
                choice = dist.argmin(0)  # nearest annotation (first on ties)
                out[v] = torch.stack([probs[idx[int(c)]][k] for k, c in enumerate(choice)])
        return out

    @torch.inference_mode()
    def stream(self, windows: Iterable[tuple[int, torch.Tensor]], supports: list[Support]) -> Iterator[Window]:
        """For each ``(start, frames (n,3,H,W) in [0,1])`` yield a :class:`Window` at the frames' own size."""
        for start, frames in windows:
            size = tuple(frames.shape[-2:])
            q = _resize(frames.to(self.device, torch.float32), self.image_size, "bilinear")
            q_enc = self.encode_queries(start, q)
            used = self._used(start, q.shape[0], supports)
            probs = [None if i not in used else torch.zeros(q.shape[0], *self.image_size) if s.absent else
                     torch.softmax(self.network.segment_encoded(q_enc, s.encoding, self.image_size), 1)[:, 1]
                     .float().cpu() for i, s in enumerate(supports)]
            per_value = self._combine(start, probs, supports)
            values = sorted(per_value)
            stack = _resize(torch.stack([per_value[v] for v in values], 1), size, "bilinear")  # (n, L, H, W)
            labels, best_p = winning_labels(stack, values, self.threshold)
            yield Window(start, labels.numpy(), frame_confidence(best_p).numpy(),
                         {v: stack[:, i].numpy().astype(self.probability_dtype, copy=False)
                          for i, v in enumerate(values)})

    def windows(self, frames: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, frames[start:start+window])`` over an in-memory video ``(T,3,H,W)``."""
        for start in range(0, frames.shape[0], self.clip_length):
            yield start, frames[start : start + self.clip_length]

    def propagate(self, frames: torch.Tensor, labels: torch.Tensor, support_frames: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Propagate the objects annotated on ``support_frames`` through an in-memory video.

        Args:
            frames: ``(T, 3, H, W)`` in [0, 1].
            labels: ``(T, H, W)`` or ``(T,1,H,W)`` integer labels (only the support frames are read).
            support_frames: indices of the annotated frames.

        Returns:
            ``(labels (T,H,W) uint8, foreground probability of the winning object (T,H,W) float32, confidence (T,))``;
            annotated frames keep their given labels and confidence 1.
        """
        if labels.ndim == 4:
            labels = labels[:, 0]
        sup = [int(t) for t in support_frames]
        supports = self.supports({a: (frames[a], labels[a]) for a in sup})
        t, h, w = labels.shape
        out = np.zeros((t, h, w), np.uint8)
        prob = np.zeros((t, h, w), np.float32)
        conf = np.zeros(t, np.float32)
        for win in self.stream(self.windows(frames), supports):
            start, n = win.start, win.labels.shape[0]
            out[start : start + n], conf[start : start + n] = win.labels, win.confidence
            prob[start : start + n] = np.max(np.stack(list(win.probabilities.values())), 0)
        out[sup] = labels[sup].cpu().numpy().astype(np.uint8)
        conf[sup] = 1.0
        return out, prob, conf
