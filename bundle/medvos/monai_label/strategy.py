"""Strategy "least_confident_frame": which cine and frame the annotator should label next."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from medvos.io.errors import CineReadError
from medvos.io.readers import read_cine
from medvos.monai_label.datastore import datastore_annotation
from medvos.monai_label.infer import PropagateInfer
from medvos.monai_label.requests import check_name

logger = logging.getLogger(__name__)


HOLD_SECONDS = 600  # a cine proposed to one annotator is not proposed to another for this long (unless none is left)
DRIFT_ONSET = 0.7  # smoothed drift (1 - soft Dice of appearance and motion) from which a frame counts as drifting...
DRIFT_RISE = 0.15  # ...and at least this far above the cine's own level next to its annotations
NEAR_ANNOTATION = 3  # frames on either side of an annotated frame that give that level
DISTANCE_PRIOR = 0.5  # every frame's error counts at least this much in Next Sample's correction gain (frame_error)
MODES = ("correction_gain", "drift_onset", "confidence")  # how next_frame picks (its docstring)


def smoothed(values: list[float], radius: int = 1) -> list[float]:
    """Moving average over ``2 * radius + 1`` frames (fewer at the ends): one flickering frame is not a drift."""
    return [float(np.mean(values[max(0, t - radius) : t + radius + 1])) for t in range(len(values))]


def drift_level(drift: list[float], annotated: set[int], near: int = NEAR_ANNOTATION) -> float:
    """The cine's own drift level: the median raw drift over the frames within ``near`` of an annotated frame (0 if
    none). Next to an annotation the motion prior is the annotation moved by a flow step or two, as right as it will
    ever be, so disagreement there is the appearance cue's own error on this cine (an untuned network on an anatomy
    it was never shown), not a drift."""
    close = [drift[t] for t in range(len(drift)) if t not in annotated
             and any(abs(t - a) <= near for a in annotated)]
    return float(np.median(close)) if close else 0.0


def correction_gain(error: list[float], annotated: set[int], chunk: int = 512) -> np.ndarray:
    """Per frame ``t``, what annotating it stands to correct: ``sum_u error[u] * (1 - d_t(u) / d(u))`` over the frames
    ``u`` it would come nearer to, where ``d(u)`` is ``u``'s distance to its nearest annotated frame and ``d_t(u)``
    that distance once ``t`` is annotated too. Propagation errors grow with the distance a mask travels, so a
    correction helps the frames it brings an annotation closer to, by how much closer; ``error`` weights each frame
    by how wrong it looks (ones: distance alone, which names the middle of the longest stretch). Annotated frames
    gain 0. Computed ``chunk`` candidate frames at a time (memory ``chunk x frames``)."""
    n = len(error)
    frames = np.arange(n, dtype=np.float64)
    err = np.asarray(error, dtype=np.float64)
    ann = np.asarray(sorted(a for a in annotated if 0 <= a < n), dtype=np.float64)
    d = np.abs(frames[:, None] - ann[None, :]).min(axis=1) if len(ann) else np.full(n, float(n))
    weight = np.where(d > 0, err / np.maximum(d, 1.0), 0.0)  # error[u] / d(u); 0 on annotated frames
    gain = np.empty(n)
    for lo in range(0, n, chunk):
        t = frames[lo : lo + chunk, None]
        gain[lo : lo + chunk] = (np.maximum(d[None, :] - np.abs(t - frames[None, :]), 0.0) * weight).sum(axis=1)
    gain[ann.astype(int)] = 0.0
    return gain


def frame_error(confidence: list[float], drift: list[float] | None, prior: float = DISTANCE_PRIOR) -> list[float]:
    """How wrong each frame looks, for :func:`correction_gain`: ``prior + (1 - prior) * x``, with ``x`` the 3-frame
    moving average of the drift (appearance and motion disagree), or ``1 - confidence`` without a drift signal.
    ``prior`` keeps every frame in the count: the two cues can agree and both be wrong, and a mask that travels less
    far helps anyway (model card, "Next Sample")."""
    x = smoothed(list(drift)) if drift else [1.0 - c for c in confidence]
    return [prior + (1.0 - prior) * v for v in x]


def next_frame(confidence: list[float], drift: list[float] | None, annotated: set[int],
               mode: str = "correction_gain", onset: float = DRIFT_ONSET, rise: float = DRIFT_RISE,
               relative: bool = True) -> tuple[int, float, str] | None:
    """``(frame, urgency in [0, 1] (lower = label sooner), reason)`` for one propagated cine, or None.

    ``mode``:

    - ``"correction_gain"`` (the default): the frame whose annotation stands to correct the most,
      :func:`correction_gain` over :func:`frame_error`: far from the annotated frames, where appearance and motion
      disagree; scored ``1 - gain / frames``. Measured with true masks as the corrections, it gains more per
      correction than the two below (model card, "Next Sample");
    - ``"drift_onset"`` (0.4.0-0.13.0): where appearance and motion keep disagreeing (the 3-frame moving average of
      the drift reaches ``onset`` and, with ``relative``, rises at least ``rise`` above the cine's level next to its
      annotations, :func:`drift_level`), the frame where that drift starts: the first frame (smoothed or raw drift at
      that threshold) of the run holding the worst smoothed drift, scored ``1 - drift``; otherwise the least
      confident frame;
    - ``"confidence"``: the least confident frame.
    """
    if mode not in MODES:
        raise ValueError(f"next-frame mode {mode!r}: expected one of {MODES}")
    frames = [t for t in range(len(confidence)) if t not in annotated]
    if not frames:
        return None
    if mode == "correction_gain":
        gain = correction_gain(frame_error(confidence, drift), annotated)
        t = max(frames, key=gain.__getitem__)
        return t, float(np.clip(1.0 - gain[t] / len(confidence), 0.0, 1.0)), \
            "annotating this frame stands to correct the most (far from the annotated frames, weighted by the drift)"
    level = smoothed(list(drift)) if drift and mode == "drift_onset" else None
    if level:
        threshold = max(onset, drift_level(list(drift), annotated) + rise) if relative else onset
        if max(level[t] for t in frames) >= threshold:
            worst = max(frames, key=level.__getitem__)
            start = worst
            while start - 1 in frames and max(level[start - 1], drift[start - 1]) >= threshold:
                start -= 1
            return start, 1.0 - level[worst], "appearance and motion disagree from this frame (drift starts)"
    t = min(frames, key=confidence.__getitem__)
    return t, confidence[t], "lowest propagated confidence"


class LeastConfidentFrame(Strategy):
    """A cine without any annotation first (frame 0); otherwise, over every annotated cine, the frame whose
    annotation stands to correct the most (far from the annotated frames, where appearance and motion disagree; see
    :func:`next_frame`), the most urgent cine first (annotated frames excluded). The name is the one 3D Slicer's
    plugin knows the strategy by. Propagations are cached per file version, so asking again after an annotation
    re-propagates only the cine that changed. Unreadable cines are skipped and listed in the answer."""

    def __init__(self, infer: PropagateInfer, annotation_tag: str = "final") -> None:
        super().__init__("Propose the cine and frame whose annotation stands to correct the most")
        self.infer = infer
        self.annotation_tag = annotation_tag
        self._readable: dict[tuple, str | None] = {}

    def check_readable(self, path: str) -> None:
        """Raise :class:`CineReadError` for a cine that cannot be read (checked once per file version)."""
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        if key not in self._readable:
            try:
                read_cine(path, min_frames=2, lazy=True)  # header and first frame (video: every frame counted)
                self._readable[key] = None
            except CineReadError as exc:
                self._readable[key] = exc.problem
        if self._readable[key] is not None:
            raise CineReadError(path, self._readable[key])

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        tag = check_name(request.get("annotation_tag", self.annotation_tag), "label tag")
        client = request.get("client_id")  # 3D Slicer sends its "clientId" setting; without one no cine is held
        candidates: list[dict[str, Any]] = []  # every cine's proposal; the most urgent one not held by another
        skipped = []
        for image_id in sorted(datastore.list_images()):
            try:
                if not datastore.get_label_uri(image_id, tag):
                    self.check_readable(datastore.get_image_uri(image_id))
                    candidates.append({"id": image_id, "frame": 0, "confidence": -1.0,
                                       "reason": "no annotated frame yet"})
                    continue
                annotation, frames = datastore_annotation(datastore, image_id, tag)
                res = self.infer.propagate(datastore.get_image_uri(image_id), annotation,
                                           self.infer.fusion, annotated=frames)
            except CineReadError as exc:
                logger.warning("least_confident_frame: skipping %s (%s)", image_id, exc.problem)
                skipped.append({"id": image_id, "error": exc.problem})
                continue
            done = set(res["annotated_frames"])
            pick = next_frame(res["frame_confidence"], res.get("frame_drift"), done)
            if pick is None:
                continue
            t, urgency, reason = pick
            candidates.append({"id": image_id, "frame": t, "confidence": urgency, "reason": reason,
                               "drift": res.get("frame_drift", [0.0] * (t + 1))[t],
                               "annotated_frames": sorted(done), "model": res["model"]})
        if not candidates:
            return {}
        candidates.sort(key=lambda c: c["confidence"])
        strategy = str(request.get("strategy") or "least_confident_frame")
        free = [c for c in candidates if not client or not self._held_by_another(datastore, c["id"], str(client),
                                                                                  strategy)]
        best = dict((free or candidates)[0])
        best["confidence"] = max(best["confidence"], 0.0)
        # 3D Slicer names the loaded volume after PatientID (else the name): it tells the annotator the frame
        info = datastore.get_image_info(best["id"]) or {}
        if not info.get("PatientID"):
            best["PatientID"] = f"{best['id']} - annotate frame {best['frame']}"
        return {**best, "skipped": skipped}

    @staticmethod
    def _held_by_another(datastore: Datastore, image_id: str, client: str, strategy: str) -> bool:
        """Whether this strategy proposed the cine to another client in the last :data:`HOLD_SECONDS` (MONAI Label
        records each proposal's time and client in the image's info), so two annotators get different cines."""
        import time

        record = ((datastore.get_image_info(image_id) or {}).get("strategy") or {}).get(strategy, {})
        return bool(record) and record.get("client_id") not in (None, client) and \
            time.time() - float(record.get("ts", 0)) < HOLD_SECONDS
