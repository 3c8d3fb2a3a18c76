"""Video files (OpenCV) and image-frame sequences (PNG/JPG/BMP/TIFF), read whole or window by window."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvos.io.cine import Cine
from medvos.io.errors import CineReadError
from medvos.io.formats import PathLike
from medvos.io.frames import LazyFrames, to_tchw


class _VideoFrames:
    """Sequential decoding with one open capture; a read before the current position reopens the file."""

    def __init__(self, path: Path) -> None:
        self.path, self.cap, self.pos, self.fps = path, None, 0, 0.0

    def _open(self) -> None:
        import cv2

        if self.cap is not None:
            self.cap.release()
        self.cap, self.pos = cv2.VideoCapture(str(self.path)), 0
        if not self.cap.isOpened():
            raise CineReadError(self.path, "OpenCV cannot open this video file (unknown codec or not a video)")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def _next(self) -> np.ndarray | None:
        """The next decoded frame in RGB (or grey), None at the end of the stream."""
        import cv2

        ok, frame = self.cap.read()
        if not ok:
            return None
        self.pos += 1
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame

    def _stack(self, frames: list[np.ndarray]) -> np.ndarray:
        shapes = sorted({f.shape for f in frames})
        if len(shapes) > 1:
            raise CineReadError(self.path, f"video frames differ in size: {shapes}")
        return to_tchw(np.stack(frames), self.path)

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.cap is None or start < self.pos:
            self._open()
        while self.pos < start:
            self.cap.grab()
            self.pos += 1
        out = []
        for _ in range(start, stop):
            frame = self._next()
            if frame is None:
                raise CineReadError(self.path, f"frame {self.pos} could not be decoded")
            out.append(frame)
        return self._stack(out)

    def read_all(self) -> np.ndarray:
        """Every decodable frame (container frame counts can be wrong, so decode to the end)."""
        self._open()
        out = []
        while (frame := self._next()) is not None:
            out.append(frame)
        self.cap.release()
        self.cap = None
        if not out:
            raise CineReadError(self.path, "video contains no decodable frames")
        return self._stack(out)

    def count(self) -> int:
        """The number of decodable frames, counted without keeping them."""
        self._open()
        n = 0
        while self.cap.grab():
            n += 1
        self.cap.release()
        self.cap = None
        if not n:
            raise CineReadError(self.path, "video contains no decodable frames")
        return n


def read_video(path: Path, lazy: bool = False) -> Cine:
    """A video file through OpenCV. ``lazy``: frames are counted first, then decoded window by window."""
    src = _VideoFrames(path)
    if lazy:
        count = src.count()
        frames: Any = LazyFrames((count, *src.read(0, 1).shape[1:]), src.read, eight_bit=True)  # OpenCV: uint8
    else:
        frames = src.read_all()
    fps = src.fps
    return Cine(frames=frames, frame_time_ms=1000.0 / fps if fps > 0 else None, source=str(path), format="video")


def read_image_file(path: PathLike) -> np.ndarray:
    """One 2D image file as ``(H, W)`` or ``(H, W, C)`` RGB (PNG/JPG/BMP/TIFF)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise CineReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise CineReadError(path, "empty file (0 bytes)")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CineReadError(path, "not a readable image file (corrupt or unsupported)")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


def read_frame_files(files: Sequence[PathLike], source: PathLike, lazy: bool = False) -> Cine:
    """Image files as the frames of one cine, in the order given; every frame must have the first one's size."""
    files = [Path(f) for f in files]
    if not files:
        raise CineReadError(source, "no image frames found")
    first = to_tchw(read_image_file(files[0])[None], files[0])

    def read(start: int, stop: int) -> np.ndarray:
        out = [to_tchw(read_image_file(f)[None], f) for f in files[start:stop]]
        for f, a in zip(files[start:stop], out):
            if a.shape[1:] != first.shape[1:]:
                raise CineReadError(f, f"frame size {a.shape[2:]} differs from the first frame's {first.shape[2:]}")
        return np.concatenate(out) if out else np.zeros((0, *first.shape[1:]), np.float32)

    frames: Any = LazyFrames((len(files), *first.shape[1:]), read) if lazy else read(0, len(files))
    return Cine(frames=frames, source=str(source), format="frames",
                meta={"files": [str(f) for f in files], "frame_names": [f.stem for f in files]})
