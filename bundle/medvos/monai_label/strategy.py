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
DRIFT_ONSET = 0.7  # smoothed drift (1 - soft Dice of appearance and motion) from which a frame counts as drifting


def smoothed(values: list[float], radius: int = 1) -> list[float]:
    """Moving average over ``2 * radius + 1`` frames (fewer at the ends): one flickering frame is not a drift."""
    return [float(np.mean(values[max(0, t - radius) : t + radius + 1])) for t in range(len(values))]


def next_frame(confidence: list[float], drift: list[float] | None, annotated: set[int],
               onset: float = DRIFT_ONSET) -> tuple[int, float, str] | None:
    """``(frame, urgency in [0, 1] (lower = label sooner), reason)`` for one propagated cine, or None.

    Where appearance and motion keep disagreeing (the 3-frame moving average of the drift reaches ``onset``), the
    frame where that drift starts: the first frame (smoothed or raw drift at least ``onset``) of the run holding the
    worst smoothed drift, scored ``1 - drift``.
    Otherwise the least confident frame.
    """
    frames = [t for t in range(len(confidence)) if t not in annotated]
    if not frames:
        return None
    level = smoothed(list(drift)) if drift else None
    if level and max(level[t] for t in frames) >= onset:
        worst = max(frames, key=level.__getitem__)
        start = worst
        while start - 1 in frames and max(level[start - 1], drift[start - 1]) >= onset:
            start -= 1
        return start, 1.0 - level[worst], "appearance and motion disagree from this frame (drift starts)"
    t = min(frames, key=confidence.__getitem__)
    return t, confidence[t], "lowest propagated confidence"


class LeastConfidentFrame(Strategy):
    """A cine without any annotation first (frame 0); otherwise, over every annotated cine, the frame where drift
    starts (appearance and motion disagree; see :func:`next_frame`) or else the least confident frame (annotated
    frames excluded). Propagations are cached per file version, so asking again after an annotation re-propagates
    only the cine that changed. Unreadable cines are skipped and listed in the answer."""

    def __init__(self, infer: PropagateInfer, annotation_tag: str = "final") -> None:
        super().__init__("Propose the cine and frame with the lowest propagated confidence")
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
