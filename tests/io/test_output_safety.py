"""Output safety (issue 14): a failed close never leaves a file under the final name; modes follow the umask."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from medvos.io.writers import NiftiWriter, VideoWriter, write_png


def _no_outputs(folder, name):
    return not (folder / name).exists() and not [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]


def test_nifti_not_renamed_when_the_last_flush_fails(tmp_path, monkeypatch):
    def full_disk(self):  # noqa: ANN001, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gzip.GzipFile, "close", full_disk)
    with pytest.raises(OSError, match="No space"), NiftiWriter(tmp_path / "mask.nii.gz", 2, (4, 5)) as w:
        w.append(np.zeros((2, 4, 5), np.uint8))
    assert _no_outputs(tmp_path, "mask.nii.gz")


def test_nifti_body_error_wins_and_nothing_is_renamed(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), NiftiWriter(tmp_path / "mask.nii.gz", 2, (4, 5)) as w:
        w.append(np.zeros((1, 4, 5), np.uint8))
        raise RuntimeError("boom")
    assert _no_outputs(tmp_path, "mask.nii.gz")


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_video_not_renamed_when_closing_fails(tmp_path, monkeypatch, suffix):
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    if suffix == ".gif":
        from PIL import Image

        monkeypatch.setattr(Image.Image, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(OSError), VideoWriter(tmp_path / f"overlay{suffix}", fps=5) as vw:
        vw.append(frames)
        if suffix == ".mp4":  # OpenCV reports no write errors: a writer that lost frames is caught by the count
            vw.frames += 2
    assert _no_outputs(tmp_path, f"overlay{suffix}")


def test_complete_video_is_renamed(tmp_path):
    with VideoWriter(tmp_path / "overlay.mp4", fps=5) as vw:
        vw.append(np.zeros((4, 16, 16, 3), np.uint8))
    assert (tmp_path / "overlay.mp4").stat().st_size > 0 and _no_outputs(tmp_path, "x")


def test_output_modes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
        with NiftiWriter(tmp_path / "m.nii.gz", 1, (4, 4)) as w:
            w.append(np.zeros((1, 4, 4), np.uint8))
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "m.nii.gz").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("shape", [(20, 16, 1, 5), (20, 16, 5)])
def test_nifti_mask_keeps_the_inputs_shape_convention_frame_time_and_qform(tmp_path, shape):
    """Issue 14: an (X, Y, 1, T) input gives an (X, Y, 1, T) mask; pixdim (frame time), units, qform and sform
    (matrices and codes) are the input's."""
    import nibabel as nib

    from medvos.io import read_cine
    from medvos.io.writers import write_nifti

    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = [10, -5, 3]
    img = nib.Nifti1Image(np.random.default_rng(0).integers(0, 100, shape).astype(np.int16), affine)
    img.header.set_zooms((0.5, 0.7, 2.0, 33.3)[: len(shape)])
    img.header.set_xyzt_units("mm", "msec")
    img.set_qform(affine, 1)
    img.set_sform(affine, 2)
    nib.save(img, tmp_path / "cine.nii.gz")
    labels = np.zeros((5, 16, 20), np.uint8)
    labels[:, 2:5, 3:9] = 1
    write_nifti(tmp_path / "mask.nii.gz", labels, like=read_cine(tmp_path / "cine.nii.gz"))
    out = nib.load(tmp_path / "mask.nii.gz")
    assert out.shape == shape and out.get_data_dtype() == np.uint8
    assert out.header.get_zooms() == img.header.get_zooms() and out.header.get_xyzt_units() == ("mm", "msec")
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 2)
    np.testing.assert_allclose(out.get_qform(), affine)
    np.testing.assert_allclose(out.get_sform(), affine)
    np.testing.assert_array_equal(np.asarray(out.dataobj).reshape(20, 16, 5).transpose(2, 1, 0), labels)


def test_outputs_never_overwrite_inputs(tmp_path):
    from medvos.io.errors import OutputConflictError
    from medvos.io.output_guard import check_outputs, input_files

    case = tmp_path / "case"
    (case / "frames").mkdir(parents=True)
    (case / "masks").mkdir()
    for k in range(3):
        (case / "frames" / f"{k}.png").write_bytes(b"x")
        (case / "masks" / f"{k}.png").write_bytes(b"x")
    (tmp_path / "mask.nii.gz").write_bytes(b"x")
    inputs = input_files(case / "frames", case / "masks", None)
    with pytest.raises(OutputConflictError, match=r"masks/0.png: is an input .* inside the output folder"):
        check_outputs([case / "mask.nii.gz"], [case / "masks"], inputs)  # --inference_dir = the case folder
    annotation = input_files(tmp_path / "mask.nii.gz")
    with pytest.raises(OutputConflictError, match=r"mask.nii.gz: is an input"):
        check_outputs([tmp_path / "mask.nii.gz"], [], annotation)
    check_outputs([tmp_path / "out" / "mask.nii.gz"], [tmp_path / "out" / "masks"], inputs | annotation)
    check_outputs([tmp_path / "mask.nii.gz"], [case / "masks"], inputs | annotation, overwrite=True)


def test_inferring_refuses_to_write_over_its_ground_truth_before_writing_anything(tmp_path, echo_small):
    """Issue 14: --inference_dir equal to a generic-layout case folder would replace case/masks."""
    import torch

    from medvos.inference.workflow import run_inference
    from medvos.io.errors import OutputConflictError
    from medvos.io.writers import write_png_frames
    from medvos.networks.image_model import FewShotSegNet

    case = tmp_path / "case"
    write_png_frames(case / "frames", echo_small.frames)
    write_png_frames(case / "masks", echo_small.labels * 255)
    before = {p.name: p.read_bytes() for p in (case / "masks").iterdir()}
    net = FewShotSegNet.from_sizes(backbone_weights=None).eval()
    torch.manual_seed(0)
    with pytest.raises(OutputConflictError, match="inside the output folder"):
        run_inference(str(case / "frames"), str(case / "masks"), case, net, image_size=32, clip_length=4,
                      annotated=[0], progress=False)
    assert {p.name: p.read_bytes() for p in (case / "masks").iterdir()} == before
    assert sorted(p.name for p in case.iterdir()) == ["frames", "masks"]  # nothing written
