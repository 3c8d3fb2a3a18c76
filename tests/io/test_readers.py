"""Cine readers: every format written and read back, masks, MONAI registration, real files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import rgb_frames, shared
from medvos.io import CineReadError, read_cine, read_mask
from medvos.io.writers import write_nifti, write_png_frames, write_video
from medvos.data.synthetic_dicom import write_dicom_cine, write_dicom_series


def _objects(mask) -> list[int]:
    """The object values a mask holds (0 is background)."""
    return [int(v) for v in np.unique(mask.labels) if v != 0]


def test_dicom_multiframe_grey_and_rgb(tmp_path, echo_small):
    write_dicom_cine(tmp_path / "g.dcm", echo_small.frames, frame_time_ms=20.0, spacing=(0.4, 0.5))
    c = read_cine(tmp_path / "g.dcm")
    assert c.frames.shape == (6, 1, 48, 48) and c.frames.dtype == np.float32
    np.testing.assert_array_equal(c.frames, echo_small.frames)
    assert c.fps == pytest.approx(50.0) and c.spacing == (0.4, 0.5) and c.format == "dicom"
    rgb = rgb_frames()
    write_dicom_cine(tmp_path / "c.dcm", rgb)
    np.testing.assert_array_equal(read_cine(tmp_path / "c.dcm").frames, rgb)


def test_dicom_series_ordered_by_instance_number(tmp_path, echo_small):
    write_dicom_series(tmp_path / "series", echo_small.frames, frame_time_ms=25.0, shuffle_names=True)
    c = read_cine(tmp_path / "series")
    assert c.format == "dicom-series"
    np.testing.assert_array_equal(c.frames, echo_small.frames)
    assert c.frame_time_ms == pytest.approx(25.0, abs=0.01)


def test_two_dicom_series_in_one_folder_are_refused_by_name(tmp_path, echo_small):
    """Issue 14: frames of two series were interleaved by instance number; now the reader names both."""
    import shutil

    a = write_dicom_series(tmp_path / "a", echo_small.frames[:4])
    b = write_dicom_series(tmp_path / "b", echo_small.frames[4:8])
    (tmp_path / "mixed").mkdir()
    for k, f in enumerate(a + b):
        shutil.copy(f, tmp_path / "mixed" / f"{k:03d}.dcm")
    with pytest.raises(CineReadError, match=r"mixed: holds 2 DICOM series .* one series per folder"):
        read_cine(tmp_path / "mixed")
    assert read_cine(tmp_path / "a").num_frames == 4


def test_nifti_grey_rgb_and_singleton_z(tmp_path, echo_small, endo_small):
    import nibabel as nib

    write_nifti(tmp_path / "g.nii.gz", echo_small.frames, frame_time_ms=33.0)
    c = read_cine(tmp_path / "g.nii.gz")
    np.testing.assert_array_equal(c.frames, echo_small.frames)
    assert c.frame_time_ms == pytest.approx(33.0)
    write_nifti(tmp_path / "c.nii.gz", endo_small.frames)
    np.testing.assert_array_equal(read_cine(tmp_path / "c.nii.gz").frames, endo_small.frames)
    # (X, Y, 1, T) with time in the 4th dimension (seconds)
    vol = np.transpose(echo_small.frames[:, 0], (2, 1, 0))[:, :, None, :]
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header.set_zooms((0.3, 0.3, 1.0, 0.04))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(tmp_path / "z.nii"))
    c = read_cine(tmp_path / "z.nii")
    np.testing.assert_array_equal(c.frames, echo_small.frames)
    assert c.frame_time_ms == pytest.approx(40.0)


def test_itk_metaimage(tmp_path, echo_small):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(echo_small.frames[:, 0]))
    img.SetSpacing([0.5, 0.25, 1.0])
    sitk.WriteImage(img, str(tmp_path / "seq.mhd"))
    c = read_cine(tmp_path / "seq.mhd")
    np.testing.assert_array_equal(c.frames, echo_small.frames)
    assert c.spacing == (0.25, 0.5) and c.format == "itk"


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".gif"])
def test_video_files(tmp_path, endo_small, suffix):
    write_video(tmp_path / f"v{suffix}", endo_small.frames, fps=12)
    c = read_cine(tmp_path / f"v{suffix}")
    assert c.frames.shape == endo_small.frames.shape
    assert np.abs(c.frames - endo_small.frames).mean() < 30  # lossy codecs
    if suffix != ".gif":
        assert c.fps == pytest.approx(12, abs=0.5)


def test_frame_folder_natural_order_and_list(tmp_path):
    frames = rgb_frames(t=12)
    write_png_frames(tmp_path / "f", frames, names=[str(i) for i in range(1, 13)])  # 1..12: lexical order differs
    c = read_cine(tmp_path / "f")
    np.testing.assert_array_equal(c.frames, frames)
    assert c.meta["frame_names"][:3] == ["1", "2", "3"]
    files = sorted((tmp_path / "f").iterdir(), key=lambda p: int(p.stem))
    np.testing.assert_array_equal(read_cine(files[:4]).frames, frames[:4])


def test_masks_binary_multilabel_and_partial(tmp_path, echo_small):
    write_png_frames(tmp_path / "frames", echo_small.frames)
    video = read_cine(tmp_path / "frames")
    write_png_frames(tmp_path / "m255", echo_small.labels * 255)
    m = read_mask(tmp_path / "m255", like=video)
    np.testing.assert_array_equal(m.labels, echo_small.labels)
    assert m.labeled.all()
    multi = echo_small.labels.copy()
    multi[:, :5] = 2
    write_nifti(tmp_path / "multi.nii.gz", multi)
    assert _objects(read_mask(tmp_path / "multi.nii.gz", like=video)) == [1, 2]
    write_png_frames(tmp_path / "partial", echo_small.labels[[0, 3]] * 255, names=["0000", "0003"])
    p = read_mask(tmp_path / "partial", like=video)
    assert p.labeled_frames == [0, 3]
    np.testing.assert_array_equal(p.labels[3], echo_small.labels[3])
    assert p.labels[1].sum() == 0


def test_mask_values_two_values_are_binary_more_are_labels_lossy_is_thresholded(tmp_path, echo_small):
    """Issue 14: 0/85/170/255 and labels 1 and 40 keep every label; 0/100 is binary, not empty; JPEG masks (noisy
    values) are thresholded."""
    from PIL import Image

    from medvos.io.readers import labels_from_pixels

    write_png_frames(tmp_path / "frames", echo_small.frames)
    video = read_cine(tmp_path / "frames")
    obj = echo_small.labels.astype(np.uint8)
    t, h, w = obj.shape
    quarters = np.zeros_like(obj)
    quarters[:, : h // 2, : w // 2], quarters[:, : h // 2, w // 2 :], quarters[:, h // 2 :, : w // 2] = 85, 170, 255
    write_png_frames(tmp_path / "quarters", quarters)
    assert _objects(read_mask(tmp_path / "quarters", like=video)) == [85, 170, 255]
    write_png_frames(tmp_path / "low", obj * 100)
    np.testing.assert_array_equal(read_mask(tmp_path / "low", like=video).labels, obj)
    two = obj.copy()
    two[:, :4, :4] = 40
    write_nifti(tmp_path / "l40.nii.gz", two)
    assert _objects(read_mask(tmp_path / "l40.nii.gz", like=video)) == [1, 40]
    (tmp_path / "jpeg").mkdir()
    for k, m in enumerate(obj * 255):
        Image.fromarray(m).save(tmp_path / "jpeg" / f"{k:04d}.jpg", quality=70)
    noisy = read_mask(tmp_path / "jpeg", like=video)
    assert _objects(noisy) == [1] and (noisy.labels != obj).mean() < 0.01
    wide = np.zeros((1, 1, 2, 3), np.float32)
    wide[0, 0, 0] = [0, 1000, 2000]  # evenly spaced 16-bit grey levels: labels, numbered
    assert labels_from_pixels(wide).tolist() == [[[0, 1, 2], [0, 0, 0]]]
    faint = np.zeros((1, 1, 2, 3), np.float32)
    faint[0, 0, 0] = [11, 255, 0]  # a binary export with a faint grey area (CVC-ClinicDB): thresholded
    assert labels_from_pixels(faint).tolist() == [[[0, 1, 0], [0, 0, 0]]]
    one = np.zeros((1, 1, 2, 3), np.float32)
    one[0, 0, 0, 1] = 3  # a label map slice with one structure present keeps its label value
    assert labels_from_pixels(one).tolist() == [[[0, 3, 0], [0, 0, 0]]]


def test_monai_loadimage_reads_cines(tmp_path, echo_small):
    from monai.transforms import LoadImage
    from monai.transforms.io import array as monai_io

    from medvos.io.monai_reader import CineReader

    write_dicom_cine(tmp_path / "g.dcm", echo_small.frames)
    img = LoadImage(reader=CineReader(), image_only=True)(str(tmp_path / "g.dcm"))
    assert tuple(img.shape) == (1, 48, 48, 6)
    assert "cinereader" not in monai_io.SUPPORTED_READERS  # MONAI's own table is left alone


@pytest.mark.realdata
def test_real_echo_dicom_jpeg_colour():
    path = shared("us_cine_unlabeled") / "color3d_jpeg_baseline.dcm"
    c = read_cine(path)
    assert c.frames.shape == (120, 3, 480, 640)
    assert c.fps == pytest.approx(30.0, abs=0.01)
    f = c.frames[::20]
    # grey anatomy: R, G and B agree (a missing YCbCr->RGB conversion gives G ~ 128 everywhere: green)
    assert np.abs(f[:, 0] - f[:, 1]).mean() < 3 and np.abs(f[:, 1] - f[:, 2]).mean() < 3
    assert 2 < f.mean() < 100


@pytest.mark.realdata
def test_real_cvc_frames_and_masks():
    root = shared("cvc_clinicdb")
    files = [root / "images" / f"{i}.png" for i in range(1, 26)]
    c = read_cine(files)
    m = read_mask([root / "masks" / f"{i}.png" for i in range(1, 26)], like=c)
    assert c.frames.shape == (25, 3, 288, 384) and m.labels.shape == (25, 288, 384)
    assert _objects(m) == [1] and (m.labels.reshape(25, -1).sum(1) > 0).all()


def _write_kind(kind: str, root, frames):
    """Write ``frames`` in the reader format ``kind``; return the path to read."""
    import nibabel as nib
    import SimpleITK as sitk

    if kind == "avi":
        return write_video(root / "v.avi", frames, fps=12)
    if kind == "frames":
        write_png_frames(root / "frames", frames)
        return root / "frames"
    if kind == "nifti":
        return write_nifti(root / "v.nii", frames[:, :1], frame_time_ms=40.0)
    if kind == "nifti_rgb":
        return write_nifti(root / "v.nii", frames, frame_time_ms=40.0)
    if kind == "nifti_singleton_z":  # (x, y, 1, t)
        vol = np.transpose(frames[:, 0], (2, 1, 0))[:, :, None]
        nib.save(nib.Nifti1Image(vol.astype(np.uint8), np.eye(4)), str(root / "v.nii"))
        return root / "v.nii"
    if kind in ("dicom", "dicom_grey"):
        return write_dicom_cine(root / "v.dcm", frames if kind == "dicom" else frames[:, :1])
    if kind == "dicom_jpeg":
        return write_dicom_cine(root / "v.dcm", frames, compression="jpeg")
    if kind == "dicom_series":
        write_dicom_series(root / "series", frames, shuffle_names=True)
        return root / "series"
    if kind in ("mhd", "mha_rgb"):
        arr = frames[:, 0] if kind == "mhd" else np.moveaxis(frames, 1, -1)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.astype(np.uint8)), isVector=kind == "mha_rgb")
        sitk.WriteImage(img, str(root / ("v.mhd" if kind == "mhd" else "v.mha")))
        return root / ("v.mhd" if kind == "mhd" else "v.mha")
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["avi", "frames", "nifti", "nifti_rgb", "nifti_singleton_z", "dicom", "dicom_grey",
                                  "dicom_jpeg", "dicom_series", "mhd", "mha_rgb"])
def test_lazy_reading_equals_in_memory(tmp_path, endo_small, kind):
    from medvos.io.frames import LazyFrames

    src = _write_kind(kind, tmp_path, endo_small.frames)
    full, lazy = read_cine(src), read_cine(src, lazy=True)
    assert isinstance(lazy.frames, LazyFrames) and lazy.frames.shape == full.frames.shape
    assert np.array_equal(lazy.frames[2:5], full.frames[2:5]) and np.array_equal(lazy.frames[1], full.frames[1])
    assert np.array_equal(lazy.frames[0:2], full.frames[0:2])  # going back reopens the video
    assert np.array_equal(np.asarray(lazy.frames), full.frames)
    assert lazy.fps == full.fps and lazy.meta.get("frame_names") == full.meta.get("frame_names")
    assert lazy.spacing == full.spacing and np.allclose(lazy.affine(), full.affine())


def test_dicom_jpeg_colour_round_trip(tmp_path, endo_small):
    """JPEG Baseline YBR_FULL_422 (what ultrasound carts store) decodes back to RGB within JPEG's loss."""
    write_dicom_cine(tmp_path / "j.dcm", endo_small.frames, compression="jpeg")
    c = read_cine(tmp_path / "j.dcm")
    assert c.frames.shape == endo_small.frames.shape and c.format == "dicom"
    assert np.abs(c.frames - endo_small.frames).mean() < 6  # a missing YCbCr->RGB conversion is off by ~50


def test_read_annotations_keeps_only_annotated_frames(tmp_path, echo_small):
    from medvos.io import MaskMismatchError, read_annotations

    video = read_cine(write_nifti(tmp_path / "v.nii.gz", echo_small.frames), lazy=True)
    ann = np.zeros_like(echo_small.labels)
    ann[0], ann[4] = echo_small.labels[0], echo_small.labels[4]
    write_nifti(tmp_path / "a.nii.gz", ann * 255)  # 0/255 export: binarised like read_mask
    got = read_annotations(tmp_path / "a.nii.gz", video, chunk=2)
    assert sorted(got) == [0, 4] and all(got[t].dtype == np.uint8 for t in got)
    np.testing.assert_array_equal(got[4], echo_small.labels[4])
    np.testing.assert_array_equal(read_annotations(tmp_path / "a.nii.gz", video, frames=[4, 2])[2], 0)
    with pytest.raises(MaskMismatchError, match=r"a.nii.gz: annotated frame\(s\) \[9\] are not in the mask"):
        read_annotations(tmp_path / "a.nii.gz", video, frames=[9])
    # a partial mask folder: its frames are matched by name, empty ones included (the caller refuses those)
    write_png_frames(tmp_path / "f", echo_small.frames)
    frames = read_cine(tmp_path / "f", lazy=True)
    write_png_frames(tmp_path / "m", ann[[0, 3]], names=["0000", "0003"])
    part = read_annotations(tmp_path / "m", frames)
    assert sorted(part) == [0, 3] and not part[3].any()
    np.testing.assert_array_equal(part[0], echo_small.labels[0])


@pytest.mark.parametrize("first_in_range", [True, False])
def test_streamed_intensity_range_equals_in_memory(first_in_range):
    """intensity_range over LazyFrames (each sampled frame read once) equals it over the whole array, including a
    16-bit cine whose first frames still lie in the 8-bit range; an 8-bit cine gives None either way."""
    from medvos.data.transforms import intensity_range
    from medvos.io.frames import LazyFrames

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 4000, (100, 1, 16, 16)).astype(np.float32)
    if first_in_range:
        wide[:30] = rng.integers(0, 200, (30, 1, 16, 16))
    narrow = rng.integers(0, 256, (100, 1, 16, 16)).astype(np.float32)
    reads = []

    def lazy(arr):
        def read(a, b):
            reads.append((a, b))
            return arr[a:b]
        return LazyFrames(arr.shape, read)

    assert intensity_range(lazy(wide)) == intensity_range(wide) is not None
    reads.clear()
    assert intensity_range(lazy(narrow)) is None is intensity_range(narrow)
    assert len(reads) == 64  # 64 sampled frames, each read once


def test_lazy_dicom_reads_leave_the_header_alone(tmp_path):
    """Reading a window of a multi-frame DICOM lazily must not change the header's NumberOfFrames (a DICOM SEG of the
    cine references it: 'one source image for 12 label frames' before)."""
    frames = (np.arange(12 * 16 * 16) % 251).astype(np.uint8).reshape(12, 1, 16, 16)
    path = write_dicom_cine(tmp_path / "c.dcm", frames)
    cine = read_cine(path, lazy=True)
    np.testing.assert_array_equal(cine.frames[3:5][:, 0], frames[3:5, 0])
    assert int(cine.meta["dicom"].NumberOfFrames) == 12
