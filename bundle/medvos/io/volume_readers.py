"""2D+t volumes: NIfTI (nibabel) and ITK MetaImage/NRRD (SimpleITK), read whole or window by window along time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvos.io.cine import Cine
from medvos.io.errors import CineReadError
from medvos.io.frames import LazyFrames, check_size, to_tchw


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


def read_nifti(path: Path, lazy: bool = False) -> Cine:
    import nibabel as nib

    try:
        img = nib.load(str(path), keep_file_open=lazy)  # streamed slabs: one open (gzip) file, read forward
        check_size(path, img.shape)
        shape = tuple(int(d) for d in img.shape)
        t_axis = _nifti_time_axis(shape)
        if lazy and len(shape) >= 3:
            first = to_tchw(_nifti_frames(np.asanyarray(img.dataobj[_nifti_slab(shape, t_axis, 0, 1)]), shape, path),
                             path)
            num = shape[t_axis]

            def read(start: int, stop: int) -> np.ndarray:
                try:
                    slab = np.asanyarray(img.dataobj[_nifti_slab(shape, t_axis, start, stop)])
                except Exception as exc:  # truncated or corrupt beyond the first frame
                    raise CineReadError(path, f"frames {start}-{stop - 1} unreadable ({type(exc).__name__}: {exc})"
                                        ) from exc
                return to_tchw(_nifti_frames(slab, shape, path), path)

            frames: Any = LazyFrames((num, *first.shape[1:]), read)
        else:
            frames = to_tchw(_nifti_frames(np.asanyarray(img.dataobj), shape, path), path)
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


def read_itk(path: Path, lazy: bool = False) -> Cine:
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
    check_size(path, (*size, info.GetNumberOfComponents()))
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
        return to_tchw(arr[None] if dim == 2 else arr, path)

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
