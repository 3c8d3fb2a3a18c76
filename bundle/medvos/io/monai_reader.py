"""MONAI ``ImageReader`` adapter so ``LoadImage(reader=CineReader())`` / ``LoadImaged`` read any cine (an instance
is passed: MONAI's reader table is left as it is).

The MONAI array is channel-first with time as the last spatial axis, ``(C, H, W, T)``, so MONAI's spatial
transforms apply frame-wise (for example ``Resized(spatial_size=(256, 256, -1))``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys

from medvos.io.cine import Cine
from medvos.io.formats import DICOM_SUFFIXES, IMAGE_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES, VIDEO_SUFFIXES
from medvos.io.readers import read_cine


class CineReader(ImageReader):
    """Reads every format of :func:`medvos.io.read_cine`; one cine per call."""

    suffixes = DICOM_SUFFIXES + NIFTI_SUFFIXES + ITK_SUFFIXES + VIDEO_SUFFIXES + IMAGE_SUFFIXES

    def __init__(self, min_frames: int = 1, **kwargs: Any) -> None:
        super().__init__()
        self.min_frames = min_frames

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(Path(n).is_dir() or str(n).lower().endswith(self.suffixes) for n in names)

    def read(self, data: Sequence[str] | str, **kwargs: Any) -> Cine:
        src = data if isinstance(data, (str, Path)) else list(data)
        if isinstance(src, list) and len(src) == 1:
            src = src[0]
        return read_cine(src, min_frames=self.min_frames)

    def get_data(self, img: Cine) -> tuple[np.ndarray, dict]:
        arr = np.transpose(img.frames, (1, 2, 3, 0))  # (T,C,H,W) -> (C,H,W,T)
        affine = np.eye(4)
        affine[0, 0], affine[1, 1] = img.spacing
        affine[2, 2] = img.frame_time_ms or 1.0
        meta = {
            MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
            MetaKeys.SPATIAL_SHAPE: np.asarray(arr.shape[1:]),
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPACE: SpaceKeys.LPS,
            "spacing": np.asarray(img.spacing),
            "frame_time_ms": img.frame_time_ms if img.frame_time_ms else float("nan"),
            "filename_or_obj": img.source,
            "format": img.format,
        }
        return arr, meta
