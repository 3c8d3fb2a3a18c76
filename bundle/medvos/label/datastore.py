"""The app's datastore: MONAI Label's local datastore over cine files, with ids and tags checked."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore

from medvos.io.readers import labels_from_pixels, read_cine, whole_mask_rule
from medvos.label.requests import RequestError, check_name

# 2D+t volumes (time as the third axis, as 3D Slicer shows them), DICOM cines, ITK single-file images and videos.
PROPAGATED_TAG = "propagated"  # the last propagation of a datastore label, kept to recognise corrections
CINE_EXTENSIONS = ["*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.mhd", "*.dcm", "*.mp4", "*.avi", "*.gif"]


class CineDatastore(LocalDatastore):
    """``LocalDatastore`` that refuses ids and tags that are not plain names (MONAI Label joins them into paths)."""

    def __init__(self, studies: str, extensions: list[str] | None = None) -> None:
        super().__init__(studies, extensions=extensions or CINE_EXTENSIONS,
                         auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                         read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def require_image(self, image_id: Any) -> str:
        """The path of a known image id (404 otherwise)."""
        check_name(image_id, "image id")
        uri = self.get_image_uri(image_id)
        if not uri:
            raise RequestError(404, f"unknown image id {image_id!r}: not in the datastore")
        return uri

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        if image_id:
            check_name(image_id, "image id")
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        self.require_image(image_id)
        check_name(label_tag, "label tag")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_name(label_tag, "label tag")
        super().remove_label(label_id, label_tag)


def corrected_frames(annotation: str, previous: str, previous_annotated: Sequence[int], window: int = 16
                     ) -> list[int]:
    """The frames an annotator drew or corrected: non-empty in ``annotation`` and either annotated before or
    different from the ``previous`` propagation result (so re-submitting a corrected result re-propagates from the
    original annotation plus the corrections, not from every frame). Both volumes are compared window by window."""
    now_cine, before_cine = read_cine(annotation, lazy=True), read_cine(previous, lazy=True)
    if now_cine.frames.shape[0] != before_cine.frames.shape[0] or now_cine.size != before_cine.size:
        return []
    keep, out = {int(t) for t in previous_annotated}, []
    rules = [whole_mask_rule(c, window) for c in (now_cine, before_cine)]  # the whole volumes' value rules
    for start in range(0, now_cine.num_frames, window):
        now = labels_from_pixels(now_cine.frames[start:start + window], rule=rules[0])
        before = labels_from_pixels(before_cine.frames[start:start + window], rule=rules[1])
        drawn = now.reshape(len(now), -1).any(1)
        changed = (now != before).reshape(len(now), -1).any(1)
        out += [start + k for k in range(len(now)) if drawn[k] and (changed[k] or start + k in keep)]
    return out


def datastore_annotation(datastore: Any, image_id: str, tag: str) -> tuple[str, list[int]]:
    """The label of ``image_id`` under ``tag`` and its annotated frames (empty list: every non-empty frame).

    After a propagation (saved under :data:`PROPAGATED_TAG` with the annotated frames and the SHA-1 of the label it
    came from) a re-submitted, corrected label counts only the frames drawn or corrected by the annotator (see
    :func:`corrected_frames`); an unchanged label keeps the annotated frames of its propagation.
    """
    annotation = datastore.get_label_uri(image_id, tag)
    if not annotation:
        raise RequestError(422, f"image {image_id!r} has no label under tag {tag!r}: upload a label with the "
                                "annotated frame(s) or save one to the datastore")
    previous = datastore.get_label_uri(image_id, PROPAGATED_TAG)
    if not previous:
        return annotation, []
    info = datastore.get_label_info(image_id, PROPAGATED_TAG)
    before = info.get("annotated_frames", [])
    if info.get("source_sha1") == file_sha1(annotation):  # the label that propagation came from: unchanged
        return annotation, list(before)
    return annotation, corrected_frames(annotation, previous, before)


def file_sha1(path: str) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()
