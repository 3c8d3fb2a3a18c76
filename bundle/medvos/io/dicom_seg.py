"""DICOM SEG for cines: every frame of every object, with the geometry viewers need to place it.

highdicom builds Segmentation objects but accepts a source without Frame of Reference only for a single frame
(highdicom #284), and ultrasound cines rarely have one. Our encoding: highdicom builds a one-frame SEG from a
single-frame view of the source (patient, study, equipment, segment descriptions, references); we then write every
(segment, frame) pair with its functional groups:

- **Geometry.** A source with a Frame of Reference and plane geometry (a DICOM series, an enhanced multi-frame, a
  classic multi-frame with Image Position/Orientation) keeps its Frame of Reference, and every SEG frame the
  position, orientation and pixel spacing of its source frame. A source without one (ultrasound) gets a Frame of
  Reference of the SEG's own on the grid viewers load such a cine on (ITK/3D Slicer): origin 0, identity
  orientation, the source's Pixel Spacing where it has that attribute (else 1 mm) and 1 mm per frame, so the SEG
  lines up with the cine in a viewer and dcmqi/pydicom-seg can build its volume.
- **Time.** The dimensions are Referenced Segment Number and Temporal Position Index (frame content); each frame's
  Derivation Image Sequence references its source instance and frame.
- **Who drew what.** Each object is a tracked entity (Tracking ID and UID shared by its segments): an AUTOMATIC
  segment holds the propagated frames; where frames were annotated by hand, a MANUAL segment "<name> (annotated)"
  holds those frames. Each frame of an object is in exactly one of the two.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvos import __version__
from medvos.io.atomic import atomic_path

_GEOMETRY = ("NumberOfFrames", "FrameOfReferenceUID", "PerFrameFunctionalGroupsSequence",
             "SharedFunctionalGroupsSequence", "PixelData", "ImagePositionPatient", "ImageOrientationPatient",
             "PixelSpacing", "SliceThickness", "SpacingBetweenSlices", "PositionReferenceIndicator",
             "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")


def warm_up() -> None:
    """Import highdicom and load its IOD tables (about 0.5 s the first time in a process), e.g. in a background
    thread while frames propagate, so the SEG at the end of a run does not wait for it."""
    import highdicom  # noqa: F401
    from highdicom._module_utils import is_attribute_in_iod

    is_attribute_in_iod("FrameOfReferenceUID", "1.2.840.10008.5.1.4.1.1.66.4")  # the Segmentation IOD's table


def _segment_description(number: int, label: str, value: int, tracking_uid: str, manual: bool) -> Any:
    import highdicom as hd

    algorithm = None if manual else hd.AlgorithmIdentificationSequence(
        name="medvos", version=__version__, family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence"))
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=f"{label} (annotated)" if manual else label,
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
        algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.MANUAL if manual
                        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC),
        algorithm_identification=algorithm,
        tracking_id=f"label {value}", tracking_uid=tracking_uid,
    )


def display_cielab(value: int) -> list[int]:
    """DICOM-scaled CIELab (0..65535) of the overlay colour of label ``value`` (the overlay video's palette)."""
    from skimage.color import rgb2lab

    from medvos.io.palette import PALETTE

    lab = rgb2lab(PALETTE[value % len(PALETTE)][None, None] / 255.0)[0, 0]
    return [int(round(lab[0] * 65535 / 100)), int(round((lab[1] + 128) * 65535 / 255)),
            int(round((lab[2] + 128) * 65535 / 255))]


def _first(ds: Any, group: str, keyword: str) -> Any:
    """``ds.<group>[0].<keyword>`` from the shared functional groups, else None."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and group in shared[0] and len(shared[0].get(group)) and keyword in shared[0].get(group)[0]:
        return shared[0].get(group)[0].get(keyword)
    return None


def _per_frame(ds: Any, index: int, group: str, keyword: str) -> Any:
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per and index < len(per) and group in per[index] and keyword in per[index].get(group)[0]:
        return per[index].get(group)[0].get(keyword)
    return _first(ds, group, keyword)


def source_geometry(sources: Sequence[Any], num_frames: int) -> dict[str, Any] | None:
    """The sources' own plane geometry (Frame of Reference, per-frame positions, orientation, pixel spacing, slice
    thickness), or None when they have no Frame of Reference or lack any of it."""
    first = sources[0]
    if not first.get("FrameOfReferenceUID"):
        return None
    if len(sources) == num_frames and len(sources) > 1 or int(first.get("NumberOfFrames", 1) or 1) == 1:
        items = [(s.get("ImagePositionPatient"), s.get("ImageOrientationPatient"), s.get("PixelSpacing"),
                  s.get("SliceThickness")) for s in sources[:num_frames]]
    else:
        items = [(_per_frame(first, t, "PlanePositionSequence", "ImagePositionPatient")
                  or first.get("ImagePositionPatient"),
                  _per_frame(first, t, "PlaneOrientationSequence", "ImageOrientationPatient")
                  or first.get("ImageOrientationPatient"),
                  _per_frame(first, t, "PixelMeasuresSequence", "PixelSpacing") or first.get("PixelSpacing"),
                  _per_frame(first, t, "PixelMeasuresSequence", "SliceThickness") or first.get("SliceThickness"))
                 for t in range(num_frames)]
    if any(p is None or o is None or s is None for p, o, s, _ in items):
        return None
    return {"frame_of_reference": str(first.FrameOfReferenceUID),
            "indicator": str(first.get("PositionReferenceIndicator", "") or ""),
            "positions": [[float(v) for v in p] for p, _, _, _ in items],
            "orientation": [float(v) for v in items[0][1]],
            "spacing": [float(v) for v in items[0][2]],
            "thickness": float(items[0][3]) if items[0][3] not in (None, "") else 1.0}


def viewer_geometry(source: Any, num_frames: int) -> dict[str, Any]:
    """A Frame of Reference of the SEG's own for a source without one: the grid ITK and 3D Slicer load the cine on
    (origin 0, identity orientation, the Pixel Spacing attribute or 1 mm, 1 mm per frame)."""
    import highdicom as hd

    spacing = [float(v) for v in source.PixelSpacing] if "PixelSpacing" in source else [1.0, 1.0]
    return {"frame_of_reference": hd.UID(), "indicator": "", "positions": [[0.0, 0.0, float(t)]
                                                                          for t in range(num_frames)],
            "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "spacing": spacing, "thickness": 1.0}


def _slice_step(geometry: dict[str, Any]) -> float | None:
    """The distance between consecutive frames along the plane normal, when the frames are evenly spaced apart."""
    o = np.asarray(geometry["orientation"], float)
    normal = np.cross(o[:3], o[3:])
    z = np.asarray(geometry["positions"], float) @ normal
    if len(z) < 2:
        return None
    steps = np.abs(np.diff(z))
    return float(steps[0]) if steps[0] > 1e-6 and np.allclose(steps, steps[0], rtol=1e-3, atol=1e-4) else None


def _lossy_compression(sources: Sequence[Any]) -> dict[str, str] | None:
    """The source's lossy compression record (Lossy Image Compression 01, its method and ratio) for the SEG, the ratio
    estimated from the file size where the source omits it (it is optional in ultrasound files)."""
    src = sources[0]
    if str(src.get("LossyImageCompression", "00")) != "01":
        return None
    ratio = src.get("LossyImageCompressionRatio")
    if not ratio:
        filename = getattr(src, "filename", None)
        decoded = (sum(int(s.get("NumberOfFrames", 1) or 1) for s in sources) * int(src.Rows) * int(src.Columns)
                   * int(src.get("SamplesPerPixel", 1)) * int(src.get("BitsAllocated", 8) or 8) // 8)
        stored = sum(os.path.getsize(s.filename) for s in sources if isinstance(getattr(s, "filename", None), str)
                     and os.path.exists(s.filename)) if isinstance(filename, str) else 0
        ratio = [f"{decoded / stored:.2f}"] if stored else None
    method = src.get("LossyImageCompressionMethod") or "ISO_10918_1"
    out = {"LossyImageCompression": "01", "LossyImageCompressionMethod": method}
    if ratio:
        out["LossyImageCompressionRatio"] = ratio
    return out


def dicom_sources(cine: Any) -> list[Any]:
    """The datasets a SEG of ``cine`` (a DICOM cine from :func:`medvos.io.read_cine`) references: the multi-frame
    dataset, or each file of a series in frame order (headers only)."""
    import pydicom

    if cine.format == "dicom":
        return [cine.meta["dicom"]]
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in cine.meta["files"]]


def write_dicom_seg(path: str | Path, labels: np.ndarray, sources: Sequence[Any],
                    label_names: dict[int, str] | None = None, annotated: Sequence[int] = ()) -> Path:
    """Write labels ``(T,H,W)`` (0 = background) as a BINARY DICOM SEG referencing the source cine.

    Args:
        sources: one multi-frame dataset (frame t -> its frame t+1) or one single-frame dataset per frame
            (a DICOM series in time order). Pixel data is not needed.
        label_names: segment label per value (default ``object <v>``).
        annotated: frames drawn by hand (their labels go to MANUAL segments; the rest are AUTOMATIC).
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
    manual_frames = sorted({int(a) for a in annotated if 0 <= int(a) < t_frames})
    auto_frames = [t for t in range(t_frames) if t not in manual_frames]
    geometry = source_geometry(sources, t_frames) or viewer_geometry(sources[0], t_frames)

    # (segment number, label value, manual, frames), AUTOMATIC segments first so segment k is label order k
    segments = [(i + 1, v, False, auto_frames) for i, v in enumerate(values) if auto_frames]
    drawn = [v for v in values if manual_frames and (labels[manual_frames] == v).any()]
    segments += [(len(segments) + i + 1, v, True, manual_frames) for i, v in enumerate(drawn)]
    tracking = {v: hd.UID() for v in values}
    view = copy.copy(sources[0])  # one frame of the source, for highdicom's one-frame template
    for kw in _GEOMETRY:
        if kw in view:
            delattr(view, kw)
    if sources[0].get("FrameOfReferenceUID"):  # the source's own geometry: frame 0's plane, as a single frame has it
        view.FrameOfReferenceUID = geometry["frame_of_reference"]
        view.ImagePositionPatient = geometry["positions"][0]
        view.ImageOrientationPatient = geometry["orientation"]
        view.PixelSpacing = geometry["spacing"]
        view.SliceThickness = geometry["thickness"]
    template = hd.seg.Segmentation(
        source_images=[view],
        pixel_array=np.zeros((1, rows, cols, len(segments)), np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(n, names.get(v, f"object {v}"), v, tracking[v], manual)
                              for n, v, manual, _ in segments],
        series_instance_uid=hd.UID(), series_number=901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="medvos", manufacturer_model_name="medvos", software_versions=__version__,
        device_serial_number="0", omit_empty_frames=False, content_label="MEDVOS",
        content_description="medvos propagated segmentation",
    )
    for item, (_, v, _, _) in zip(template.SegmentSequence, segments):
        item.RecommendedDisplayCIELabValue = display_cielab(v)
    base = template.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    derivation_code, purpose = base.DerivationCodeSequence, base.SourceImageSequence[0].PurposeOfReferenceCodeSequence
    preserved = base.SourceImageSequence[0].get("SpatialLocationsPreserved")
    frames, bits = [], []
    for number, v, _, seg_frames in segments:
        for t in seg_frames:  # built afresh (a deep copy of highdicom's item per frame cost seconds on long cines)
            src = sources[0] if multi else sources[t]
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
            if multi:
                ref.ReferencedFrameNumber = t + 1
            if preserved is not None:
                ref.SpatialLocationsPreserved = preserved
            ref.PurposeOfReferenceCodeSequence = purpose
            derivation = Dataset()
            derivation.SourceImageSequence = DicomSequence([ref])
            derivation.DerivationCodeSequence = derivation_code
            content, position, segment = Dataset(), Dataset(), Dataset()
            content.TemporalPositionIndex = t + 1
            content.DimensionIndexValues = [number, t + 1]
            position.ImagePositionPatient = [f"{c:.6g}" for c in geometry["positions"][t]]
            segment.ReferencedSegmentNumber = number
            item = Dataset()
            item.DerivationImageSequence = DicomSequence([derivation])
            item.FrameContentSequence = DicomSequence([content])
            item.PlanePositionSequence = DicomSequence([position])
            item.SegmentIdentificationSequence = DicomSequence([segment])
            frames.append(item)
            bits.append((labels[t] == v).reshape(-1))

    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing = [f"{s:.6g}" for s in geometry["spacing"]]
    measures.SliceThickness = f"{geometry['thickness']:.6g}"
    step = _slice_step(geometry)
    if step:
        measures.SpacingBetweenSlices = f"{step:.6g}"  # readers that build a volume lay frames out by it
    orientation.ImageOrientationPatient = [f"{c:.6g}" for c in geometry["orientation"]]
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    template.SharedFunctionalGroupsSequence = DicomSequence([shared])
    template.FrameOfReferenceUID = geometry["frame_of_reference"]
    template.PositionReferenceIndicator = geometry["indicator"]
    for kw in ("PatientOrientation", "FrameTime"):
        if kw in template:
            delattr(template, kw)
    for kw, value in (_lossy_compression(sources) or {}).items():
        setattr(template, kw, value)

    dim = Dataset()
    dim.DimensionOrganizationUID = template.DimensionIndexSequence[0].DimensionOrganizationUID
    dim.DimensionIndexPointer = 0x00209128  # Temporal Position Index
    dim.FunctionalGroupPointer = 0x00209111  # Frame Content Sequence
    dim.DimensionDescriptionLabel = "Temporal Position Index"
    template.DimensionIndexSequence = DicomSequence([template.DimensionIndexSequence[0], dim])
    template.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    template.NumberOfFrames = len(frames)
    if (rows * cols) % 8 == 0:  # frames start on byte boundaries: pack each (no whole-volume bit array)
        packed = b"".join(np.packbits(f, bitorder="little").tobytes() for f in bits)
    else:
        packed = np.packbits(np.concatenate(bits), bitorder="little").tobytes()
    template.PixelData = packed + (b"\0" if len(packed) % 2 else b"")
    if not multi:
        template.ReferencedSeriesSequence[0].ReferencedInstanceSequence = DicomSequence([
            _ref(s) for s in sources])
    with atomic_path(path) as tmp:
        template.save_as(str(tmp))
    return Path(path)


def _ref(src: Any) -> Any:
    from pydicom.dataset import Dataset

    d = Dataset()
    d.ReferencedSOPClassUID, d.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
    return d


def segment_labels(ds: Any) -> dict[int, int]:
    """``{segment number: label value}`` of a SEG written by :func:`write_dicom_seg` (from each segment's Tracking
    ID ``label <v>``; older files without one: segment k is the k-th label)."""
    out = {}
    for item in ds.SegmentSequence:
        tid = str(item.get("TrackingID", "") or "")
        out[int(item.SegmentNumber)] = int(tid.split()[-1]) if tid.startswith("label ") else int(item.SegmentNumber)
    return out


def read_dicom_seg(path: str | Path) -> np.ndarray:
    """Labels ``(T,H,W)`` from a SEG written by :func:`write_dicom_seg` (each segment's frames painted with its
    label value; the manual and automatic segments of an object share it)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    rows, cols, n = int(ds.Rows), int(ds.Columns), int(ds.NumberOfFrames)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")[: n * rows * cols]
    planes = bits.reshape(n, rows, cols)
    index = [tuple(int(x) for x in f.FrameContentSequence[0].DimensionIndexValues)
             for f in ds.PerFrameFunctionalGroupsSequence]
    value = segment_labels(ds)
    t_frames = max(t for _, t in index)
    out = np.zeros((t_frames, rows, cols), np.uint8)
    for plane, (seg, t) in zip(planes, index):
        out[t - 1][plane.astype(bool)] = value[seg]
    return out
