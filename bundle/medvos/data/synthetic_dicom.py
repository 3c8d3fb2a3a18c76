"""Synthetic DICOM cines for the synthetic set, tests and benchmarks: an Ultrasound Multi-frame Image (uncompressed or
JPEG Baseline) and a series of single-frame US Images, with generated UIDs and a made-up patient (``SYNTHETIC^CINE``).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from medvos.io.atomic import atomic_path
from medvos.io.writers import as_uint8_frames


def _base_dataset(sop_class: str, study_uid: str | None = None, series_uid: str | None = None):  # noqa: ANN202
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName, ds.PatientID = "SYNTHETIC^CINE", "MEDVOS0001"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = "US"
    ds.SeriesNumber, ds.StudyID, ds.AccessionNumber = 1, "1", ""
    ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex = "", "", ""
    return ds


def _set_pixels(ds, arr: np.ndarray) -> None:  # noqa: ANN001
    colour = arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] == 3 and getattr(ds, "NumberOfFrames", 1) == 1)
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.Rows, ds.Columns = int(arr.shape[-3 if colour else -2]), int(arr.shape[-2 if colour else -1])
    ds.PixelData = np.ascontiguousarray(arr, np.uint8).tobytes()


def _jpeg_baseline(ds, arr: np.ndarray, quality: int = 90) -> None:  # noqa: ANN001
    """Encapsulate uint8 frames as JPEG Baseline (Pillow encodes; colour as YBR_FULL_422, as ultrasound carts do)."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    colour = ds.SamplesPerPixel == 3
    frames = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a, "RGB" if colour else "L").save(buf, format="JPEG", quality=quality, subsampling=1)
        frames.append(buf.getvalue())
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    if colour:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


def write_dicom_cine(path: str | Path, frames: np.ndarray, frame_time_ms: float = 40.0,
                     spacing: tuple[float, float] = (0.3, 0.3), compression: str | None = None) -> Path:
    """Write an Ultrasound Multi-frame Image (grey or RGB) from ``(T,C,H,W)`` or ``(T,H,W)``: uncompressed, or
    JPEG Baseline with ``compression="jpeg"`` (lossy, as most ultrasound archives store cines)."""
    if compression not in (None, "jpeg"):
        raise ValueError(f"compression must be None or 'jpeg', not {compression!r}")
    arr = as_uint8_frames(frames)
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.3.1")
    ds.NumberOfFrames = int(arr.shape[0])
    ds.FrameTime = f"{frame_time_ms:.3f}"
    ds.FrameIncrementPointer = (0x0018, 0x1063)
    ds.CineRate = int(round(1000.0 / frame_time_ms))
    ds.PixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
    ds.InstanceNumber = 1
    _set_pixels(ds, arr)
    if compression == "jpeg":
        _jpeg_baseline(ds, arr)
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), write_like_original=False)
    return Path(path)


def write_dicom_series(folder: str | Path, frames: np.ndarray, frame_time_ms: float = 40.0,
                       spacing: tuple[float, float] = (0.3, 0.3), shuffle_names: bool = False) -> list[Path]:
    """Write one single-frame US Image per frame, ordered by InstanceNumber and AcquisitionTime.

    ``shuffle_names`` names files in an order unrelated to time (tests the reader's ordering).
    """
    from pydicom.uid import generate_uid

    arr = as_uint8_frames(frames)
    study, series = generate_uid(), generate_uid()
    out = []
    order = np.random.default_rng(0).permutation(len(arr)) if shuffle_names else np.arange(len(arr))
    t0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
    for t, a in enumerate(arr):
        ds = _base_dataset("1.2.840.10008.5.1.4.1.1.6.1", study, series)
        ds.InstanceNumber = t + 1
        ds.AcquisitionTime = (t0 + datetime.timedelta(milliseconds=t * frame_time_ms)).strftime("%H%M%S.%f")
        ds.PixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
        _set_pixels(ds, a)
        p = Path(folder) / f"IM{int(order[t]):04d}.dcm"
        with atomic_path(p) as tmp:
            ds.save_as(str(tmp), write_like_original=False)
        out.append(p)
    return out
