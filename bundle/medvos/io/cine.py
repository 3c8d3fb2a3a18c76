"""In-memory cine (frames + geometry) and mask-video containers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Cine:
    """A video as frames plus geometry.

    Attributes:
        frames: ``(T, C, H, W)`` float32 pixel values in the source's intensity units (C = 1 or 3, RGB order).
        spacing: pixel spacing ``(row, column)`` in mm (1.0 when the source does not say).
        frame_time_ms: time between frames in ms, ``None`` when unknown.
        origin: position of the first pixel (x, y, z) in mm (patient/world coordinates, LPS for DICOM/ITK).
        direction: 3x3 direction cosines (columns = image x, y and frame axes).
        source: the file, folder or list of files read.
        format: reader that produced it (``dicom``, ``dicom-series``, ``nifti``, ``itk``, ``video``, ``frames``).
        meta: format-specific metadata (NIfTI affine/header, DICOM dataset for writers, frame file names, ...).
    """

    frames: np.ndarray
    spacing: tuple[float, float] = (1.0, 1.0)
    frame_time_ms: float | None = None
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str = ""
    format: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.frames.shape[2]), int(self.frames.shape[3])

    @property
    def fps(self) -> float | None:
        return 1000.0 / self.frame_time_ms if self.frame_time_ms else None

    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world (LPS) matrix for voxel index order (x=column, y=row, t=frame)."""
        a = np.eye(4)
        dt = self.frame_time_ms if self.frame_time_ms else 1.0
        a[:3, :3] = np.asarray(self.direction, dtype=float) * np.array([self.spacing[1], self.spacing[0], dt])
        a[:3, 3] = self.origin
        return a


@dataclass
class MaskVideo:
    """Per-frame integer labels of a cine.

    Attributes:
        labels: ``(T, H, W)`` uint8, 0 = background, 1..L = objects.
        labeled: ``(T,)`` bool, frames that carry an annotation (an unlabelled frame is all zero).
        source: where it was read from.
    """

    labels: np.ndarray
    labeled: np.ndarray
    source: str = ""

    @property
    def labeled_frames(self) -> list[int]:
        return [int(t) for t in np.flatnonzero(self.labeled)]

