"""Hostile inputs to the readers (hypothesis): random bytes, truncation, NaN/inf, huge declared sizes ->
a clear CineReadError, never another exception, a hang or a crash."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medvos.io import CineReadError, read_cine
from medvos.io.writers import write_nifti, write_png_frames
from medvos.data.synthetic_dicom import write_dicom_cine

SUFFIXES = [".dcm", ".nii", ".nii.gz", ".mhd", ".png", ".jpg", ".mp4", ".avi", "", ".bin"]


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=2048), suffix=st.sampled_from(SUFFIXES), dicm=st.booleans())
def test_random_bytes(tmp_path, data, suffix, dicm):
    p = tmp_path / f"x{suffix}"
    p.write_bytes((b"\0" * 128 + b"DICM" + data) if dicm else data)
    try:
        cine = read_cine(p)
    except CineReadError as err:
        assert str(p) in str(err)
    else:  # a few random byte strings are valid raw images; then the result must be sane
        assert cine.frames.ndim == 4 and np.isfinite(cine.frames).all()


@settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(min_value=0.05, max_value=0.95), fmt=st.sampled_from(["dcm", "nii", "png"]))
def test_truncated_files(tmp_path, echo_small, cut, fmt):
    if fmt == "dcm":
        p = write_dicom_cine(tmp_path / "t.dcm", echo_small.frames)
    elif fmt == "nii":
        p = write_nifti(tmp_path / "t.nii", echo_small.frames)
    else:
        p = write_png_frames(tmp_path / "f", echo_small.frames[:1])[0]
    data = p.read_bytes()
    p.write_bytes(data[: max(1, int(len(data) * cut))])
    with pytest.raises(CineReadError, match=p.name):
        read_cine(p)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_inf_pixels(tmp_path, value):
    import nibabel as nib

    vol = np.zeros((8, 8, 3), np.float32)
    vol[2, 3, 1] = value
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "n.nii"))
    with pytest.raises(CineReadError, match="NaN or infinite"):
        read_cine(tmp_path / "n.nii")


def test_huge_declared_sizes(tmp_path, echo_small):
    import nibabel as nib
    import pydicom

    p = tmp_path / "huge.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), str(p))
    raw = bytearray(p.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])))
    hdr.set_data_shape((30000, 30000, 30000))  # NIfTI-1 dims are int16
    p.write_bytes(hdr.binaryblock + bytes(raw[348:]))
    with pytest.raises(CineReadError, match="huge.nii"):
        read_cine(p)
    d = write_dicom_cine(tmp_path / "huge.dcm", echo_small.frames)
    ds = pydicom.dcmread(d)
    ds.NumberOfFrames, ds.Rows, ds.Columns = 100000, 60000, 60000
    ds.save_as(str(d))
    with pytest.raises(CineReadError, match="huge.dcm"):
        read_cine(d)
