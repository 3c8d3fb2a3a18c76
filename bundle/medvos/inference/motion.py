"""Motion-aware propagation: the few-shot prediction (appearance) fused with the previous result warped by optical
flow (motion), at the network's input size, forward and backward between annotated frames.

Per object and frame, :class:`CueFusion` combines the appearance probability ``A`` with the motion prior ``W`` (the
previous fused probability warped by DIS flow):

- *tracked appearance*: components of ``A > 0.5`` that do not touch the prior's neighbourhood are pushed below the
  threshold (a look-alike elsewhere does not join the mask);
- *product of experts in logit space*: ``logit F = logit A_tracked + motion_weight * r * logit W``, where the flow
  reliability ``r = exp(-(e / flow_tolerance)^2)`` falls with ``e``, the mean forward-backward flow error around the
  prior. Smooth, consistent flow (steady ultrasound) makes motion decide the boundary; large motion, cuts and
  occlusions (frames far apart) hand the decision to appearance. ``motion_cap`` (off by default) bounds how sure a
  motion cue may be, so that a sure appearance outweighs a track that slides off the target;
- *re-detection*: when the prior has vanished, or appearance gives it little support (mean ``A`` inside it below
  ``redetect_support``) while confidently finding the object elsewhere (mean ``A`` there above
  ``redetect_confidence``) on ``redetect_frames`` consecutive frames, motion has drifted and appearance alone
  decides (``inference.yaml``: at once with a network tuned on the annotation, whose detections elsewhere are
  usually right; after 3 frames with an untuned one, so that one flickering frame does not throw away a good track).

- *holding through an appearance drop-out*: on some frames (an artefact, a speckle pattern, a look the tuning never
  saw) appearance loses the target altogether: nothing near the track and nothing confident elsewhere. Its logit
  would then erase a good track in one frame, and the track would not come back. When appearance's own foreground
  within the prior's neighbourhood covers less than ``hold_below`` of the prior (and finds nothing above
  ``redetect_confidence`` elsewhere), appearance abstains and the prior alone carries the track (its logit times
  the flow reliability ``r``), for at most ``hold_frames`` consecutive such frames: a target that really left is
  let go.

- *the annotation as a second motion cue*: the previous result carries every warp's small error on to the next frame,
  so on a long steady stretch the track creeps off the target while each step's flow still checks out. The annotated
  frame's mask warped straight onto this frame (flow from the annotated frame, no accumulation) is added to the
  appearance logit with weight ``anchor_weight * r0`` (``r0``: the same reliability on that flow's forward-backward
  error), but only while it agrees with the chained prior (soft Dice above ``anchor_agreement``): far from the
  annotation, after a cut or a large view change, direct flow can be consistent and wrong, and the gate drops it.

The output (not what is carried to the next frame) is refined along the frame's edges at the input size
(:class:`medvos.inference.edges.EdgeRefinement`, ``edge_radius``): the network's 1/8-resolution boundary and the
warps' blur are snapped to the image's own edges.

``drift = 1 - soft Dice(A, W)`` per object is the disagreement of the two cues; a frame's drift (``confidence.csv``,
the MONAI Label strategy) is the largest over its objects. Frames before, between and after annotated frames are
covered: after the last annotation a forward pass streams; elsewhere forward and backward passes meet, each frame and
object weighted towards its nearer annotation and towards the pass that agrees better with appearance there for that
object (:func:`meeting_weight`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from medvos.flow import DenseFlow, forward_backward_error, grey_frame, warp
from medvos.inference.edges import EdgeRefinement
from medvos.inference.flows_ahead import FlowPair, FlowsAhead
from medvos.inference.propagator import Support, Window, _resize, frame_confidence, winning_labels
from medvos.inference.reuse import PassCache
from medvos.inference.spill import SpillStack
from medvos.io.background import prefetch

_EPS = 1e-3


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log((p + _EPS) / (1 - p + _EPS))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_logit` (up to its epsilon), as float32."""
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def soft_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Soft Dice of two probability maps: how well two cues agree (0 when both are empty)."""
    return float(2 * (a * b).sum() / max(float(a.sum() + b.sum()), 1e-6))


class Streak(NamedTuple):
    """What a track remembers of its recent frames, per object: how many consecutive frames appearance contradicted
    it (re-detection) and on how many it lost the target near it (holding through a drop-out)."""

    contradicted: int = 0
    held: int = 0


@dataclass(frozen=True)
class CueFusion:
    """The per-frame rule combining appearance and motion (the defaults are ``inference.yaml``'s, chosen on the
    development sets together with test-time tuning on; model card, "Appearance and motion").

    Args:
        motion_weight: weight of the motion prior's logit when flow is fully reliable.
        flow_tolerance: forward-backward flow error (pixels at the network's input size) at which the reliability
            has fallen to ``1/e``.
        redetect_support: below this mean appearance inside the prior, the prior may be abandoned...
        redetect_confidence: ...if appearance finds the object elsewhere with at least this mean probability...
        redetect_frames: ...on this many consecutive frames.
        neighbourhood: radius of the prior's neighbourhood, as a fraction of the larger side.
        threshold: foreground probability of a mask.
        anchor_weight: logit weight of the annotation warped straight onto the frame, when that flow is fully
            reliable (0: off).
        anchor_agreement: the annotation's cue counts only where it agrees with the chained prior this well (soft
            Dice).
        motion_cap: the most confident probability either motion cue may assert, ``p`` clipped to ``[1 - cap,
            cap]`` before its logit is added (1: no cap). The carried prior is the previous *fused* result, so its
            logit sums the appearance of every earlier frame: uncapped, the track's memory outweighs a confident
            appearance that sees the target slowly slide off it; capped, motion decides where appearance is unsure
            and yields where it is sure.
        hold_below: appearance abstains (the prior alone carries the track) when its foreground within the prior's
            neighbourhood covers less than this fraction of the prior's area and it finds nothing confident
            elsewhere (0: never)...
        hold_frames: ...for at most this many consecutive frames.
    """

    motion_weight: float = 1.0
    flow_tolerance: float = 8.0
    redetect_support: float = 0.3
    redetect_confidence: float = 0.6
    redetect_frames: int = 1
    neighbourhood: float = 0.06
    threshold: float = 0.5
    anchor_weight: float = 1.0
    anchor_agreement: float = 0.6
    motion_cap: float = 1.0
    hold_below: float = 0.1
    hold_frames: int = 3

    def __post_init__(self) -> None:
        if not 0.5 < self.motion_cap <= 1.0:
            raise ValueError(f"motion_cap must be in (0.5, 1] (a probability a motion cue may assert), got "
                             f"{self.motion_cap}")
        if not 0 <= self.hold_below <= 1 or self.hold_frames < 0:
            raise ValueError(f"hold_below must be in [0, 1] and hold_frames at least 0, got {self.hold_below} and "
                             f"{self.hold_frames}")

    def _motion_logit(self, p: np.ndarray) -> np.ndarray:
        """A motion cue's logit, its confidence capped at ``motion_cap``."""
        if self.motion_cap < 1.0:
            p = np.clip(p, 1.0 - self.motion_cap, self.motion_cap)
        return _logit(p)

    def _near(self, mask: np.ndarray) -> np.ndarray:
        """The neighbourhood of ``mask`` (bool ``(H, W)``)."""
        r = max(1, int(round(self.neighbourhood * max(mask.shape))))
        # within distance r (a disc dilation; the distance transform is 4x faster than an elliptic kernel)
        return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5) <= r

    def reliability(self, flow_error: np.ndarray, near: np.ndarray) -> float:
        """``exp(-(e / flow_tolerance)^2)`` of the mean forward-backward error ``e`` over ``near``."""
        return float(np.exp(-(float(flow_error[near].mean()) / self.flow_tolerance) ** 2))

    def with_anchor(self, appearance: np.ndarray, prior: np.ndarray, anchor: np.ndarray, anchor_error: np.ndarray
                    ) -> np.ndarray:
        """``appearance`` with the annotation warped straight onto this frame (``anchor``; ``anchor_error``: that
        flow's forward-backward error) added in logit space, where it is reliable and agrees with the chained
        ``prior``; otherwise ``appearance`` unchanged."""
        if self.anchor_weight <= 0:
            return appearance
        moved = anchor > self.threshold
        if not moved.any() or soft_dice(anchor, prior) <= self.anchor_agreement:
            return appearance
        weight = self.anchor_weight * self.reliability(anchor_error, self._near(moved))
        return _sigmoid(_logit(appearance) + weight * self._motion_logit(anchor))

    def __call__(self, appearance: np.ndarray, prior: np.ndarray, flow_error: np.ndarray, streak: Streak = Streak(),
                 anchor: np.ndarray | None = None, anchor_error: np.ndarray | None = None
                 ) -> tuple[np.ndarray, float, Streak]:
        """``(fused probability, drift, streak)`` for one object on one frame; all maps ``(H, W)``. ``anchor``: the
        annotated frame's mask warped straight onto this frame, with its flow's forward-backward ``anchor_error``
        (:meth:`with_anchor`; ``None``: the chained prior alone).

        ``streak`` (:class:`Streak`) counts the consecutive earlier frames on which appearance contradicted the prior
        and those on which it lost the target near it (the returned one includes this frame). Motion is abandoned
        once a contradiction has lasted ``redetect_frames`` frames, so one flickering appearance frame does not
        throw away a good track; a vanished prior is abandoned at once. Appearance abstains on the first
        ``hold_frames`` frames of a drop-out (``hold_below``)."""
        a, w = appearance.astype(np.float32), prior.astype(np.float32)
        drift = 1.0 - soft_dice(a, w)
        moved = w > self.threshold
        tracked, lost = bool(moved.any()), False
        if tracked:
            near = self._near(moved)
        if tracked and self.hold_below > 0:  # appearance's own say (before the annotation cue) near the track and
            own = a > self.threshold  # elsewhere
            elsewhere = own & ~near
            lost = (float((own & near).sum()) < self.hold_below * float(moved.sum())
                    and not (elsewhere.any() and float(a[elsewhere].mean()) > self.redetect_confidence))
        held = streak.held + 1 if lost else 0
        if lost and held <= self.hold_frames:  # a drop-out: the prior alone, as reliable as its flow
            return _sigmoid(self.reliability(flow_error, near) * self._motion_logit(w)), drift, Streak(0, held)
        if anchor is not None and anchor_error is not None:
            a = self.with_anchor(a, w, anchor.astype(np.float32), anchor_error)
        if not tracked:
            return a, drift, Streak(streak.contradicted + 1, held)
        fg = a > self.threshold
        far = fg & ~near
        contradicted = (far.any() and float(a[moved].mean()) < self.redetect_support
                        and float(a[far].mean()) > self.redetect_confidence)
        count = streak.contradicted + 1 if contradicted else 0
        if count >= self.redetect_frames:
            return a, drift, Streak(count, held)
        if far.any():
            n, comp = cv2.connectedComponents(fg.astype(np.uint8))
            touching = np.isin(comp, [k for k in np.unique(comp[near]) if k])
            a = np.where(fg & ~touching, np.minimum(a, self.threshold - _EPS), a)
        reliability = self.reliability(flow_error, near)
        return (_sigmoid(_logit(a) + self.motion_weight * reliability * self._motion_logit(w)), drift,
                Streak(count, held))


def _worst(drift: dict[int, float]) -> float:
    """A frame's drift: the largest over its objects (0 with none)."""
    return max(drift.values(), default=0.0)


def meeting_weight(near: float, drift_forward: float, drift_backward: float, agreement: float = 0.0) -> float:
    """Weight of the forward pass where it meets the backward one on a frame between two annotations. ``near``:
    ``(b - t) / (b - a)``, 1 next to the forward pass's annotation ``a``, 0 next to the backward pass's ``b``; each
    pass's weight is its nearness times its agreement with appearance on this frame, ``(1 - drift) ** agreement``
    (0: nearness alone). A pass that started from a misleading annotation (the target partly hidden there) disagrees
    with appearance on the frames it reaches, and yields to the other."""
    if agreement <= 0:
        return near
    f = near * max(1.0 - drift_forward, _EPS) ** agreement
    b = (1.0 - near) * max(1.0 - drift_backward, _EPS) ** agreement
    return f / (f + b) if f + b > 0 else near


@dataclass
class _Track:
    """Where a pass stands: the last frame (index ``t``), its grey image, fused probability per object and
    contradiction streaks, and the annotated frame it started from (index, grey image and masks: the annotation
    cue)."""

    t: int
    grey: np.ndarray
    probs: dict[int, np.ndarray]
    streak: dict[int, Streak]
    origin: tuple[int, np.ndarray, dict[int, np.ndarray]] | None = None

    @classmethod
    def at_anchor(cls, t: int, grey: np.ndarray, masks: dict[int, np.ndarray], cue: bool = True) -> _Track:
        """A pass starting on annotated frame ``t``; ``cue``: its masks are also warped straight onto the frames it
        reaches (the annotation cue)."""
        return cls(t, grey, masks, {}, (t, grey, masks) if cue else None)


_Out = tuple[int, dict[int, np.ndarray], float, tuple[int, int], "np.ndarray | None"]
"""A propagated frame: index, probability per object at the input size, drift, the frame's own size and its grey
image at the input size (``None``: an annotated frame)."""


@dataclass
class _Frame:
    """A frame waiting for the backward pass: its grey image, appearance, forward result and forward drift per
    object."""

    grey: np.ndarray
    size: tuple[int, int]
    appearance: dict[int, np.ndarray]
    forward: dict[int, np.ndarray] | None = None
    drift: dict[int, float] = field(default_factory=dict)


class MotionAwarePropagator:
    """Wraps a propagator (:class:`FewShotPropagator` or :class:`MemoryTreePropagator`): its probabilities are the
    appearance cue, fused with the flow-warped previous result (and the annotation warped straight on) by ``rule``;
    the output is refined along the frames' edges by ``refine``; where a forward and a backward pass meet, each is
    weighted by nearness and agreement (:func:`meeting_weight`, exponent ``meeting_agreement``). Same
    ``supports``/``stream`` interface; the base network runs at its input size on frames resized once, and flow is
    computed at that size.

    Memory: frames after the last annotation stream; frames before it wait for the next annotated frame's backward
    pass (at the input size a grey image and, per object, the appearance and forward maps: about 0.6 MB per frame at
    256 px), then their results wait to be output in frame order; each of the two waits holds at most ``spill_mb`` in
    memory and the rest in a temporary file (:class:`medvos.inference.spill.SpillStack`; the same results).
    """

    def __init__(self, base: Any, rule: CueFusion | None = None, refine: EdgeRefinement | None = None,
                 meeting_agreement: float = 1.0, check: str = "fast", spill_mb: float = 64.0) -> None:
        self.base = base
        self.spill_mb = float(spill_mb)
        self.spilled = 0  # frames that waited in a temporary file (both waits, every stream of this propagator)
        self.meeting_agreement = float(meeting_agreement)
        base.probability_dtype = np.float32  # the base streams float32: no float16 round trip per frame
        self.rule = rule or CueFusion(threshold=base.threshold)
        self.refine = refine if refine is not None else EdgeRefinement()
        # the warp uses DIS "medium"; the reverse flow only checks it (forward-backward error): a cheaper DIS preset
        # (``check``, inference.yaml's flow_check) scores about the same (model card)
        self.flow, self.check = DenseFlow("dis", "medium"), DenseFlow("dis", check)
        self.reuse: PassCache | None = None  # an earlier pass's flows (:meth:`reuse_from`)
        self._ahead: FlowsAhead | None = None  # while streaming: the flows, computed ahead in a background thread
        self.cue_frames: set[int] | None = None  # the annotated frames that give the annotation cue (None: all)
        self.image_size, self.clip_length, self.threshold = base.image_size, base.clip_length, base.threshold
        self.fusion, self.network = base.fusion, base.network

    # ------------------------------------------------------------------------------------------------ supports
    def _at_input(self, frames: torch.Tensor) -> torch.Tensor:
        return _resize(frames.float(), self.image_size, "bilinear")

    def supports(self, annotated: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> list[Support]:
        """As the base's, from the annotated frames resized to the input size (the encodings are identical: the
        base resizes the same way); the annotations become the anchors of the motion passes."""
        small = {a: (self._at_input(img[None])[0], _resize(lab[None, None].float(), self.image_size, "nearest")[0, 0]
                     .to(torch.uint8)) for a, (img, lab) in annotated.items()}
        self._anchors = {a: lab.cpu().numpy() for a, (_, lab) in small.items()}
        return self.base.supports(small)

    # ------------------------------------------------------------------------------------------------- stream
    def reuse_from(self, cache: PassCache | None) -> None:
        """Take flows, and hand the base its query encodings, from ``cache`` (filled by an earlier pass over the same
        frames; None: compute everything)."""
        self.reuse = cache
        self.base.reuse_from(cache)

    def _cue(self, t: int) -> bool:
        """Whether annotated frame ``t`` gives the annotation cue (:attr:`cue_frames`)."""
        return self.cue_frames is None or t in self.cue_frames

    def _pair(self, src: np.ndarray, dst: np.ndarray) -> FlowPair:
        """The flow from grey ``src`` to grey ``dst`` and its forward-backward error (run by the flow thread alone)."""
        flow = self.flow(src, dst)
        return flow, forward_backward_error(flow, self.check(dst, src))

    def _key(self, s: int, d: int) -> tuple[Any, ...]:
        return ("flow", s, d, self.flow.preset, self.check.preset)

    def _flow(self, s: int, d: int, src: np.ndarray, dst: np.ndarray) -> FlowPair:
        """The flow from frame ``s`` (grey ``src``) to frame ``d`` (grey ``dst``) and its forward-backward error,
        from :attr:`reuse` when it holds them, else from the flow thread (requested ahead by :meth:`_request`)."""
        def compute() -> FlowPair:
            return self._ahead.take(s, d, src, dst) if self._ahead is not None else self._pair(src, dst)

        if self.reuse is None:
            return compute()
        return self.reuse.get(self._key(s, d), compute)

    def _request(self, s: int, src: np.ndarray, origin: tuple[int, np.ndarray] | None, t: int, dst: np.ndarray
                 ) -> None:
        """Start the flows :meth:`_step` will take to fuse frame ``t`` (grey ``dst``) from a track on frame ``s``
        (grey ``src``) that started from ``origin`` (the annotated frame's index and grey image when it gives the
        annotation cue), those :attr:`reuse` does not hold."""
        ahead = self._ahead
        if ahead is None:
            return
        wanted = [(s, src)]
        if self.rule.anchor_weight > 0 and origin is not None and origin[0] != s:
            wanted.append(origin)
        for k, image in wanted:
            if self.reuse is None or self._key(k, t) not in self.reuse:
                ahead.request(k, t, image, dst)

    def _step(self, prev: _Track, appearance: dict[int, np.ndarray], dst: np.ndarray, t: int
              ) -> tuple[_Track, dict[int, float]]:
        """Fuse frame ``t`` (grey ``dst``) from the track on the previous frame; the new track and the drift per
        object. (:meth:`_request` starts the same flows ahead.)"""
        to_dst, err_dst = self._flow(prev.t, t, prev.grey, dst)
        to_anchor, err_anchor = None, None
        if self.rule.anchor_weight > 0 and prev.origin is not None:  # the annotation's cue: flow straight from it
            to_anchor, err_anchor = to_dst, err_dst
            if prev.origin[0] != prev.t:  # not the frame next to the annotation (there both flows are one)
                to_anchor, err_anchor = self._flow(prev.origin[0], t, prev.origin[1], dst)
        out, streak, drift = {}, {}, {}
        for v, a in appearance.items():
            prior = np.clip(warp(prev.probs[v].astype(np.float32), to_dst), 0, 1)
            anchor = None
            if to_anchor is not None and v in prev.origin[2]:
                anchor = np.clip(warp(prev.origin[2][v].astype(np.float32), to_anchor), 0, 1)
            out[v], drift[v], streak[v] = self.rule(a, prior, err_dst, prev.streak.get(v, Streak()), anchor, err_anchor)
        return _Track(t, dst, out, streak, prev.origin), drift

    def _window(self, start: int, probs: list[dict[int, np.ndarray]], drift: list[float],
                size: tuple[int, int], greys: list[np.ndarray | None]) -> Window:
        """Fused per-object probabilities at the input size, refined along the edges of their frames' ``greys``
        (``None``: an annotated frame, kept as drawn) -> a :class:`Window` at the frames' own size."""
        values = sorted(probs[0])
        probs = [p if g is None else {v: self.refine(g, p[v]) for v in values} for p, g in zip(probs, greys)]
        stack = torch.from_numpy(np.stack([np.stack([p[v] for v in values]) for p in probs]).astype(np.float32))
        stack = _resize(stack, size, "bilinear")  # (n, L, H, W), once
        labels, best_p = winning_labels(stack, values, self.threshold)
        return Window(start, labels.numpy(), frame_confidence(best_p).numpy(),
                      {v: stack[:, i].numpy() for i, v in enumerate(values)},
                      np.asarray(drift, np.float32))

    @torch.inference_mode()
    def stream(self, windows: Iterable[tuple[int, torch.Tensor]], supports: list[Support]) -> Iterator[Window]:
        anchors = dict(self._anchors)
        values = sorted({s.value for s in supports})
        info: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}

        def at_input() -> Iterator[tuple[int, torch.Tensor]]:
            last: tuple[int, np.ndarray] | None = None  # the frame before, once the forward pass has started
            origin: tuple[int, np.ndarray] | None = None  # its annotated frame, when that gives the annotation cue
            for start, frames in windows:
                small = self._at_input(frames)
                for i, f in enumerate(small):
                    t, grey = start + i, grey_frame(f.cpu().numpy())
                    info[t] = (grey, (int(frames.shape[-2]), int(frames.shape[-1])))
                    if t in anchors:  # the forward pass restarts here
                        origin = (t, grey) if self._cue(t) else None
                    elif last is not None:  # its flows to this frame, computed while earlier frames are fused
                        self._request(last[0], last[1], origin, t, grey)
                    last = (t, grey) if t in anchors or last is not None else None
                yield start, small

        with FlowsAhead(self._pair) as self._ahead:
            try:
                yield from self._stream(at_input(), supports, anchors, values, info)
            finally:
                self._ahead = None

    def _stream(self, at_input: Iterator[tuple[int, torch.Tensor]], supports: list[Support],
                anchors: dict[int, np.ndarray], values: list[int],
                info: dict[int, tuple[np.ndarray, tuple[int, int]]]) -> Iterator[Window]:
        """:meth:`stream`'s loop over the frames resized to the input size (``at_input``; ``info``: their grey
        images and own sizes, filled as they are resized)."""
        last_anchor = max(anchors)

        pending = SpillStack(self.spill_mb)  # frames before the next anchor, newest on top
        met: int | None = None  # where the forward pass met the pending frames (the frame before the first of them)
        prev: _Track | None = None  # the forward pass
        # the network runs a window ahead in a background thread, and the flows in another (FlowsAhead), while this
        # one's frames are fused (all three release the GIL, and none keeps both cores busy on its own)
        for win in prefetch(self.base.stream(at_input, supports), depth=1, label="appearance"):
            out: list[Iterable[_Out]] = []  # this window's outputs in frame order, in parts
            for i in range(win.labels.shape[0]):
                t = win.start + i
                grey, size = info.pop(t)
                appearance = {v: np.asarray(win.probabilities[v][i], np.float32) if v in win.probabilities
                              else np.zeros(grey.shape, np.float32) for v in values}
                if t in anchors:
                    anchor = {v: (anchors[t] == v).astype(np.float32) for v in values}
                    out.append(self._close(pending, met, anchor, grey, t).drain())
                    pending = SpillStack(self.spill_mb)
                    out.append([(t, anchor, 0.0, size, None)])
                    prev = _Track.at_anchor(t, grey, anchor, self._cue(t))
                    continue
                frame = _Frame(grey, size, appearance)
                if prev is not None:
                    prev, frame.drift = self._step(prev, appearance, grey, t)
                    frame.forward = prev.probs
                if t > last_anchor:
                    out.append([(t, frame.forward, _worst(frame.drift), size, grey)])
                else:
                    if not len(pending):
                        met = t - 1 if frame.forward is not None else None
                    pending.push((t, frame))
            yield from self._chunks(itertools.chain.from_iterable(out))
        if len(pending):  # only if an anchor frame never came (a shorter cine than annotated): forward results stand
            oldest_first = SpillStack(self.spill_mb)  # (in frame order, still within the budget)
            for t, f in pending.drain():
                oldest_first.push((t, f.forward or f.appearance, _worst(f.drift), f.size, f.grey))
            self.spilled += pending.spilled + oldest_first.spilled
            yield from self._chunks(oldest_first.drain())

    def _close(self, pending: SpillStack, a: int | None, anchor: dict[int, np.ndarray], grey: np.ndarray,
               b: int) -> SpillStack:
        """Backward pass from the anchor frame ``b`` over the ``pending`` frames (popped, newest first); meet the
        forward pass, which reached them from frame ``a`` (None: it did not), each frame and object weighted by
        :func:`meeting_weight` from that object's drifts (one object's disagreement does not move another's weight).
        Returns the results with the oldest frame on top."""
        out = SpillStack(self.spill_mb)
        nxt = _Track.at_anchor(b, grey, anchor, self._cue(b))
        origin = nxt.origin[:2] if nxt.origin is not None else None
        frames = pending.drain()
        ahead = next(frames, None)
        if ahead is not None:
            self._request(b, grey, origin, ahead[0], ahead[1].grey)
        while ahead is not None:
            (t, frame), ahead = ahead, next(frames, None)
            if ahead is not None:  # the next frame's flows, computed while this one is fused
                self._request(t, frame.grey, origin, ahead[0], ahead[1].grey)
            nxt, drift = self._step(nxt, frame.appearance, frame.grey, t)
            back = nxt.probs
            if frame.forward is None or a is None:
                out.push((t, back, _worst(drift), frame.size, frame.grey))
                continue
            fused, met = {}, {}
            for v in back:
                wf = meeting_weight((b - t) / (b - a), frame.drift[v], drift[v], self.meeting_agreement)
                fused[v] = wf * frame.forward[v] + (1 - wf) * back[v]
                met[v] = wf * frame.drift[v] + (1 - wf) * drift[v]
            out.push((t, fused, _worst(met), frame.size, frame.grey))
        self.spilled += pending.spilled + out.spilled  # (out's spills are all made by now)
        return out

    def _chunks(self, frames: Iterable[_Out]) -> Iterator[Window]:
        """Consecutive frames of one size, in frame order, as windows of at most :attr:`clip_length` frames (a
        backward pass's stretch is not resized and thresholded in one piece; each frame's result is its own)."""
        def window(part: list[_Out]) -> Window:
            return self._window(part[0][0], [p[1] for p in part], [p[2] for p in part], part[0][3],
                                [p[4] for p in part])

        part: list[_Out] = []
        for f in frames:
            if part and (len(part) == self.clip_length or f[3] != part[0][3] or f[0] != part[-1][0] + 1):
                yield window(part)
                part = []
            part.append(f)
        if part:
            yield window(part)

    def windows(self, frames: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        return self.base.windows(frames)

    def propagate(self, frames: torch.Tensor, labels: torch.Tensor, support_frames: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`FewShotPropagator.propagate`."""
        from medvos.inference.propagator import FewShotPropagator

        return FewShotPropagator.propagate(self, frames, labels, support_frames)  # type: ignore[arg-type]
