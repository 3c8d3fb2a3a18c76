"""DICOM SEG for cines, including multi-frame ultrasound without a Frame of Reference.

highdicom builds Segmentation objects but accepts a source without Frame of Reference only for a single frame
(highdicom #284). Ultrasound cines rarely have one. Our encoding: highdicom builds a one-frame SEG from a
single-frame view of the source (all modules, segment descriptions, references); we then expand it to every
(segment, frame) pair. Each SEG frame's Derivation Image Sequence references its source instance and frame
(Referenced Frame Number); the dimensions are Referenced Segment Number and Temporal Position Index (frame
content), which is how an enhanced multi-frame object indexes time without spatial positions.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvos import __version__
from medvos.io.atomic import atomic_path


def _segment_description(number: int, label: str) -> Any:
    import highdicom as hd

    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="medvos", version=__version__, family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence")),
    )


def write_dicom_seg(path: str | Path, labels: np.ndarray, sources: Sequence[Any],
                    label_names: dict[int, str] | None = None) -> Path:
    """Write labels ``(T,H,W)`` (0 = background) as a BINARY DICOM SEG referencing the source cine.

    Args:
        sources: one multi-frame dataset (frame t -> its frame t+1) or one single-frame dataset per frame
            (a DICOM series in time order). Pixel data is not needed.
        label_names: segment label per value (default ``object <v>``).
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    labels = np.asarray(labels, np.uint8)
    t_frames, rows, cols = labels.shape
    multi = len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) > 1
    if not multi and len(sources) != t_frames:
        raise ValueError(f"{len(sources)} source images for {t_frames} label frames")
    values = [int(v) for v in np.unique(labels) if v] or [1]
    names = label_names or {}

    view = copy.copy(sources[0])
    for kw in ("NumberOfFrames", "FrameOfReferenceUID", "PerFrameFunctionalGroupsSequence",
               "SharedFunctionalGroupsSequence", "PixelData"):
        if kw in view:
            delattr(view, kw)
    if str(view.get("LossyImageCompression", "00")) == "01" and "LossyImageCompressionMethod" not in view:
        view.LossyImageCompressionMethod = "ISO_10918_1"
    template = hd.seg.Segmentation(
        source_images=[view],
        pixel_array=np.stack([(labels[0] == v) for v in values], -1)[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(i + 1, names.get(v, f"object {v}")) for i, v in enumerate(values)],
        series_instance_uid=hd.UID(), series_number=901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="medvos", manufacturer_model_name="medvos", software_versions=__version__, device_serial_number="0",
        omit_empty_frames=False,
    )
    base_item = template.PerFrameFunctionalGroupsSequence[0]
    frames, bits = [], []
    for si, v in enumerate(values):
        for t in range(t_frames):
            item = copy.deepcopy(base_item)
            ref = item.DerivationImageSequence[0].SourceImageSequence[0]
            src = sources[0] if multi else sources[t]
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
            if multi:
                ref.ReferencedFrameNumber = t + 1
            item.FrameContentSequence[0].DimensionIndexValues = [si + 1, t + 1]
            item.FrameContentSequence[0].TemporalPositionIndex = t + 1
            item.SegmentIdentificationSequence[0].ReferencedSegmentNumber = si + 1
            frames.append(item)
            bits.append((labels[t] == v).reshape(-1))
    dim = Dataset()
    dim.DimensionOrganizationUID = template.DimensionIndexSequence[0].DimensionOrganizationUID
    dim.DimensionIndexPointer = 0x00209128  # Temporal Position Index
    dim.FunctionalGroupPointer = 0x00209111  # Frame Content Sequence
    dim.DimensionDescriptionLabel = "Temporal Position Index"
    template.DimensionIndexSequence.append(dim)
    template.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    template.NumberOfFrames = len(frames)
    packed = np.packbits(np.concatenate(bits).astype(np.uint8), bitorder="little").tobytes()
    template.PixelData = packed + (b"\0" if len(packed) % 2 else b"")
    if not multi:
        template.ReferencedSeriesSequence[0].ReferencedInstanceSequence = DicomSequence([
            _ref(s) for s in sources])
    if "FrameTime" in sources[0]:
        template.FrameTime = sources[0].FrameTime
    with atomic_path(path) as tmp:
        template.save_as(str(tmp))
    return Path(path)


def _ref(src: Any) -> Any:
    from pydicom.dataset import Dataset

    d = Dataset()
    d.ReferencedSOPClassUID, d.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
    return d


def read_dicom_seg(path: str | Path) -> np.ndarray:
    """Labels ``(T,H,W)`` from a SEG written by :func:`write_dicom_seg` (segment k -> its label order k)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    rows, cols, n = int(ds.Rows), int(ds.Columns), int(ds.NumberOfFrames)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")[: n * rows * cols]
    planes = bits.reshape(n, rows, cols)
    index = [tuple(int(x) for x in f.FrameContentSequence[0].DimensionIndexValues)
             for f in ds.PerFrameFunctionalGroupsSequence]
    t_frames = max(t for _, t in index)
    out = np.zeros((t_frames, rows, cols), np.uint8)
    for plane, (seg, t) in zip(planes, index):
        out[t - 1][plane.astype(bool)] = seg
    return out
