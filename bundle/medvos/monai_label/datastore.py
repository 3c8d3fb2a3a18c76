"""The app's datastore: MONAI Label's local datastore over cine files, with ids and tags checked."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import logging
import os

import numpy as np
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore

from medvos.io.errors import CineReadError
from medvos.io.readers import labels_from_pixels, read_annotations, read_cine, whole_mask_rule
from medvos.monai_label.requests import RequestError, check_name, parse_frames

logger = logging.getLogger(__name__)
# 2D+t volumes (time as the third axis, as 3D Slicer shows them), DICOM cines, ITK single-file images and videos.
PROPAGATED_TAG = "propagated"  # the last propagation of a datastore label, kept to recognise corrections
CINE_EXTENSIONS = ["*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.mhd", "*.dcm", "*.mp4", "*.avi", "*.gif"]


class CineDatastore(LocalDatastore):
    """``LocalDatastore`` over cine files that refuses ids and tags that are not plain names (MONAI Label joins them
    into paths) and checks what is stored: an uploaded cine must be readable (2 frames at least, a listed file type)
    and must not replace another under the same id; a label must fit its cine (frame count and size) and have an
    object drawn or name its annotated frames (``annotated_frames`` in the label's params: a listed frame without an
    object says the object is absent there). Refusals answer 422 (409 for a taken id) naming the problem.

    A frame folder (PNG/JPEG frames) or a DICOM series folder ``X/`` in the studies folder is listed as ``X``: the
    datastore writes its frames once as ``X.nii.gz`` beside it (never over an existing file), the volume 3D Slicer
    downloads and results are put on.
    """

    def __init__(self, studies: str, extensions: list[str] | None = None) -> None:
        self._folders_seen: dict[tuple, str | None] = {}
        super().__init__(studies, extensions=extensions or CINE_EXTENSIONS,
                         auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                         read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    # ------------------------------------------------------------------ folder cines
    def _add_non_existing_images(self) -> int:
        self.convert_folders()
        return super()._add_non_existing_images()

    def convert_folders(self) -> list[str]:
        """Write ``X.nii.gz`` for each cine folder ``X/`` of the studies folder that has no listed file of that name;
        the files written. Folders that are not cines are skipped (checked once per folder version)."""
        root = Path(self._datastore.image_path())
        labels = Path(self._datastore.label_path(None)).resolve()
        taken = {self._to_id(f)[0] for f in self._list_files(str(root), self._extensions)}
        written = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.resolve() == labels or folder.name in taken or not _is_plain_name(folder.name):
                continue
            key = (str(folder), folder.stat().st_mtime_ns)
            if key in self._folders_seen:
                continue
            try:
                cine = read_cine(folder, min_frames=2, lazy=True)
                frames = np.asarray(cine.frames[:])
                dtype = np.uint8 if frames.min() >= 0 and frames.max() <= 255 and np.all(frames == np.round(frames)) \
                    else np.float32
                from medvos.io.writers import write_nifti

                write_nifti(root / f"{folder.name}.nii.gz", frames, like=cine, dtype=dtype)
                written.append(str(root / f"{folder.name}.nii.gz"))
                self._folders_seen[key] = None
                logger.info("datastore: %s (%s, %d frames) listed as %s.nii.gz", folder, cine.format,
                            cine.num_frames, folder.name)
            except CineReadError as exc:
                self._folders_seen[key] = exc.problem
                logger.info("datastore: folder %s is not a cine (%s)", folder, exc.problem)
        return written

    # ------------------------------------------------------------------ checked writes

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
        name = image_id or Path(image_filename).name
        listed = [e.lstrip("*") for e in self._extensions]
        if not any(os.path.basename(image_filename).endswith(e) for e in listed):
            raise RequestError(422, f"image {name!r}: file type {''.join(Path(image_filename).suffixes)!r} is not "
                                    f"a cine this app lists ({', '.join(listed)})")
        if os.path.getsize(image_filename) == 0:
            raise RequestError(422, f"image {name!r}: the uploaded file is empty")
        try:
            read_cine(image_filename, min_frames=2, lazy=True)
        except CineReadError as exc:
            raise RequestError(422, f"image {name!r}: {exc.problem}") from None
        existing = self.get_image_uri(image_id) if image_id else None
        if existing and file_sha1(existing) != file_sha1(image_filename):
            raise RequestError(409, f"image id {image_id!r} is taken by another cine: remove it first "
                                    "(DELETE /datastore/image) or upload under another id")
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        image = self.require_image(image_id)
        check_name(label_tag, "label tag")
        if label_tag != PROPAGATED_TAG:  # the app's own propagation result is on the cine's grid by construction
            check_label(image, label_filename, label_info, f"label of {image_id!r}")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_name(label_tag, "label tag")
        super().remove_label(label_id, label_tag)


def _is_plain_name(name: str) -> bool:
    try:
        check_name(name, "image id")
        return True
    except RequestError:
        return False


def check_label(image: str, label: str, info: dict[str, Any] | None, what: str) -> list[int]:
    """The annotated frames of ``label`` for the cine ``image`` (``info["annotated_frames"]`` when given, else its
    non-empty frames); 422 when the label is unreadable, does not fit the cine or has nothing drawn."""
    if os.path.getsize(label) == 0:
        raise RequestError(422, f"{what}: the uploaded file is empty")
    try:
        frames = parse_frames((info or {}).get("annotated_frames")) or None
        given = read_annotations(label, read_cine(image, lazy=True), frames)
    except CineReadError as exc:
        raise RequestError(422, f"{what}: {exc.problem}") from None
    if not any(lab.any() for lab in given.values()):
        raise RequestError(422, f"{what}: no annotated frame (nothing drawn); draw the object on a frame, or list "
                                "frames where it is absent in annotated_frames with the object drawn on another")
    return sorted(given)


def corrected_frames(annotation: str, previous: str, previous_annotated: Sequence[int], chunk: int = 16
                     ) -> list[int]:
    """The frames an annotator drew or corrected: non-empty in ``annotation`` and either annotated before or
    different from the ``previous`` propagation result (so re-submitting a corrected result re-propagates from the
    original annotation plus the corrections, not from every frame). Both volumes are compared window by window."""
    now_cine, before_cine = read_cine(annotation, lazy=True), read_cine(previous, lazy=True)
    if now_cine.frames.shape[0] != before_cine.frames.shape[0] or now_cine.size != before_cine.size:
        return []
    keep, out = {int(t) for t in previous_annotated}, []
    rules = [whole_mask_rule(c, chunk) for c in (now_cine, before_cine)]  # the whole volumes' value rules
    for start in range(0, now_cine.num_frames, chunk):
        now = labels_from_pixels(now_cine.frames[start:start + chunk], rule=rules[0])
        before = labels_from_pixels(before_cine.frames[start:start + chunk], rule=rules[1])
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
    stated = parse_frames((datastore.get_label_info(image_id, tag) or {}).get("annotated_frames"))
    previous = datastore.get_label_uri(image_id, PROPAGATED_TAG)
    if not previous:
        return annotation, stated
    info = datastore.get_label_info(image_id, PROPAGATED_TAG)
    before = info.get("annotated_frames", [])
    if info.get("source_sha1") == file_sha1(annotation):  # the label that propagation came from: unchanged
        return annotation, list(before)
    corrected = corrected_frames(annotation, previous, before)
    return annotation, sorted(set(corrected) | set(stated)) if corrected else stated


def file_sha1(path: str) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()
