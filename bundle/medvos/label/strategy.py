"""Strategy "least_confident_frame": which cine and frame the annotator should label next."""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from medvos.io.errors import CineReadError
from medvos.io.readers import read_cine
from medvos.label.datastore import datastore_annotation
from medvos.label.infer import PropagateInfer
from medvos.label.requests import check_name

logger = logging.getLogger(__name__)


class LeastConfidentFrame(Strategy):
    """A cine without any annotation first (frame 0); otherwise, over every annotated cine, the frame where the
    propagated confidence is lowest (annotated frames excluded). Propagations are cached per file version, so
    asking again after an annotation re-propagates only the cine that changed. Unreadable cines are skipped and
    listed in the answer."""

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
        best: dict[str, Any] | None = None
        skipped = []
        for image_id in sorted(datastore.list_images()):
            try:
                if not datastore.get_label_uri(image_id, tag):
                    self.check_readable(datastore.get_image_uri(image_id))
                    return {"id": image_id, "frame": 0, "confidence": 0.0, "reason": "no annotated frame yet",
                            "skipped": skipped}
                annotation, frames = datastore_annotation(datastore, image_id, tag)
                res = self.infer.propagate(datastore.get_image_uri(image_id), annotation,
                                           self.infer.config().get("fusion", "nearest"), annotated=frames)
            except CineReadError as exc:
                logger.warning("least_confident_frame: skipping %s (%s)", image_id, exc.problem)
                skipped.append({"id": image_id, "error": exc.problem})
                continue
            conf, done = res["frame_confidence"], set(res["annotated_frames"])
            frames = [t for t in range(len(conf)) if t not in done]
            if not frames:
                continue
            t = min(frames, key=conf.__getitem__)
            if best is None or conf[t] < best["confidence"]:
                best = {"id": image_id, "frame": t, "confidence": conf[t], "reason": "lowest propagated confidence",
                        "annotated_frames": sorted(done), "model": res["model"]}
        if best is None:
            return {}
        return {**best, "skipped": skipped}
