"""Frame arrays shared by the readers: the ``(T, C, H, W)`` float32 layout, a guard against implausible declared
sizes, and frames read on demand (window by window)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medvos.io.errors import CineReadError
from medvos.io.formats import PathLike

# Refuse anything whose decoded size would exceed this many values (hostile headers declaring huge sizes).
MAX_VALUES = 2**31


def check_size(path: PathLike, shape: Sequence[int]) -> None:
    """Raise when ``shape`` declares more than :data:`MAX_VALUES` values."""
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if n > MAX_VALUES:
        raise CineReadError(path, f"declared size {tuple(int(s) for s in shape)} is implausibly large")


def to_tchw(arr: np.ndarray, path: PathLike) -> np.ndarray:
    """Turn ``(T,H,W)``/``(T,H,W,C)`` into float32 ``(T,C,H,W)`` and sanity-check it."""
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[-1] not in (1, 2, 3, 4):
            raise CineReadError(path, f"cannot interpret array of shape {arr.shape} as frames (T, H, W, C)")
        arr = np.moveaxis(arr[..., :3] if arr.shape[-1] == 4 else arr, -1, 1)
        if arr.shape[1] == 2:  # grey + alpha
            arr = arr[:, :1]
    else:
        raise CineReadError(path, f"cannot interpret array of shape {arr.shape} as a cine")
    if arr.shape[0] == 0 or arr.shape[2] == 0 or arr.shape[3] == 0:
        raise CineReadError(path, f"empty image data (shape {arr.shape})")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise CineReadError(path, "pixel data contains NaN or infinite values")
    return out


class LazyFrames:
    """Frames ``(T, C, H, W)`` float32 read on demand: ``frames[a:b]`` reads only frames a..b-1, so a cine can be
    streamed window by window; ``np.asarray(frames)`` reads everything (what an in-memory cine would hold).

    Args:
        shape: ``(T, C, H, W)``.
        read: ``read(start, stop) -> (stop-start, C, H, W)`` float32.
        eight_bit: the reader knows every value is 0..255 (8-bit DICOM without rescale, video files).
    """

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, shape: tuple[int, int, int, int], read: Any, eight_bit: bool = False) -> None:
        self.shape = tuple(int(s) for s in shape)
        self._read = read
        self.eight_bit = eight_bit  # the source stores 8-bit unsigned values (0..255): no need to sample its range

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            t = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= t < self.shape[0]:
                raise IndexError(f"frame {key} out of range for {self.shape[0]} frames")
            return self._read(t, t + 1)[0]
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self._read(start, max(start, stop))
        return np.asarray(self)[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self._read(0, self.shape[0])
        return arr.astype(dtype) if dtype is not None else arr
