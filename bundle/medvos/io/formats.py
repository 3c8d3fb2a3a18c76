"""File kinds the readers recognise (by suffix, or the DICOM preamble) and natural frame ordering."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".gif", ".webm")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom")

PathLike = str | Path
CineSource = PathLike | Sequence[PathLike]


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def file_suffix(path: Path) -> str:
    """Lower-case suffix, ``.nii.gz`` counted as one."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` suffix, or the ``DICM`` marker after the 128-byte preamble."""
    if file_suffix(path) in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def list_frame_files(folder: PathLike) -> list[Path]:
    """Image files of a folder in natural order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and file_suffix(p) in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))
