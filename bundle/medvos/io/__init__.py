"""Reading cines and masks from any supported format, and writing results atomically."""

from __future__ import annotations

from medvos.io.atomic import atomic_path, atomic_write_bytes
from medvos.io.cine import Cine, MaskVideo
from medvos.io.errors import CineReadError, DatalistError, MaskMismatchError
from medvos.io.readers import read_annotations, read_cine, read_mask

__all__ = [
    "Cine",
    "MaskVideo",
    "CineReadError",
    "DatalistError",
    "MaskMismatchError",
    "atomic_path",
    "atomic_write_bytes",
    "read_annotations",
    "read_cine",
    "read_mask",
]
