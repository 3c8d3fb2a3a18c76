"""Writers for cines and masks: NIfTI (input geometry kept), PNG frames, DICOM cines/series, videos.

Every writer goes through :func:`medvos.io.atomic.atomic_path`: a crash never leaves a half-written file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvos.io.atomic import atomic_path, finish
from medvos.io.cine import Cine

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def as_uint8_frames(frames: np.ndarray) -> np.ndarray:
    """``(T,C,H,W)`` or ``(T,H,W)`` any range -> ``(T,H,W[,C])`` uint8 (values kept when already 0..255)."""
    arr = np.asarray(frames)
    if arr.ndim == 4:
        arr = np.moveaxis(arr, 1, -1)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            arr = (arr - lo) / max(hi - lo, 1e-6) * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def nifti_affine(like: Cine | None, frame_time_ms: float | None = None) -> np.ndarray:
    """RAS affine for voxel order (x, y, t): the input NIfTI's own, else built from the cine's LPS geometry."""
    if like is not None and "affine" in like.meta:
        return np.asarray(like.meta["affine"], dtype=float)
    if like is None:
        a = np.eye(4)
        a[2, 2] = frame_time_ms or 1.0
        return a
    return _LPS_TO_RAS @ like.affine()


def _nifti_image(dataobj: Any, like: Cine | None, frame_time_ms: float | None) -> Any:
    """A Nifti1Image of ``dataobj`` (voxel order x, y, t[, c]) with the cine's affine and units.

    For a NIfTI input, labels ``(x, y, t)`` keep the input's own convention: stored (x, y, 1, t) when the input
    was, with its pixel dimensions (the frame time in pixdim[4]), units and qform/sform (matrices and codes)."""
    import nibabel as nib

    header = like.meta.get("header") if like is not None else None
    if header is None:
        img = nib.Nifti1Image(dataobj, nifti_affine(like, frame_time_ms))
        img.header.set_xyzt_units("mm", "msec")
        return img
    shape = like.meta.get("nifti_shape", ())
    if dataobj.ndim == 3 and len(shape) in (4, 5) and shape[2] == 1:  # (x, y, 1, t[, c]) in: (x, y, 1, t) out
        dataobj = dataobj.reshape(*dataobj.shape[:2], 1, dataobj.shape[2])
    img = nib.Nifti1Image(dataobj, None, header=header.copy())
    img.header.set_data_shape(dataobj.shape)
    img.header.set_data_dtype(dataobj.dtype)
    zooms = tuple(header.get_zooms()) + (1.0,) * dataobj.ndim
    img.header.set_zooms(zooms[: dataobj.ndim])
    img.header.set_qform(header.get_qform(), int(header["qform_code"]))
    img.header.set_sform(header.get_sform(), int(header["sform_code"]))
    img.header.set_xyzt_units(*header.get_xyzt_units())
    img.header.set_intent("none")
    return img


class NiftiWriter:
    """Append ``(n, H, W)`` label windows to a 2D+t NIfTI (voxel order x, y, t) written atomically.

    Time is the slowest axis of the volume, so each window is one contiguous run of voxels: the header is written
    first and every window streams after it (through gzip for ``.nii.gz``); memory does not grow with the cine.
    ``with NiftiWriter(path, num_frames, (H, W), like) as w: w.append(labels)``. Fewer or more frames than
    declared raise, and the temporary file is removed.
    """

    def __init__(self, path: str | Path, num_frames: int, size: tuple[int, int], like: Cine | None = None,
                 frame_time_ms: float | None = None, dtype: type = np.uint8) -> None:
        self.path, self.num_frames, self.size, self.dtype = Path(path), int(num_frames), tuple(size), np.dtype(dtype)
        h, w = self.size
        shape = (w, h, self.num_frames)  # no voxels exist: the header only needs shape and dtype
        self._img = _nifti_image(np.broadcast_to(np.zeros((), self.dtype), shape), like, frame_time_ms)
        self._ctx = atomic_path(self.path)
        self.written = 0

    def __enter__(self) -> NiftiWriter:
        import gzip

        self._tmp = self._ctx.__enter__()
        self._raw = open(self._tmp, "wb")  # noqa: SIM115 - closed in __exit__
        self._fh = (gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", compresslevel=6)
                    if self.path.name.lower().endswith(".gz") else self._raw)
        try:
            self._img.update_header()
            hdr = self._img.header
            hdr["vox_offset"] = 0  # nibabel sets the single-file offset (header + extensions) as it writes
            hdr.set_slope_inter(1.0, 0.0)  # what nib.save writes for unscaled data (NaN confuses some readers)
            hdr.write_to(self._fh)
            self._fh.write(b"\0" * max(int(hdr["vox_offset"]) - self._fh.tell(), 0))
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def append(self, labels: np.ndarray) -> None:
        arr = np.asarray(labels)
        if arr.ndim != 3 or arr.shape[1:] != self.size:
            raise ValueError(f"{self.path}: expected (n, {self.size[0]}, {self.size[1]}) labels, got {arr.shape}")
        if self.written + len(arr) > self.num_frames:
            raise ValueError(f"{self.path}: more than the declared {self.num_frames} frames")
        # (n, H, W) in C order has x fastest, then y, then t: exactly NIfTI's (x, y, t) Fortran order.
        self._fh.write(np.ascontiguousarray(arr, self.dtype.newbyteorder("<")).tobytes())
        self.written += len(arr)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        short = None
        if exc_type is None and self.written != self.num_frames:
            short = ValueError(f"{self.path}: {self.written} of the declared {self.num_frames} frames written")

        def close() -> None:
            try:
                if self._fh is not self._raw:
                    self._fh.close()  # flushes the last gzip block: a full disk fails here
            finally:
                self._raw.close()

        finish(self._ctx, close, exc or short)  # renamed only if the frames and the close all succeeded
        if short is not None:
            raise short


def write_nifti(path: str | Path, data: np.ndarray, like: Cine | None = None, frame_time_ms: float | None = None,
                dtype: type = np.uint8) -> Path:
    """Write ``(T,H,W)`` labels or ``(T,C,H,W)`` frames as a 2D+t NIfTI with voxel order (x, y, t[, c]).

    With ``like`` from a NIfTI the affine and header units are copied, so the output overlays the input exactly.
    """
    import nibabel as nib

    arr = np.asarray(data)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 3:
        with NiftiWriter(path, arr.shape[0], arr.shape[1:], like, frame_time_ms, dtype) as w:
            w.append(arr.astype(dtype))
        return Path(path)
    if arr.ndim != 4:
        raise ValueError(f"expected (T,H,W) or (T,C,H,W), got {arr.shape}")
    vol = np.transpose(arr, (3, 2, 0, 1))  # (T,C,H,W) -> (W,H,T,C)
    img = _nifti_image(np.ascontiguousarray(vol.astype(dtype)), like, frame_time_ms)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write one ``(H,W)`` or ``(H,W,3)`` uint8 image as PNG (RGB order in, OpenCV's BGR on disk)."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise OSError(f"{path}: OpenCV could not write the PNG")
    return Path(path)


def write_png_frames(folder: str | Path, frames: np.ndarray, names: Sequence[str] | None = None) -> list[Path]:
    """Write ``(T,H,W)`` labels or ``(T,C,H,W)`` frames as ``folder/<name>.png`` (default names 0000..).
    """
    arr = np.asarray(frames)
    arr = as_uint8_frames(arr) if (arr.ndim == 4 or arr.dtype != np.uint8) else arr
    names = list(names) if names is not None else [f"{t:04d}" for t in range(len(arr))]
    return [write_png(Path(folder) / f"{n}.png", a) for n, a in zip(names, arr)]


class VideoWriter:
    """Append frames to an MP4/AVI (OpenCV, streamed) or GIF (Pillow; kept until close) written atomically.

    ``with VideoWriter(path, fps) as vw: vw.append(frames)`` with ``(n,C,H,W)`` frames or uint8 ``(n,H,W[,3])``.
    """

    def __init__(self, path: str | Path, fps: float = 10.0) -> None:
        self.path, self.fps = Path(path), float(fps)
        self.suffix = self.path.suffix.lower()
        self._ctx = atomic_path(self.path)
        self._writer: Any = None
        self._gif: list[Any] = []
        self.frames = 0

    def __enter__(self) -> VideoWriter:
        self._tmp = self._ctx.__enter__()
        return self

    def append(self, frames: np.ndarray) -> None:
        arr = np.asarray(frames)
        channels_last = arr.dtype == np.uint8 and (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3))
        arr = arr if channels_last else as_uint8_frames(arr)
        if arr.ndim == 3:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if self.suffix == ".gif":
            from PIL import Image

            self._gif += [Image.fromarray(a) for a in arr]
            return
        import cv2

        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.suffix == ".mp4" else "MJPG"))
            h, w = arr.shape[1:3]
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot open a video writer for '{self.suffix}'")
        for a in arr:
            self._writer.write(cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
        self.frames += len(arr)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        def close() -> None:
            if self._writer is not None:
                self._writer.release()
                if exc is None:
                    self._check_written()
            elif self._gif and exc is None:
                self._gif[0].save(self._tmp, save_all=True, append_images=self._gif[1:],
                                  duration=int(1000 / max(self.fps, 1e-3)), loop=0, format="GIF")

        finish(self._ctx, close, exc)  # renamed only if writing and closing succeeded

    def _check_written(self) -> None:
        """OpenCV reports no write errors (a full disk leaves an empty or truncated file): read the frame count."""
        import cv2

        cap = cv2.VideoCapture(str(self._tmp))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()
        if count != self.frames:
            raise OSError(f"{self.path}: the video holds {count} of {self.frames} frames (disk full?)")


def write_video(path: str | Path, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Write ``(T,C,H,W)`` frames, or uint8 ``(T,H,W[,3])``, as MP4/AVI (OpenCV) or GIF (Pillow), by suffix."""
    with VideoWriter(path, fps) as vw:
        vw.append(frames)
    return Path(path)
