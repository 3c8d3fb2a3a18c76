"""Cine readers: every format written and read back, masks, MONAI registration, real files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import rgb_frames, shared
from medvos.io import CineReadError, read_cine, read_mask
from medvos.io.writers import write_dicom_cine, write_dicom_series, write_nifti, write_png_frames, write_video


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
    import itk

    img = itk.image_from_array(np.ascontiguousarray(echo_small.frames[:, 0]))
    img.SetSpacing([0.5, 0.25, 1.0])
    itk.imwrite(img, str(tmp_path / "seq.mhd"))
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
    assert read_mask(tmp_path / "multi.nii.gz", like=video).label_values == [1, 2]
    write_png_frames(tmp_path / "partial", echo_small.labels[[0, 3]] * 255, names=["0000", "0003"])
    p = read_mask(tmp_path / "partial", like=video)
    assert p.labeled_frames == [0, 3]
    np.testing.assert_array_equal(p.labels[3], echo_small.labels[3])
    assert p.labels[1].sum() == 0


def test_monai_loadimage_reads_cines(tmp_path, echo_small):
    from monai.transforms import LoadImage

    import medvos.io.monai_reader  # noqa: F401 - registers "CineReader"

    write_dicom_cine(tmp_path / "g.dcm", echo_small.frames)
    img = LoadImage(reader="CineReader", image_only=True)(str(tmp_path / "g.dcm"))
    assert tuple(img.shape) == (1, 48, 48, 6)


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
    assert m.label_values == [1] and (m.labels.reshape(25, -1).sum(1) > 0).all()


def test_error_message_names_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(CineReadError, match="notes.txt: unsupported file type"):
        read_cine(p)


@pytest.mark.parametrize("kind", ["avi", "frames", "nifti", "nifti_rgb", "nifti_singleton_z"])
def test_lazy_reading_equals_in_memory(tmp_path, endo_small, kind):
    from medvos.io.readers import LazyFrames

    import nibabel as nib

    src = tmp_path / {"avi": "v.avi", "frames": "frames"}.get(kind, "v.nii")
    if kind == "avi":
        write_video(src, endo_small.frames, fps=12)
    elif kind == "frames":
        write_png_frames(src, endo_small.frames)
    elif kind == "nifti":
        write_nifti(src, endo_small.frames[:, :1], frame_time_ms=40.0)
    elif kind == "nifti_rgb":
        write_nifti(src, endo_small.frames, frame_time_ms=40.0)
    else:  # (x, y, 1, t)
        vol = np.transpose(endo_small.frames[:, 0], (2, 1, 0))[:, :, None]
        nib.save(nib.Nifti1Image(vol.astype(np.uint8), np.eye(4)), str(src))
    full, lazy = read_cine(src), read_cine(src, lazy=True)
    assert isinstance(lazy.frames, LazyFrames) and lazy.frames.shape == full.frames.shape
    assert np.array_equal(lazy.frames[2:5], full.frames[2:5]) and np.array_equal(lazy.frames[1], full.frames[1])
    assert np.array_equal(lazy.frames[0:2], full.frames[0:2])  # going back reopens the video
    assert np.array_equal(np.asarray(lazy.frames), full.frames)
    assert lazy.fps == full.fps and lazy.meta.get("frame_names") == full.meta.get("frame_names")
