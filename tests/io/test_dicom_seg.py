"""DICOM SEG that validates and that viewers read (issue 14, item 3): dciodvfy (dicom3tools) reports no error or
warning; highdicom, pydicom-seg and dcmqi's segimage2itkimage (what 3D Slicer imports with) read back the labels;
sources with a Frame of Reference keep it; annotated frames are MANUAL, the rest AUTOMATIC."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
from conftest import pydicom_file, tool

from medvos.io.dicom_seg import read_dicom_seg, segment_labels, write_dicom_seg
from medvos.data.synthetic_dicom import write_dicom_cine

T, H, W = 5, 32, 40


def _labels() -> np.ndarray:
    lab = np.zeros((T, H, W), np.uint8)
    lab[:, 5:10, 5:20] = 1
    lab[:, 20:25, 3:9] = 2
    lab[3] = 0  # an object can be absent on a frame
    return lab


def _us_jpeg_cine(tmp_path) -> list:
    """A JPEG ultrasound cine without Frame of Reference nor LossyImageCompressionRatio (it crashed before)."""
    frames = np.random.default_rng(0).integers(0, 255, (T, 3, H, W)).astype(np.uint8)
    ds = pydicom.dcmread(write_dicom_cine(tmp_path / "us.dcm", frames, compression="jpeg"), stop_before_pixels=True)
    assert "FrameOfReferenceUID" not in ds and "LossyImageCompressionRatio" not in ds
    return [ds]


def _ct_series(tmp_path, same_position: bool = False) -> list:
    """A series with a Frame of Reference: CT slices at distinct positions, or a cine MR-like series (one position,
    T times)."""
    base = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    uid = pydicom.uid.generate_uid()
    out = []
    for t in range(T):
        ds = base.copy()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = uid
        ds.InstanceNumber = t + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + (0 if same_position else 2.5 * t)]
        ds.Rows, ds.Columns = H, W
        del ds.PixelData
        p = tmp_path / f"ct{t}.dcm"
        ds.save_as(p)
        out.append(pydicom.dcmread(p))
    return out


def _dciodvfy(path) -> list[str]:
    """dciodvfy's errors and warnings, less the warnings about values copied from the source (CT_small's own
    Patient's Weight of 0)."""
    def report(p):  # noqa: ANN001, ANN202
        res = subprocess.run([tool("dciodvfy"), str(p)], capture_output=True, text=True)
        return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith(("Error", "Warning"))]

    inherited = {line for line in report(pydicom_file("CT_small.dcm")) if line.startswith("Warning - Value")}
    return [line for line in report(path) if line not in inherited]


@pytest.mark.parametrize("source", ["ultrasound", "ct", "cine_mr"])
def test_seg_validates_and_reads_back(tmp_path, source):
    import highdicom as hd

    sources = {"ultrasound": lambda: _us_jpeg_cine(tmp_path), "ct": lambda: _ct_series(tmp_path),
               "cine_mr": lambda: _ct_series(tmp_path, same_position=True)}[source]()
    labels = _labels()
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, sources, annotated=[0])
    assert _dciodvfy(path) == []
    np.testing.assert_array_equal(read_dicom_seg(path), labels)

    ds = pydicom.dcmread(path)
    if source == "ultrasound":  # the SEG's own frame of reference on the grid a viewer loads the cine on
        assert ds.FrameOfReferenceUID and float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
                                                .PixelSpacing[0]) == pytest.approx(0.3)
        assert ds.LossyImageCompression == "01" and float(np.atleast_1d(ds.LossyImageCompressionRatio)[0]) > 1
    else:
        assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
        z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
        assert set(z) == ({-75.0} if source == "cine_mr" else {-75.0 + 2.5 * t for t in range(T)})
    kinds = {(int(s.SegmentNumber), str(s.SegmentAlgorithmType), str(s.SegmentLabel)) for s in ds.SegmentSequence}
    assert kinds == {(1, "AUTOMATIC", "object 1"), (2, "AUTOMATIC", "object 2"),
                     (3, "MANUAL", "object 1 (annotated)"), (4, "MANUAL", "object 2 (annotated)")}
    assert segment_labels(ds) == {1: 1, 2: 2, 3: 1, 4: 2}
    assert len({s.TrackingUID for s in ds.SegmentSequence}) == 2  # an object's two segments are one tracked entity

    seg = hd.seg.segread(path)  # highdicom: every segment's frames at their source frames
    for number, value in segment_labels(ds).items():
        frames = [t for t in range(T) if (t == 0) == (number > 2)]
        got = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=sources[0].SOPInstanceUID, source_frame_numbers=[t + 1 for t in frames],
            segment_numbers=[number], assert_missing_frames_are_empty=True) if len(sources) == 1 else None
        if got is not None:
            np.testing.assert_array_equal(got[..., 0], labels[frames] == value)


def _union_by_label(volumes: dict[int, np.ndarray], ds) -> np.ndarray:
    out = np.zeros_like(next(iter(volumes.values())), np.uint8)
    for number, vol in volumes.items():
        out[vol > 0] = segment_labels(ds)[number]
    return out


@pytest.mark.parametrize("source", ["ultrasound", "ct"])
def test_pydicom_seg_and_dcmqi_read_it_back(tmp_path, source):
    """pydicom-seg (MONAI Label's reader) and dcmqi's segimage2itkimage (3D Slicer's) build the label volume."""
    import glob

    import pydicom_seg
    import SimpleITK as sitk

    sources = _us_jpeg_cine(tmp_path) if source == "ultrasound" else _ct_series(tmp_path)
    labels = _labels()
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, sources, annotated=[0])
    ds = pydicom.dcmread(path)
    reader = pydicom_seg.SegmentReader().read(ds)
    np.testing.assert_array_equal(
        _union_by_label({k: reader.segment_data(k) for k in reader.available_segments}, ds), labels)

    out = tmp_path / "dcmqi"
    out.mkdir()
    res = subprocess.run([tool("segimage2itkimage"), "--inputDICOM", str(path), "--outputDirectory", str(out),
                          "-t", "nrrd"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    volumes = {}
    for f in sorted(glob.glob(str(out / "*.nrrd"))):
        arr = sitk.GetArrayFromImage(sitk.ReadImage(f))
        volumes[int(arr.max()) or len(volumes) + 1] = arr  # dcmqi paints segment k with value k
    np.testing.assert_array_equal(_union_by_label(volumes, ds), labels)


def test_seg_without_annotated_frames_is_all_automatic(tmp_path):
    path = write_dicom_seg(tmp_path / "seg.dcm", _labels(), _us_jpeg_cine(tmp_path))
    ds = pydicom.dcmread(path)
    assert [str(s.SegmentAlgorithmType) for s in ds.SegmentSequence] == ["AUTOMATIC", "AUTOMATIC"]
    assert int(ds.NumberOfFrames) == 2 * T and _dciodvfy(path) == []


def test_enhanced_multi_frame_geometry_comes_from_its_functional_groups(tmp_path):
    """An enhanced multi-frame source (positions per frame in its functional groups) keeps its Frame of Reference
    and each frame's position."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    ds = _us_jpeg_cine(tmp_path)[0]
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    shared, measures, orientation = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.7, 0.7], 6.0
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal: frames stack along y
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for t in range(T):
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [10.0, 4.0 * t, -3.0]
        item.PlanePositionSequence = DicomSequence([pos])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    path = write_dicom_seg(tmp_path / "seg.dcm", _labels(), [ds], annotated=[0])
    seg = pydicom.dcmread(path)
    assert seg.FrameOfReferenceUID == ds.FrameOfReferenceUID
    assert [float(f.PlanePositionSequence[0].ImagePositionPatient[1]) for f in seg.PerFrameFunctionalGroupsSequence
            if f.FrameContentSequence[0].DimensionIndexValues[0] == 1] == [4.0 * t for t in range(1, T)]
    m = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in m.PixelSpacing] == [0.7, 0.7] and float(m.SpacingBetweenSlices) == 4.0
    assert _dciodvfy(path) == []


def test_inferring_writes_a_seg_that_dcmqi_reads_as_mask_nii(tmp_path, tiny_net, echo_small):
    """The workflow's own mask_seg.dcm, read by dcmqi (3D Slicer's importer), equals its mask.nii.gz."""
    import glob

    import nibabel as nib
    import SimpleITK as sitk

    from medvos.inference.workflow import run_inference
    from medvos.io.writers import write_nifti

    cine = write_dicom_cine(tmp_path / "cine.dcm", echo_small.frames, compression="jpeg")
    ann = echo_small.labels.copy()
    ann[1:] = 0
    write_nifti(tmp_path / "ann.nii.gz", ann)
    out = tmp_path / "out"
    run_inference(str(cine), str(tmp_path / "ann.nii.gz"), out, tiny_net, image_size=32, clip_length=2,
                  outputs=("nifti", "dicom_seg"), progress=False, threshold=0.3)
    mask = np.transpose(np.asarray(nib.load(out / "mask.nii.gz").dataobj), (2, 1, 0))  # (x, y, t) -> (t, y, x)
    assert _dciodvfy(out / "mask_seg.dcm") == []
    res = subprocess.run([tool("segimage2itkimage"), "--inputDICOM", str(out / "mask_seg.dcm"), "--outputDirectory",
                          str(tmp_path), "-t", "nrrd"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:]
    ds = pydicom.dcmread(out / "mask_seg.dcm")
    volumes = {}
    for f in sorted(glob.glob(str(tmp_path / "*.nrrd"))):
        arr = sitk.GetArrayFromImage(sitk.ReadImage(f))
        if arr.any():
            volumes[int(arr.max())] = arr
    np.testing.assert_array_equal(_union_by_label(volumes, ds), mask)
    assert {str(s.SegmentAlgorithmType) for s in ds.SegmentSequence} == {"AUTOMATIC", "MANUAL"}
