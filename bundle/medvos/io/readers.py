"""One API turning any supported cine (or image, or mask) into frames ``(T, C, H, W)`` plus geometry.

Supported inputs:
    - DICOM multi-frame file (any transfer syntax pydicom can decode, JPEG colour ultrasound included);
    - DICOM series: a folder of single-frame DICOM files, ordered by InstanceNumber, then acquisition time;
    - NIfTI 2D+t: voxel order (x = column, y = row, t), optionally with a singleton z and/or a channel axis;
    - ITK MetaImage (``.mhd``/``.mha``) and NRRD: 2D+t (z = time) or a single 2D image;
    - video files (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.gif``) through OpenCV;
    - a folder (or an explicit list) of PNG/JPG/BMP/TIFF frames, in natural sort order of file names;
    - a single PNG/JPG image (one frame).

This module picks the reader (``dicom_reader``, ``volume_readers``, ``video_readers``) and reads masks against
their cine; every reader returns frames whole or, with ``lazy=True``, read window by window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvos.io.cine import Cine, MaskVideo
from medvos.io.dicom_reader import read_dicom_file, read_dicom_series
from medvos.io.errors import CineReadError, MaskMismatchError
from medvos.io.formats import (IMAGE_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES, VIDEO_SUFFIXES, CineSource, file_suffix,
                               is_dicom_file, list_frame_files, natural_key)
from medvos.io.video_readers import read_frame_files, read_video
from medvos.io.volume_readers import read_itk, read_nifti


def read_cine(source: CineSource, min_frames: int = 1, lazy: bool = False) -> Cine:
    """Read a cine (or a single image as a 1-frame cine) from any supported source.

    Args:
        source: a file, a folder (DICOM series or image frames) or a list of frame image files.
        min_frames: raise :class:`CineReadError` when fewer frames are found (2 for anything used as a video).
        lazy: return :class:`LazyFrames` that read (decode) frames only when sliced, so a cine streams window by
            window in every format. Compressed DICOM is held compressed; NIfTI, ITK and native DICOM stay on disk.

    Returns:
        :class:`Cine` with ``frames`` of shape ``(T, C, H, W)`` float32.
    """
    try:
        cine = _read_any(source, lazy)
    except CineReadError:
        raise
    except Exception as exc:  # a reader library's own error (pydicom, nibabel, OpenCV): name the file
        where = source[0] if isinstance(source, (list, tuple)) and source else source
        raise CineReadError(where, f"could not be read ({type(exc).__name__}: {exc})") from exc
    if cine.num_frames < min_frames:
        raise CineReadError(cine.source, f"has {cine.num_frames} frame(s); a video needs at least {min_frames}")
    return cine


MAX_LABELS = 32
MAX_LABEL_VALUE = 63  # masks whose values all lie at or below this are label maps (1, 2, 3; or labels 1 and 40)
LOSSY_SUFFIXES = (".jpg", ".jpeg")


def is_lossy(cine: Cine) -> bool:
    """Whether the mask's pixels went through lossy compression (JPEG files, video codecs): its values are then
    noisy around the true ones and only a threshold can recover them."""
    if cine.format == "video":
        return True
    files = cine.meta.get("files") or [cine.source]
    return any(str(f).lower().endswith(LOSSY_SUFFIXES) for f in files)


def value_counts(frames: np.ndarray) -> dict[float, int]:
    """``{mask value: pixels}`` of ``(T, C, H, W)`` mask pixels (colour masks: any channel)."""
    values, counts = np.unique(frames.max(axis=1), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def mask_rule(counts: dict[float, int], lossy: bool = False) -> tuple[str, Any]:
    """How mask values become labels, decided from the whole mask's ``{value: pixels}``:

    - ``("binary", low)``: two distinct values (0/100, 0/255): the larger one is the object, label 1 (0 and one
      value up to :data:`MAX_LABEL_VALUE` are a label map with one label: 0/3 stays label 3);
    - ``("labels", values)``: a label map, each value a label: integer values all at most
      :data:`MAX_LABEL_VALUE` (1, 2, 3; labels 1 and 40), or up to :data:`MAX_LABELS` evenly spaced grey levels
      from 0 to the maximum (0/85/170/255); values above 255 are numbered 1, 2, ... in order;
    - ``("threshold", t)``: anything else, as exported 8-bit masks are (JPEG and video noise, anti-aliased or faint
      grey edges, CVC-ClinicDB's PNGs with values like 0/11/255): binarised ``> t``, half the maximum (127 for
      8-bit), the usual published preprocessing. Lossy masks (JPEG, video) always take this rule.
    """
    values = sorted(counts)
    if not values:
        return "binary", 0.0
    integral = all(float(v).is_integer() for v in values)
    if len(values) <= 2 and not lossy:
        if integral and values[0] == 0 and values[-1] <= MAX_LABEL_VALUE:
            return "labels", values  # 0/1, or a label map with one structure present (0/3 stays label 3)
        return "binary", values[0] if len(values) == 2 else 0.0
    if not lossy and integral and len(values) <= MAX_LABELS + 1:
        top = values[-1]
        step = top / (len(values) - 1)
        grey_levels = values[0] == 0 and all(abs(v - k * step) <= 1.0 for k, v in enumerate(values))
        if top <= MAX_LABEL_VALUE or grey_levels:
            return "labels", values
    return "threshold", 127.0 if values[-1] <= 255 else values[-1] / 2.0


def labels_from_pixels(frames: np.ndarray, lossy: bool = False, rule: tuple[str, Any] | None = None) -> np.ndarray:
    """Mask pixel values ``(T, C, H, W)`` -> integer labels ``(T, H, W)`` uint8 by :func:`mask_rule` (``rule``: the
    whole mask's, when ``frames`` are only part of it; else decided from ``frames``)."""
    kind, arg = rule or mask_rule(value_counts(frames), lossy)
    vals = frames.max(axis=1)
    if kind in ("binary", "threshold"):
        return (vals > arg).astype(np.uint8)
    values = np.asarray(arg, np.float64)
    if values.max() <= 255:
        return vals.astype(np.uint8)
    nonzero = values[values != 0]
    rank = np.searchsorted(nonzero, vals) + 1
    return np.where(vals == 0, 0, rank).astype(np.uint8)


def whole_mask_rule(cine: Cine, chunk: int = 16) -> tuple[str, Any]:
    """:func:`mask_rule` of a whole (lazy) mask, read ``chunk`` frames at a time."""
    counts: dict[float, int] = {}
    for start in range(0, cine.num_frames, chunk):
        for v, n in value_counts(cine.frames[start : start + chunk]).items():
            counts[v] = counts.get(v, 0) + n
    return mask_rule(counts, is_lossy(cine))


def _mask_frame_index(mask: Cine, like: Cine) -> list[int]:
    """Video frame index of each mask frame: all frames in order for a full-length mask, else matched by file stem.

    Raises:
        MaskMismatchError: frame size differs, or a partial mask whose frames cannot be named.
    """
    t, (h, w) = like.num_frames, like.size
    if mask.size != (h, w):
        raise MaskMismatchError(mask.source, f"mask frame size {mask.size} differs from the video's {(h, w)} "
                                f"({like.source})")
    if mask.num_frames == t:
        return list(range(t))
    names, mask_names = like.meta.get("frame_names"), mask.meta.get("frame_names")
    if names and mask_names and set(mask_names) <= set(names):
        index = {n: i for i, n in enumerate(names)}
        return [index[n] for n in mask_names]
    raise MaskMismatchError(mask.source, f"mask has {mask.num_frames} frame(s) but the video has {t} "
                            f"({like.source}); a partial mask must name its frames like the video's frame files")


def read_mask(source: CineSource, like: Cine | None = None) -> MaskVideo:
    """Read a mask video (all frames, or only some frames) and check it against its cine.

    A mask folder/list holding fewer files than the cine has frames is matched to frames by file stem
    (for example ``masks/12.png`` labels the frame ``frames/12.png``); those frames are ``labeled``.
    A mask covering every frame marks every frame as labelled.

    Raises:
        MaskMismatchError: frame count or frame size differs from ``like``.
    """
    cine = read_cine(source)
    labels = labels_from_pixels(cine.frames, is_lossy(cine))
    if like is None:
        return MaskVideo(labels=labels, labeled=np.ones(len(labels), bool), source=cine.source)
    index = _mask_frame_index(cine, like)
    if len(index) == like.num_frames:
        return MaskVideo(labels=labels, labeled=np.ones(len(labels), bool), source=cine.source)
    full = np.zeros((like.num_frames, *like.size), np.uint8)
    labeled = np.zeros(like.num_frames, bool)
    full[index], labeled[index] = labels, True
    return MaskVideo(labels=full, labeled=labeled, source=cine.source)


def read_annotations(source: CineSource, like: Cine, frames: Sequence[int] | None = None,
                     chunk: int = 16) -> dict[int, np.ndarray]:
    """The annotated frames of a mask, ``{frame: (H, W) uint8 labels}``, streamed: only those frames are kept.

    Which frames: ``frames`` when given; else every frame a partial mask (frame folder named like the video's
    frames) covers; else the non-empty frames of a full-length mask, which is read ``chunk`` frames at a time,
    so a 2D+t label volume with one annotated frame costs one frame of memory, not the volume.

    Raises:
        MaskMismatchError: frame count or size differs from ``like``, or a requested frame is not in the mask.
    """
    mask = read_cine(source, lazy=True)
    index = _mask_frame_index(mask, like)
    wanted = None if frames is None else {int(t) for t in frames}
    if wanted is not None and not wanted <= set(index):
        raise MaskMismatchError(mask.source, f"annotated frame(s) {sorted(wanted - set(index))} are not in the "
                                f"mask (the video has {like.num_frames} frames)")
    kept: dict[int, np.ndarray] = {}
    if wanted is not None:  # only the requested frames are read
        position = {t: k for k, t in enumerate(index)}
        kept = {t: mask.frames[position[t]] for t in wanted}
    else:
        partial = len(index) < like.num_frames
        for start in range(0, mask.num_frames, chunk):
            for k, frame in enumerate(mask.frames[start:start + chunk]):
                if partial or frame.any():
                    kept[index[start + k]] = frame
    order = sorted(kept)
    labels = (labels_from_pixels(np.stack([kept[t] for t in order]), is_lossy(mask))
              if order else [])  # one value rule for all annotated frames
    return dict(zip(order, labels))


def _read_any(source: CineSource, lazy: bool) -> Cine:
    """Dispatch on the source's kind (see :func:`read_cine`)."""
    if isinstance(source, (list, tuple)):
        return read_frame_files(source, source[0] if source else "<empty list>", lazy)
    path = Path(source)
    if not path.exists():
        raise CineReadError(path, "file or folder not found")
    if path.is_dir():
        entries = sorted((p for p in path.iterdir() if p.is_file()), key=lambda p: natural_key(p.name))
        dicoms = [p for p in entries if is_dicom_file(p)]
        return read_dicom_series(dicoms, path, lazy) if dicoms else read_frame_files(list_frame_files(path), path, lazy)
    if path.stat().st_size == 0:
        raise CineReadError(path, "empty file (0 bytes)")
    suffix = file_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(path, lazy)
    if suffix in ITK_SUFFIXES:
        return read_itk(path, lazy)
    if suffix in VIDEO_SUFFIXES:
        return read_video(path, lazy)
    if suffix in IMAGE_SUFFIXES:
        return read_frame_files([path], path)
    if is_dicom_file(path):
        return read_dicom_file(path, lazy)
    raise CineReadError(path, f"unsupported file type '{suffix or '(no suffix)'}' (not DICOM, NIfTI, ITK, video or "
                        "image)")
