"""Bad and hostile input: one clear error naming the file and the problem, never another exception, a hang or a
crash (random bytes and truncations by hypothesis, NaN/inf pixels, huge declared sizes, mismatched masks); writers and
workflows leave nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medvos.data.synthetic_dicom import write_dicom_cine
from medvos.io import CineReadError, MaskMismatchError, atomic_path, read_cine, read_mask
from medvos.io.writers import write_nifti, write_png_frames


def test_error_message_names_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(CineReadError, match="notes.txt: unsupported file type"):
        read_cine(p)


def test_dicom_truncated_pixel_data_names_file(tmp_path, echo_small):
    p = write_dicom_cine(tmp_path / "t.dcm", echo_small.frames)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 48 * 48 * 2])  # two frames short
    with pytest.raises(CineReadError, match=r"t\.dcm: pixel data holds .* need"):
        read_cine(p, lazy=True)
    with pytest.raises(CineReadError, match=r"t\.dcm"):
        read_cine(p)


def test_truncated_dicom(tmp_path, echo_small):
    p = write_dicom_cine(tmp_path / "t.dcm", echo_small.frames)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CineReadError, match="t.dcm: .*(DICOM|pixel data)"):
        read_cine(p)


def test_corrupt_dicom_random_bytes(tmp_path):
    p = tmp_path / "c.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(500))
    with pytest.raises(CineReadError, match="c.dcm"):
        read_cine(p)


def test_non_image_and_zero_byte(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png at all")
    with pytest.raises(CineReadError, match="x.png: not a readable image"):
        read_cine(tmp_path / "x.png")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(CineReadError, match=r"empty.nii.gz: empty file \(0 bytes\)"):
        read_cine(tmp_path / "empty.nii.gz")
    with pytest.raises(CineReadError, match="missing.dcm: file or folder not found"):
        read_cine(tmp_path / "missing.dcm")


def test_mask_frame_count_and_size_mismatch(tmp_path, echo_small):
    write_nifti(tmp_path / "v.nii.gz", echo_small.frames)
    video = read_cine(tmp_path / "v.nii.gz")
    write_nifti(tmp_path / "short.nii.gz", echo_small.labels[:4])
    with pytest.raises(MaskMismatchError, match="short.nii.gz: mask has 4 frame"):
        read_mask(tmp_path / "short.nii.gz", like=video)
    write_nifti(tmp_path / "small.nii.gz", echo_small.labels[:, :40])
    with pytest.raises(MaskMismatchError, match="small.nii.gz: mask frame size"):
        read_mask(tmp_path / "small.nii.gz", like=video)


def test_single_frame_video(tmp_path, echo_small):
    write_png_frames(tmp_path / "one", echo_small.frames[:1])
    with pytest.raises(CineReadError, match="has 1 frame.*at least 2"):
        read_cine(tmp_path / "one", min_frames=2)


def test_empty_support_mask():
    from medvos.inference.propagator import FewShotPropagator
    from medvos.networks.image_model import FewShotSegNet

    prop = FewShotPropagator(FewShotSegNet.from_sizes(backbone_weights=None).eval(), image_size=32)
    frames, labels = torch.rand(3, 3, 32, 32), torch.zeros(3, 32, 32, dtype=torch.uint8)
    with pytest.raises(MaskMismatchError, match="carry no annotated object"):
        prop.propagate(frames, labels, [0])


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_truncated_nifti_streamed_names_file_and_frames(tmp_path):
    import nibabel as nib

    from medvos.io import CineReadError, read_cine

    vol = (np.random.default_rng(0).random((32, 32, 40)) * 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii"))
    data = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 2])
    cine = read_cine(tmp_path / "cut.nii", lazy=True)  # the header and the first frame are intact
    with pytest.raises(CineReadError, match=r"cut\.nii: frames 30-37 unreadable"):
        cine.frames[30:38]


def test_workflow_error_ends_with_the_real_cause(tmp_path, echo_small):
    """Issue 14: the bundle command's last line names the file and the problem, not a ConfigExpression wrapper."""
    import subprocess
    import sys

    from conftest import REPO

    write_nifti(tmp_path / "cine.nii.gz", echo_small.frames)
    write_nifti(tmp_path / "short.nii.gz", echo_small.labels[:3])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file",
           repr([str(REPO / "bundle/configs/train.yaml"), str(REPO / "bundle/configs/inference.yaml")]),
           "--video", str(tmp_path / "cine.nii.gz"), "--annotation", str(tmp_path / "short.nii.gz"),
           "--inference_dir", str(tmp_path / "out"), "--output_dir", str(tmp_path / "eval")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "Failed to evaluate" in proc.stderr
    assert last.startswith("medvos: error: MaskMismatchError: ") and "short.nii.gz" in last and "frame" in last, last


def test_a_reader_librarys_own_error_names_the_file():
    """Issue 14: pydicom's badVR.dcm raised a bare ValueError; every reader error is a CineReadError naming it."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("badVR.dcm")
    try:  # whether a pydicom version reads it or not, nothing but a CineReadError naming the file may escape
        read_cine(path)
    except CineReadError as exc:
        assert exc.path.endswith("badVR.dcm") and "ValueError" in exc.problem


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
