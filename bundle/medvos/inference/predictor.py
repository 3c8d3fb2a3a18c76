"""A predictor that owns a video's state, SAM2-style: ``init_state(cine)``, ``add_annotation(state, frame, labels)``,
``propagate(state)`` yielding windows of every frame (forward and backward from the annotations, as the propagation
strategy does it).

Everything that belongs to one video lives in its :class:`VideoState`: the lazily decoded cine, its intensity range,
the annotations and the propagation strategy (single path, memory tree, motion fusion) built for it, with that
strategy's memory. One predictor serves any number of videos, one after another or interleaved.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medvos.data.transforms import intensity_range, scale_intensity
from medvos.inference.reuse import PassCache
from medvos.io.background import prefetch
from medvos.io.cine import Cine
from medvos.io.errors import MaskMismatchError
from medvos.io.readers import read_annotations, read_cine

logger = logging.getLogger(__name__)


@dataclass
class VideoState:
    """One video being segmented: the cine (decoded lazily), its intensity range, the annotations ``{frame: (H,W)
    uint8 labels}`` and the propagation strategy built for it (with its memory)."""

    cine: Cine
    intensity: tuple[float, float]
    annotations: dict[int, np.ndarray] = field(default_factory=dict)
    strategy: Any = None
    tuned_for: Any = None  # the annotations the strategy's network was tuned on (test-time tuning)
    # self-annotation: the frames a first pass trusted most, ``{frame: (labels, confidence, drift)}``, and the
    # user's annotations they were taken for
    trusted: dict[int, tuple[np.ndarray, float, float]] = field(default_factory=dict)
    trusted_for: Any = None
    reuse: PassCache | None = None  # the first pass's flows and query encodings, for the second
    tuned_model: Any = None  # the last tuning's network (PyTorch), where a later tuning may start from it

    @property
    def annotated(self) -> list[int]:
        return sorted(self.annotations)

    @property
    def supporting(self) -> dict[int, np.ndarray]:
        """The labels propagation starts from: the user's annotations and the self-annotated frames (a user's
        annotation wins on its frame)."""
        return {**{t: lab for t, (lab, _, _) in self.trusted.items()}, **self.annotations}


@dataclass
class Propagated:
    """Consecutive frames from ``start`` at the cine's own size: ``labels (n,H,W)`` uint8 (annotated frames keep their
    given labels), ``confidence (n,)`` (1 on annotated frames), ``drift (n,)`` (0 without motion and on annotated
    frames), ``annotated (n,)`` bool, ``pixels``: per frame ``{object value: pixel count}`` of the objects present,
    and, when asked for, the network-ready ``frames (n,3,H,W)`` in [0,1]."""

    start: int
    labels: np.ndarray
    confidence: np.ndarray
    drift: np.ndarray
    annotated: np.ndarray
    pixels: list[dict[int, int]]
    frames: np.ndarray | None = None


class VideoPredictor:
    """Segments videos from annotated frames.

    Args:
        make_strategy: builds the propagation strategy for one video (a :class:`FewShotPropagator`,
            :class:`MemoryTreePropagator` or :class:`MotionAwarePropagator`); called once per :meth:`init_state`.
        clip_length: frames decoded and propagated per step, one window (a relearned network's |B|).
        tune: test-time tuning, ``tune(predictor, state) -> strategy``: the strategy of a network tuned on the
            video's annotations (self-annotated frames included: :attr:`VideoState.supporting`), called by
            :meth:`propagate` whenever they changed since the last tuning.
        self_annotate: self-annotation (OnAVOS-style, Voigtlaender and Leibe 2017): a first pass propagates the
            user's annotations; in each of this many equal stretches of the frames they leave, the frame of highest
            trust (confidence x (1 - drift)) whose mask is not empty is taken as annotated too, and a second pass
            (tuned again on all of them) gives the result; 0 = one pass. Skipped (one pass) where an annotated frame
            marks an object absent: a self-annotated frame would move the frames nearest to that mark.
        self_annotate_trust: a frame of lower trust is not taken.
        self_annotate_cue: whether a self-annotated frame's mask is also warped straight onto the frames its pass
            reaches (motion-aware propagation's annotation cue, as the user's annotations are); off, it starts a pass
            and supports appearance, and no flow is computed from it.
        self_annotate_warm: whether the second pass's tuning starts from the first pass's tuned network (on the
            user's annotations) instead of the given one; off, both tunings start from the given network.
        self_annotate_tune_share: the second pass's tuning steps as a share of the first's (``tune_steps``; at
            least one step): a warm start (``self_annotate_warm``) has less left to learn.
        pass_cache_mb: with self-annotation, the first pass's optical flows (a motion-aware strategy's) and query
            encodings (where both passes share the encoder) are kept, up to this many MB per video, for the second
            pass over the same frames (:class:`medvos.inference.reuse.PassCache`): the same result in less time.
            0: none kept.
    """

    def __init__(self, make_strategy: Callable[[], Any], clip_length: int = 8,
                 tune: Callable[[VideoPredictor, VideoState], Any] | None = None, self_annotate: int = 0,
                 self_annotate_trust: float = 0.0, self_annotate_cue: bool = False,
                 self_annotate_warm: bool = False, pass_cache_mb: float = 256.0,
                 self_annotate_tune_share: float = 1.0) -> None:
        if int(self_annotate) < 0 or not 0.0 <= float(self_annotate_trust) <= 1.0:
            raise ValueError(f"self_annotate ({self_annotate}) must be >= 0 and self_annotate_trust "
                             f"({self_annotate_trust}) in [0, 1]")
        if float(pass_cache_mb) < 0:
            raise ValueError(f"pass_cache_mb ({pass_cache_mb}) must be >= 0")
        if not float(self_annotate_tune_share) > 0:
            raise ValueError(f"self_annotate_tune_share ({self_annotate_tune_share}) must be > 0 (a share of "
                             "tune_steps)")
        self.make_strategy = make_strategy
        self.clip_length = int(clip_length)
        self.tune = tune
        self.self_annotate, self.self_annotate_trust = int(self_annotate), float(self_annotate_trust)
        self.self_annotate_cue, self.pass_cache_mb = bool(self_annotate_cue), float(pass_cache_mb)
        self.self_annotate_warm = bool(self_annotate_warm)
        self.self_annotate_tune_share = float(self_annotate_tune_share)

    @classmethod
    def with_defaults(cls, network: torch.nn.Module, image_size: int, clip_length: int,
                      tuning: dict[str, Any] | None = None, **options: Any) -> VideoPredictor:
        """The `inferring` predictor: ``inference.yaml``'s defaults, ``options`` overriding them: the propagation
        (:func:`medvos.inference.defaults.make_propagator`), the test-time tuning (``tune_*``, in ``options`` or
        gathered in ``tuning``, the dict `inferring` also hands to test-time relearning;
        :class:`medvos.inference.tuning.AnnotationTuning`) and self-annotation (``self_annotate*``). The network's
        runtime (the exported graph, compiled) is prepared here, once, not per video; a network tuned on one video
        shares its exported query graph when the tuning left the backbone as it was, else runs in PyTorch unless the
        video is long enough for an export to pay (:func:`medvos.networks.exported.for_tuned`)."""
        from medvos.inference.tuning import AnnotationTuning
        from medvos.inference.defaults import PREDICTOR_KEYS, inference_defaults, make_propagator, tuning_options
        from medvos.networks.exported import for_runtime, for_tuned

        tune_opts, options = tuning_options({**(tuning or {}), **options})
        own = {k: options.pop(k, inference_defaults()[k]) for k in PREDICTOR_KEYS}
        tuning = AnnotationTuning(**tune_opts)  # a bad tuning option is refused before the export
        runtime = str({**inference_defaults(), **options}["runtime"])
        grown_tuned = bool(getattr(network, "annotation_tuned", False))  # relearned on the cine from a tuned model
        once = bool(getattr(network, "one_cine", False))  # relearned on the cine: exported for it alone
        ready = for_runtime(network, runtime, image_size, clip_length, keep=not once)
        if tuning.on and hasattr(network, "tau") and not grown_tuned:
            logger.info("test-time tuning is for phase-1 models; %s is relearned: it propagates as it is",
                        type(network).__name__)
        tune = None
        if tuning.on and not hasattr(network, "tau"):
            def tune(predictor: VideoPredictor, state: VideoState) -> Any:
                images, labels = predictor.annotated_at_size(state, image_size)
                warm = predictor.self_annotate_warm and state.trusted and state.tuned_model is not None
                share = predictor.self_annotate_tune_share if state.trusted else 1.0  # the second tuning's
                tune_now = dataclasses.replace(tuning, steps=max(1, round(share * tuning.steps)))
                state.tuned_model = tune_now(state.tuned_model if warm else network, images, labels)
                tuned = for_tuned(state.tuned_model, ready, runtime, image_size, clip_length, state.cine.num_frames)
                return make_propagator(tuned, image_size, clip_length, tuned=True, prepared=True, **options)

        return cls(lambda: make_propagator(ready, image_size, clip_length, tuned=grown_tuned, **options), clip_length,
                   tune, **own)

    # ------------------------------------------------------------------------------------------------ state
    def init_state(self, video: Any, min_frames: int = 2) -> VideoState:
        """A video's state: the cine any :func:`medvos.io.read_cine` input names (or a :class:`Cine`), read lazily."""
        cine = video if isinstance(video, Cine) else read_cine(video, min_frames=min_frames, lazy=True)
        return VideoState(cine, intensity_range(cine.frames), strategy=self.make_strategy())

    def add_annotation(self, state: VideoState, frame: int, labels: np.ndarray) -> None:
        """Annotate ``frame`` with ``labels (H,W)`` (0 = background; an object not drawn is absent there)."""
        t, size = state.cine.num_frames, state.cine.size
        labels = np.asarray(labels)
        if not 0 <= int(frame) < t:
            raise MaskMismatchError("annotation", f"frame {frame} is not in the video ({t} frames)")
        if labels.shape != tuple(size):
            raise MaskMismatchError("annotation", f"labels of {labels.shape} for frames of {tuple(size)}")
        state.annotations[int(frame)] = labels.astype(np.uint8, copy=False)

    def add_annotations(self, state: VideoState, annotation: Any, frames: Sequence[int] | None = None) -> list[int]:
        """The annotated frames of a mask file or folder (:func:`medvos.io.readers.read_annotations`): ``frames``
        when given, else its non-empty (or, for a partial folder, covered) frames. Returns them."""
        given = read_annotations(annotation, state.cine, frames or None)
        if not given:
            raise MaskMismatchError(str(annotation), "no annotated frame: the mask is empty on every frame")
        if not any(lab.any() for lab in given.values()):
            raise MaskMismatchError(str(annotation), f"annotated frame(s) {sorted(given)} are empty: draw the "
                                    "object on at least one (an annotated frame without an object says it is "
                                    "absent there)")
        for t, lab in given.items():
            self.add_annotation(state, t, lab)
        return sorted(given)

    def annotated_at_size(self, state: VideoState, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The annotated frames that show an object (self-annotated ones included: :attr:`VideoState.supporting`),
        prepared (:meth:`prepare`) and resized to ``size`` px: ``(images (n,3,S,S) in [0,1], labels (n,S,S)
        uint8)`` (area for images, nearest for labels)."""
        import torch.nn.functional as F

        given = state.supporting
        ann = [a for a in sorted(given) if given[a].any()]
        images = torch.cat([torch.from_numpy(self.prepare(state, state.cine.frames[a : a + 1])) for a in ann])
        labels = torch.from_numpy(np.stack([given[a] for a in ann])).float()[:, None]
        return (F.interpolate(images.float(), size=(size, size), mode="area"),
                F.interpolate(labels, size=(size, size), mode="nearest")[:, 0].to(torch.uint8))

    # -------------------------------------------------------------------------------------------- propagate
    def prepare(self, state: VideoState, frames: np.ndarray) -> np.ndarray:
        """Frames ``(n,C,H,W)`` of the cine as the network takes them: intensities scaled to [0,1], grey as RGB."""
        x = scale_intensity(frames, state.intensity)
        return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x

    def propagate(self, state: VideoState, keep_frames: bool = False, stats: dict[str, float] | None = None
                  ) -> Iterator[Propagated]:
        """Every frame of the video, window by window in frame order (decoded ahead in a thread); annotated frames
        keep their labels. ``keep_frames``: also the network-ready frames (for an overlay). With self-annotation a
        first pass (timed in ``stats`` as ``self-annotation pass``, its tuning included) picks the trusted frames,
        once per set of the user's annotations."""
        if not state.annotations:
            raise MaskMismatchError("annotation", "no annotated frame: add an annotation first")
        one_pass = bool(self.self_annotate) and _declares_absence(state.annotations)
        if one_pass:
            logger.info("self-annotation skipped: an annotated frame marks an object absent (a self-annotated frame "
                        "would move where its absence begins); one pass")
        if self.self_annotate and not one_pass:
            key = _key(state.annotations)
            if state.reuse is None and self.pass_cache_mb > 0:  # of the frames alone: kept per video
                state.reuse = PassCache(self.pass_cache_mb)
            if state.trusted_for != key:
                t0 = time.perf_counter()
                state.trusted = {}
                if state.reuse is not None:
                    state.reuse.storing = True
                state.trusted = self._trusted(self._pass(state, False, stats, count_pixels=False), state)
                state.trusted_for = key
                if stats is not None:
                    stats["self-annotation pass"] = stats.get("self-annotation pass", 0.0) + time.perf_counter() - t0
                logger.info("self-annotation: frames %s taken as annotated", sorted(state.trusted))
            if state.reuse is not None:  # the second pass reads the first's results and keeps none of its own
                state.reuse.storing = False
        else:
            state.trusted, state.trusted_for, state.reuse = {}, None, None
        yield from self._pass(state, keep_frames, stats)

    def _trusted(self, windows: Iterator[Propagated], state: VideoState) -> dict[int, tuple[np.ndarray, float, float]]:
        """The most trusted frame with an object in each of :attr:`self_annotate` equal stretches of the frames the
        user did not annotate (streamed: one mask per stretch held)."""
        free = [t for t in range(state.cine.num_frames) if t not in state.annotations]
        stretch = {t: i for i, part in enumerate(np.array_split(np.asarray(free), self.self_annotate)) for t in part}
        best: dict[int, tuple[float, int, np.ndarray, float, float]] = {}
        for win in windows:
            for i, lab in enumerate(win.labels):
                t = win.start + i
                if t not in stretch or not lab.any():
                    continue
                trust = float(win.confidence[i]) * (1.0 - float(win.drift[i]))
                if trust >= self.self_annotate_trust and (stretch[t] not in best or trust > best[stretch[t]][0]):
                    best[stretch[t]] = (trust, t, lab.copy(), float(win.confidence[i]), float(win.drift[i]))
        return {t: (lab, conf, drift) for _, t, lab, conf, drift in best.values()}

    def _pass(self, state: VideoState, keep_frames: bool, stats: dict[str, float] | None, count_pixels: bool = True
              ) -> Iterator[Propagated]:
        """One propagation from the supporting frames (the user's annotations and the self-annotated frames);
        ``count_pixels`` False (the self-annotation pass, which reads only labels, confidence and drift): no
        per-frame pixel counts (``pixels`` empty)."""
        cine, given = state.cine, state.supporting
        if self.tune is not None:
            key = _key(given)
            if state.tuned_for != key:
                t0 = time.perf_counter()
                state.strategy, state.tuned_for = self.tune(self, state), key
                if stats is not None:
                    stats["test-time tuning"] = stats.get("test-time tuning", 0.0) + time.perf_counter() - t0
        strategy = state.strategy
        if hasattr(strategy, "reuse_from"):  # None: computes everything
            strategy.reuse_from(state.reuse)
        if hasattr(strategy, "cue_frames"):  # motion-aware: the frames whose masks it warps straight on
            strategy.cue_frames = None if self.self_annotate_cue else set(state.annotations)
        supports = strategy.supports({a: (torch.from_numpy(self.prepare(state, cine.frames[a : a + 1]))[0],
                                          torch.from_numpy(given[a])) for a in sorted(given)})
        shown = _ShownFrames(cine)  # frames awaiting their window, for the overlay (a strategy may output late)

        def windows() -> Iterator[tuple[int, torch.Tensor]]:
            for start in range(0, cine.num_frames, self.clip_length):
                raw = cine.frames[start : start + self.clip_length]
                if keep_frames:
                    shown.keep(start, raw)
                yield start, torch.from_numpy(self.prepare(state, raw))

        ahead = prefetch(windows(), stats=stats, label="decode + intensity (thread)")
        for win in strategy.stream(ahead, supports):
            start, lab, conf, n = win.start, win.labels, win.confidence, len(win.labels)
            drift = np.zeros(n, np.float32) if win.drift is None else np.asarray(win.drift, np.float32).copy()
            marked = np.zeros(n, bool)
            for t in range(start, start + n):  # supporting frames keep their labels: the one place this is done
                if t in state.annotations:  # the user's: confidence 1, no drift, marked annotated
                    lab[t - start], conf[t - start], drift[t - start], marked[t - start] = \
                        state.annotations[t], 1.0, 0.0, True
                elif t in state.trusted:  # self-annotated: the first pass's labels, confidence and drift
                    lab[t - start], conf[t - start], drift[t - start] = state.trusted[t]
            frames = self.prepare(state, shown.take(start, n)) if keep_frames else None
            yield Propagated(start, lab, conf, drift, marked, [_pixels(f) for f in lab] if count_pixels else [], frames)


SHOWN_MB = 64.0  # the overlay's frames waiting for their window, at most (the rest read again)


class _ShownFrames:
    """The cine's frames as read, waiting for their window's output (the overlay's frames): kept up to ``budget_mb``
    (as uint8 where that is lossless), read again from the cine beyond it, so memory stays bounded however late a
    strategy outputs (a backward pass waits for a whole stretch). :meth:`keep` runs in the decoding thread,
    :meth:`take` in the caller's."""

    def __init__(self, cine: Cine, budget_mb: float | None = None) -> None:
        self.cine, self.budget = cine, int((SHOWN_MB if budget_mb is None else budget_mb) * 2**20)
        self._frames: dict[int, np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, start: int, raw: np.ndarray) -> None:
        small = raw.astype(np.uint8)
        raw = small if np.array_equal(small, raw) else raw
        with self._lock:
            for i, f in enumerate(raw):
                if self._bytes + f.nbytes > self.budget:
                    return  # these frames are read again when shown
                self._frames[start + i], self._bytes = f, self._bytes + f.nbytes

    def take(self, start: int, n: int) -> np.ndarray:
        """Frames ``start .. start + n - 1`` as read (no longer kept)."""
        with self._lock:
            kept = [self._frames.pop(t, None) for t in range(start, start + n)]
            self._bytes -= sum(f.nbytes for f in kept if f is not None)
        if any(f is None for f in kept):
            return np.asarray(self.cine.frames[start : start + n])
        return np.stack(kept)


def _declares_absence(annotations: dict[int, np.ndarray]) -> bool:
    """Whether an annotated frame lacks an object another one shows (the user marks it absent there)."""
    shown = [set(np.unique(lab).tolist()) - {0} for lab in annotations.values()]
    return any(objects != set().union(*shown) for objects in shown)


def _key(annotations: dict[int, np.ndarray]) -> list[tuple[int, int]]:
    """What identifies a set of annotations: each frame and a hash of its labels."""
    return [(a, hash(annotations[a].tobytes())) for a in sorted(annotations)]


def _pixels(labels: np.ndarray) -> dict[int, int]:
    """``{value: pixel count}`` of the objects on one frame (one linear pass)."""
    counts = np.bincount(labels.ravel())
    return {int(v): int(counts[v]) for v in np.flatnonzero(counts[1:]) + 1}
