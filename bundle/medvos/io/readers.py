"""One API turning any supported cine (or image, or mask) into frames ``(T, C, H, W)`` plus geometry.

Supported inputs:
    - DICOM multi-frame file (any transfer syntax pydicom can decode, JPEG colour ultrasound included);
    - DICOM series: a folder of single-frame DICOM files, ordered by InstanceNumber, then acquisition time;
    - NIfTI 2D+t: voxel order (x = column, y = row, t), optionally with a singleton z and/or a channel axis;
    - ITK MetaImage (``.mhd``/``.mha``) and NRRD: 2D+t (z = time) or a single 2D image;
    - video files (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.gif``) through OpenCV;
    - a folder (or an explicit list) of PNG/JPG/BMP/TIFF frames, in natural sort order of file names;
    - a single PNG/JPG image (one frame).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvos.io.cine import Cine, MaskVideo
from medvos.io.errors import CineReadError, MaskMismatchError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".gif", ".webm")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom")
# Refuse anything whose decoded size would exceed this many values (hostile headers declaring huge sizes).
MAX_VALUES = 2**31

PathLike = str | Path
CineSource = PathLike | Sequence[PathLike]


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom_file(path: Path) -> bool:
    if _suffix(path) in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_size(path: PathLike, shape: Sequence[int]) -> None:
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if n > MAX_VALUES:
        raise CineReadError(path, f"declared size {tuple(int(s) for s in shape)} is implausibly large")


def _to_tchw(arr: np.ndarray, path: PathLike) -> np.ndarray:
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
    """

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, shape: tuple[int, int, int, int], read: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self._read = read

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


# ----------------------------------------------------------------------------------------------- DICOM
def _dicom_geometry(ds: Any) -> dict[str, Any]:
    spacing = (1.0, 1.0)
    if "PixelSpacing" in ds:
        spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    elif "ImagerPixelSpacing" in ds:
        spacing = (float(ds.ImagerPixelSpacing[0]), float(ds.ImagerPixelSpacing[1]))
    elif "SequenceOfUltrasoundRegions" in ds and len(ds.SequenceOfUltrasoundRegions):
        reg = ds.SequenceOfUltrasoundRegions[0]
        # Physical units 3 = cm: convert to mm.
        scale = 10.0 if int(reg.get("PhysicalUnitsXDirection", 3)) == 3 else 1.0
        if "PhysicalDeltaX" in reg and "PhysicalDeltaY" in reg:
            spacing = (abs(float(reg.PhysicalDeltaY)) * scale, abs(float(reg.PhysicalDeltaX)) * scale)
    frame_time = None
    if "FrameTime" in ds and ds.FrameTime:
        frame_time = float(ds.FrameTime)
    elif "FrameTimeVector" in ds and len(ds.FrameTimeVector) > 1:
        frame_time = float(np.mean([float(v) for v in ds.FrameTimeVector[1:]]))
    elif "CineRate" in ds and ds.CineRate:
        frame_time = 1000.0 / float(ds.CineRate)
    elif "RecommendedDisplayFrameRate" in ds and ds.RecommendedDisplayFrameRate:
        frame_time = 1000.0 / float(ds.RecommendedDisplayFrameRate)
    origin = (0.0, 0.0, 0.0)
    if "ImagePositionPatient" in ds:
        origin = tuple(float(v) for v in ds.ImagePositionPatient)  # type: ignore[assignment]
    direction = np.eye(3)
    if "ImageOrientationPatient" in ds:
        iop = [float(v) for v in ds.ImageOrientationPatient]
        row, col = np.array(iop[:3]), np.array(iop[3:])
        direction = np.stack([row, col, np.cross(row, col)], axis=1)
    return {"spacing": spacing, "frame_time_ms": frame_time, "origin": origin, "direction": direction}


def _dicom_pixels(ds: Any, path: PathLike) -> np.ndarray:
    """Decoded pixels of a dataset (all its frames) in RGB (colour) or grey, shape ``(T,H,W[,C])``."""
    import pydicom

    if "PixelData" not in ds:
        raise CineReadError(path, "DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    if rows <= 0 or cols <= 0:
        raise CineReadError(path, f"DICOM declares an empty image ({rows}x{cols})")
    _check_size(path, (nframes, rows, cols, spp))
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt/truncated pixel data
        raise CineReadError(path, f"cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from exc
    pi = str(ds.get("PhotometricInterpretation", "")).upper()
    if spp == 3 and pi.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
        # pydicom 2 returns the stored YCbCr values; pydicom 3 already converts to RGB by default.
        from pydicom.pixel_data_handlers.util import convert_color_space

        arr = convert_color_space(arr, "YBR_FULL", "RGB", per_frame=arr.ndim == 4)
    if pi == "MONOCHROME1":  # inverted relative to the stored range, so every window of a cine inverts alike
        bits = int(ds.get("BitsStored", 8) or 8)
        arr = (-1 - arr.astype(np.int64)) if int(ds.get("PixelRepresentation", 0)) else ((1 << bits) - 1) - arr
    if nframes == 1:
        arr = arr[None]
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if spp == 1 and (slope != 1.0 or intercept != 0.0):
        arr = arr.astype(np.float32) * slope + intercept
    return arr


def _read_dicom_dataset(path: Path, **kwargs: Any) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(str(path), **kwargs)
    except Exception as exc:
        raise CineReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _dicom_frame_shape(ds: Any, path: PathLike) -> tuple[int, int, int]:
    """``(rows, columns, samples per pixel)`` from a header, refusing empty or implausible sizes."""
    rows, cols, spp = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), int(ds.get("SamplesPerPixel", 1))
    if rows <= 0 or cols <= 0:
        raise CineReadError(path, f"DICOM declares an empty image ({rows}x{cols})")
    _check_size(path, (rows, cols, spp))
    return rows, cols, spp


class _DicomFileFrames:
    """Frames of one (multi-frame) DICOM file, decoded window by window by pydicom's own handlers.

    Native pixel data stays on disk: a window reads only its frames' bytes, at the element's file offset.
    Encapsulated (JPEG, RLE, ...) pixel data is held compressed, split into frames, and a window decodes only its
    frames. Either way no decoded whole-cine array exists unless all frames are asked for.
    """

    def __init__(self, path: Path) -> None:
        from pydicom.uid import DeflatedExplicitVRLittleEndian

        ds = _read_dicom_dataset(path, defer_size="256 KB")
        ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        if ts == DeflatedExplicitVRLittleEndian:  # offsets refer to the inflated stream: read it all
            ds = _read_dicom_dataset(path)
        if "PixelData" not in ds:
            raise CineReadError(path, "DICOM file has no pixel data")
        self.path = path
        self.rows, self.cols, self.spp = _dicom_frame_shape(ds, path)
        self.num = int(ds.get("NumberOfFrames", 1) or 1)
        if self.num <= 0:
            raise CineReadError(path, f"DICOM declares {self.num} frames")
        elem = ds.get_item("PixelData")
        self.fragments: list[bytes] | None = None
        self.offset: int | None = None
        self.data: bytes | None = None
        if ts is not None and ts.is_compressed:
            from pydicom.encaps import generate_pixel_data_frame

            try:
                self.fragments = list(generate_pixel_data_frame(ds.PixelData, self.num))
            except Exception as exc:
                raise CineReadError(path, f"cannot split the encapsulated pixel data into {self.num} frames "
                                    f"({type(exc).__name__}: {exc})") from exc
            if len(self.fragments) != self.num:
                raise CineReadError(path, f"declares {self.num} frames but its pixel data holds "
                                    f"{len(self.fragments)}")
        else:
            bits = int(ds.get("BitsAllocated", 8) or 8)
            if bits % 8:
                raise CineReadError(path, f"BitsAllocated {bits} is not supported for cines")
            self.frame_bytes = self.rows * self.cols * self.spp * bits // 8
            need = self.num * self.frame_bytes
            if getattr(elem, "value", None) is None and getattr(elem, "value_tell", None) is not None:
                self.offset, have = int(elem.value_tell), int(elem.length)  # deferred: still on disk
            else:
                self.data = bytes(ds.PixelData)
                have = len(self.data)
            if have < need:
                raise CineReadError(path, f"pixel data holds {have} bytes; {self.num} frames of {self.rows}x"
                                    f"{self.cols}x{self.spp} at {bits} bits need {need} (truncated file?)")
        del ds.PixelData
        self.header = ds

    def read(self, start: int, stop: int) -> np.ndarray:
        import copy

        n = stop - start
        fds = copy.deepcopy(self.header)
        fds.NumberOfFrames = n
        if self.fragments is not None:
            from pydicom.encaps import encapsulate

            fds.PixelData = encapsulate(self.fragments[start:stop])
            fds["PixelData"].VR = "OB"
            fds["PixelData"].is_undefined_length = True
        elif self.data is not None:
            fds.PixelData = self.data[start * self.frame_bytes:stop * self.frame_bytes]
        else:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset + start * self.frame_bytes)  # type: ignore[operator]
                fds.PixelData = fh.read(n * self.frame_bytes)
        return _to_tchw(_dicom_pixels(fds, self.path), self.path)


def _read_dicom_file(path: Path, lazy: bool = False) -> Cine:
    src = _DicomFileFrames(path)
    frames: Any = LazyFrames((src.num, *src.read(0, 1).shape[1:]), src.read) if lazy else src.read(0, src.num)
    return Cine(frames=frames, source=str(path), format="dicom", meta={"dicom": src.header},
                **_dicom_geometry(src.header))


def _read_dicom_series(files: list[Path], source: Path, lazy: bool = False) -> Cine:
    """A folder of single-frame DICOM files: headers order the frames; pixels are decoded when a window is read."""
    entries = []
    for f in files:
        ds = _read_dicom_dataset(f, stop_before_pixels=True)
        order = (
            int(ds.get("InstanceNumber", 0) or 0),
            str(ds.get("AcquisitionTime", "") or ds.get("ContentTime", "") or ""),
            natural_key(f.name),
        )
        entries.append((order, f, ds))
    entries.sort(key=lambda e: e[0])
    first = entries[0][2]
    shape = _dicom_frame_shape(first, entries[0][1])
    for _, f, ds in entries[1:]:
        if _dicom_frame_shape(ds, f) != shape:
            raise CineReadError(f, f"frame size {_dicom_frame_shape(ds, f)} differs from the series' {shape}")
    ordered = [e[1] for e in entries]

    def read(start: int, stop: int) -> np.ndarray:
        out = [_dicom_pixels(_read_dicom_dataset(f), f) for f in ordered[start:stop]]
        for f, a in zip(ordered[start:stop], out):
            if a.shape[1:3] != shape[:2]:
                raise CineReadError(f, f"frame size {a.shape[1:3]} differs from the series' {shape[:2]}")
        return _to_tchw(np.concatenate(out, 0), source)

    frames: Any = LazyFrames((len(ordered), *read(0, 1).shape[1:]), read) if lazy else read(0, len(ordered))
    geom = _dicom_geometry(first)
    if geom["frame_time_ms"] is None and len(entries) > 1:
        geom["frame_time_ms"] = _series_frame_time(entries[0][2], entries[1][2])
    return Cine(
        frames=frames,
        source=str(source),
        format="dicom-series",
        meta={"dicom": first, "files": [str(f) for f in ordered]},
        **geom,
    )


def _series_frame_time(a: Any, b: Any) -> float | None:
    def seconds(ds: Any) -> float | None:
        t = str(ds.get("AcquisitionTime", "") or ds.get("ContentTime", "") or "")
        if len(t) < 6:
            return None
        try:
            return int(t[0:2]) * 3600 + int(t[2:4]) * 60 + float(t[4:])
        except ValueError:
            return None

    ta, tb = seconds(a), seconds(b)
    return (tb - ta) * 1000.0 if ta is not None and tb is not None and tb > ta else None


# ----------------------------------------------------------------------------------------------- NIfTI / ITK
def _nifti_time_axis(shape: Sequence[int]) -> int:
    """Axis of time in a stored NIfTI of ``shape``: (X,Y,T), (X,Y,1,T), (X,Y,T,C), (X,Y,1,T,C), (X,Y,T,1,C)."""
    return 3 if len(shape) in (4, 5) and shape[2] == 1 else 2


def _nifti_slab(shape: Sequence[int], t_axis: int, start: int, stop: int) -> tuple:
    """Index of frames ``start:stop`` along ``t_axis`` (nibabel reads only that part of an uncompressed file)."""
    return tuple(slice(start, stop) if i == t_axis else slice(None) for i in range(len(shape)))


def _nifti_frames(data: np.ndarray, shape: Sequence[int], path: Path) -> np.ndarray:
    """Stored NIfTI voxels (all frames or a slab of them along the time axis of the full ``shape``) -> ``(T,H,W[,C])``.
    The layout is decided from the full shape, so a one-frame slab is read like the whole."""
    if data.dtype.names:  # RGB24 / RGBA32 structured voxels
        data = np.stack([data[n] for n in data.dtype.names[:3]], axis=-1)
        shape = (*shape, 3)
    if len(shape) == 2:
        data = data[:, :, None]
    elif len(shape) in (4, 5) and shape[2] == 1:
        data = data[:, :, 0]
    elif len(shape) == 5 and shape[3] == 1:
        data = data[:, :, :, 0]
    if data.ndim not in (3, 4) or (data.ndim == 4 and data.shape[3] not in (1, 3, 4)):
        raise CineReadError(path, f"NIfTI of shape {tuple(shape)} is not 2D+t (x, y, t[, channel])")
    # (X, Y, T[, C]) -> (T, H=Y, W=X[, C])
    return np.transpose(data, (2, 1, 0)) if data.ndim == 3 else np.transpose(data, (2, 1, 0, 3))


def _read_nifti(path: Path, lazy: bool = False) -> Cine:
    import nibabel as nib

    try:
        img = nib.load(str(path), keep_file_open=lazy)  # streamed slabs: one open (gzip) file, read forward
        _check_size(path, img.shape)
        shape = tuple(int(d) for d in img.shape)
        t_axis = _nifti_time_axis(shape)
        if lazy and len(shape) >= 3:
            first = _to_tchw(_nifti_frames(np.asanyarray(img.dataobj[_nifti_slab(shape, t_axis, 0, 1)]), shape, path),
                             path)
            num = shape[t_axis]

            def read(start: int, stop: int) -> np.ndarray:
                try:
                    slab = np.asanyarray(img.dataobj[_nifti_slab(shape, t_axis, start, stop)])
                except Exception as exc:  # truncated or corrupt beyond the first frame
                    raise CineReadError(path, f"frames {start}-{stop - 1} unreadable ({type(exc).__name__}: {exc})"
                                        ) from exc
                return _to_tchw(_nifti_frames(slab, shape, path), path)

            frames: Any = LazyFrames((num, *first.shape[1:]), read)
        else:
            frames = _to_tchw(_nifti_frames(np.asanyarray(img.dataobj), shape, path), path)
    except CineReadError:
        raise
    except Exception as exc:
        raise CineReadError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    zooms = img.header.get_zooms()
    affine = np.asarray(img.affine, dtype=float)
    unit = img.header.get_xyzt_units()[1]
    to_ms = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}.get(unit, 1000.0 if t_axis == 3 else None)
    frame_time = None
    if to_ms is not None and len(zooms) > t_axis and zooms[t_axis] > 0:
        frame_time = float(zooms[t_axis]) * to_ms
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    rot = affine[:3, :3] / np.maximum(np.linalg.norm(affine[:3, :3], axis=0, keepdims=True), 1e-12)
    return Cine(
        frames=frames,
        spacing=(float(zooms[1]), float(zooms[0])),
        frame_time_ms=frame_time,
        origin=tuple(ras_to_lps @ affine[:3, 3]),  # type: ignore[arg-type]
        direction=ras_to_lps @ rot,
        source=str(path),
        format="nifti",
        meta={"affine": affine, "header": img.header.copy(), "nifti_shape": shape},
    )


def _read_itk(path: Path, lazy: bool = False) -> Cine:
    """MetaImage/NRRD through SimpleITK (ITK's image IO). A window reads only its z-slabs (ITK streams the
    uncompressed formats; compressed ones are decoded and cropped by ITK)."""
    import SimpleITK as sitk

    def reader() -> Any:
        r = sitk.ImageFileReader()
        r.SetFileName(str(path))
        try:
            r.ReadImageInformation()
        except RuntimeError as exc:
            raise CineReadError(path, f"not a readable ITK image ({str(exc).strip().splitlines()[-1]})") from exc
        return r

    info = reader()
    dim, size = info.GetDimension(), [int(s) for s in info.GetSize()]
    if dim not in (2, 3):
        raise CineReadError(path, f"ITK image of dimension {dim} is not 2D or 2D+t")
    _check_size(path, (*size, info.GetNumberOfComponents()))
    num = size[2] if dim == 3 else 1

    def read(start: int, stop: int) -> np.ndarray:
        r = reader()
        if dim == 3:
            r.SetExtractIndex([0, 0, start])
            r.SetExtractSize([size[0], size[1], stop - start])
        try:
            arr = sitk.GetArrayFromImage(r.Execute())  # (z, y, x[, components])
        except RuntimeError as exc:
            raise CineReadError(path, f"frames {start}-{stop - 1} unreadable ({str(exc).strip().splitlines()[-1]})"
                                ) from exc
        return _to_tchw(arr[None] if dim == 2 else arr, path)

    frames: Any = LazyFrames((num, *read(0, 1).shape[1:]), read) if lazy else read(0, num)
    spacing = [float(s) for s in info.GetSpacing()]
    origin = [float(o) for o in info.GetOrigin()]
    direction = np.asarray(info.GetDirection(), dtype=float).reshape(dim, dim)
    d3 = np.eye(3)
    d3[:dim, :dim] = direction
    return Cine(
        frames=frames,
        spacing=(spacing[1], spacing[0]),
        frame_time_ms=None,
        origin=tuple((origin + [0.0, 0.0, 0.0])[:3]),  # type: ignore[arg-type]
        direction=d3,
        source=str(path),
        format="itk",
        meta={"itk_spacing": spacing, "itk_origin": origin, "itk_direction": direction},
    )


# ----------------------------------------------------------------------------------------------- video / frames
class _VideoFrames:
    """Sequential decoding with one open capture; a read before the current position reopens the file."""

    def __init__(self, path: Path) -> None:
        self.path, self.cap, self.pos = path, None, 0

    def _open(self) -> None:
        import cv2

        if self.cap is not None:
            self.cap.release()
        self.cap, self.pos = cv2.VideoCapture(str(self.path)), 0

    def read(self, start: int, stop: int) -> np.ndarray:
        import cv2

        if self.cap is None or start < self.pos:
            self._open()
        while self.pos < start:
            self.cap.grab()
            self.pos += 1
        out = []
        for _ in range(start, stop):
            ok, frame = self.cap.read()
            if not ok:
                raise CineReadError(self.path, f"frame {self.pos} could not be decoded")
            self.pos += 1
            out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame)
        return _to_tchw(np.stack(out), self.path)


def _read_video_lazy(path: Path) -> Cine:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CineReadError(path, "OpenCV cannot open this video file (unknown codec or not a video)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    ok, frame = cap.read()
    if not ok:
        cap.release()
        raise CineReadError(path, "video contains no decodable frames")
    count = 1
    while cap.grab():  # count decodable frames (container counts can be wrong); nothing is kept
        count += 1
    cap.release()
    first = _to_tchw(frame[None], path)
    return Cine(frames=LazyFrames((count, *first.shape[1:]), _VideoFrames(path).read),  # type: ignore[arg-type]
                frame_time_ms=1000.0 / fps if fps > 0 else None, source=str(path), format="video")


def _read_video(path: Path) -> Cine:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CineReadError(path, "OpenCV cannot open this video file (unknown codec or not a video)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame)
    finally:
        cap.release()
    if not frames:
        raise CineReadError(path, "video contains no decodable frames")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise CineReadError(path, f"video frames differ in size: {sorted(shapes)}")
    return Cine(
        frames=_to_tchw(np.stack(frames), path),
        frame_time_ms=1000.0 / fps if fps > 0 else None,
        source=str(path),
        format="video",
    )


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


def _read_frame_files(files: Sequence[PathLike], source: PathLike, lazy: bool = False) -> Cine:
    files = [Path(f) for f in files]
    if not files:
        raise CineReadError(source, "no image frames found")
    meta = {"files": [str(f) for f in files], "frame_names": [f.stem for f in files]}
    if lazy:
        first = _to_tchw(read_image_file(files[0])[None], files[0])

        def read(start: int, stop: int) -> np.ndarray:
            out = [_to_tchw(read_image_file(f)[None], f) for f in files[start:stop]]
            for f, a in zip(files[start:stop], out):
                if a.shape[1:] != first.shape[1:]:
                    raise CineReadError(f, f"frame size {a.shape[2:]} differs from the first frame's {first.shape[2:]}")
            return np.concatenate(out) if out else np.zeros((0, *first.shape[1:]), np.float32)

        return Cine(frames=LazyFrames((len(files), *first.shape[1:]), read), source=str(source),  # type: ignore[arg-type]
                    format="frames", meta=meta)
    frames, shape = [], None
    for f in files:
        img = read_image_file(f)
        if shape is not None and img.shape != shape:
            raise CineReadError(f, f"frame size {img.shape} differs from the first frame's {shape}")
        shape = img.shape
        frames.append(img)
    return Cine(frames=_to_tchw(np.stack(frames), source), source=str(source), format="frames", meta=meta)


def list_frame_files(folder: PathLike) -> list[Path]:
    """Image files of a folder in natural order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and _suffix(p) in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


# ----------------------------------------------------------------------------------------------- public API
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
    if isinstance(source, (list, tuple)):
        cine = _read_frame_files(source, source[0] if source else "<empty list>", lazy)
    else:
        path = Path(source)
        if not path.exists():
            raise CineReadError(path, "file or folder not found")
        if path.is_dir():
            entries = sorted((p for p in path.iterdir() if p.is_file()), key=lambda p: natural_key(p.name))
            dicoms = [p for p in entries if _is_dicom_file(p)]
            if dicoms:
                cine = _read_dicom_series(dicoms, path, lazy)
            else:
                cine = _read_frame_files(list_frame_files(path), path, lazy)
        else:
            if path.stat().st_size == 0:
                raise CineReadError(path, "empty file (0 bytes)")
            suffix = _suffix(path)
            if suffix in NIFTI_SUFFIXES:
                cine = _read_nifti(path, lazy)
            elif suffix in ITK_SUFFIXES:
                cine = _read_itk(path, lazy)
            elif suffix in VIDEO_SUFFIXES:
                cine = _read_video_lazy(path) if lazy else _read_video(path)
            elif suffix in IMAGE_SUFFIXES:
                cine = _read_frame_files([path], path)
            elif _is_dicom_file(path):
                cine = _read_dicom_file(path, lazy)
            else:
                raise CineReadError(path, f"unsupported file type '{suffix or '(no suffix)'}' (not DICOM, NIfTI, "
                                    "ITK, video or image)")
    if cine.num_frames < min_frames:
        raise CineReadError(cine.source, f"has {cine.num_frames} frame(s); a video needs at least {min_frames}")
    return cine


def labels_from_pixels(frames: np.ndarray) -> np.ndarray:
    """Turn mask pixel values ``(T, C, H, W)`` into integer labels ``(T, H, W)`` uint8.

    Small integer values (max <= 32) are kept as labels (multi-label masks); anything larger is a
    0..255-style binary mask (PNG/JPEG exports) and is binarised with ``> 127`` (or half the maximum
    for wider ranges), matching the usual published preprocessing.
    """
    vals = frames.max(axis=1)  # colour masks: any channel
    vmax = float(vals.max()) if vals.size else 0.0
    if vmax <= 32:
        return np.rint(np.clip(vals, 0, 255)).astype(np.uint8)
    thr = 127.0 if vmax <= 255 else vmax / 2.0
    return (vals > thr).astype(np.uint8)


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
    labels = labels_from_pixels(cine.frames)
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
                     window: int = 16) -> dict[int, np.ndarray]:
    """The annotated frames of a mask, ``{frame: (H, W) uint8 labels}``, streamed: only those frames are kept.

    Which frames: ``frames`` when given; else every frame a partial mask (frame folder named like the video's
    frames) covers; else the non-empty frames of a full-length mask, which is read ``window`` frames at a time,
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
    partial = len(index) < like.num_frames
    kept: dict[int, np.ndarray] = {}
    for start in range(0, mask.num_frames, window):
        for k, frame in enumerate(mask.frames[start:start + window]):
            t = index[start + k]
            if (t in wanted) if wanted is not None else (partial or frame.any()):
                kept[t] = frame
    order = sorted(kept)
    labels = labels_from_pixels(np.stack([kept[t] for t in order])) if order else []  # one value rule for all
    return dict(zip(order, labels))
