"""MONAI Label results on the grid SimpleITK reads the stored cine on (issue 15, item 2): what 3D Slicer loads, so a
result lines up with its volume and a submitted correction is not corrupted."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medvos.monai_label.geometry import itk_grid, write_labels_on_itk_grid
from medvos.io.writers import write_nifti
from medvos.data.synthetic_dicom import write_dicom_cine


def _labels(t: int, h: int, w: int) -> np.ndarray:
    lab = np.zeros((t, h, w), np.uint8)
    lab[:, h // 4: h // 2, w // 3: w // 2] = 1
    lab[t // 2:, 2:5, 2:6] = 2
    return lab


@pytest.mark.parametrize("fmt", ["dicom", "nifti", "nifti-rgb", "mha", "nrrd"])
def test_result_has_the_image_grid_simpleitk_reads(tmp_path, echo_small, fmt):
    frames = echo_small.frames
    t, _, h, w = frames.shape
    if fmt == "dicom":  # pixel spacing 0.3 mm and frame time 40 ms in the file; ITK reads its own grid
        image = write_dicom_cine(tmp_path / "cine.dcm", frames, frame_time_ms=40.0, spacing=(0.3, 0.3))
    elif fmt.startswith("nifti"):
        rgb = np.repeat(frames, 3, axis=1) if fmt == "nifti-rgb" else frames  # (x, y, t, colour) on disk
        image = write_nifti(tmp_path / "cine.nii.gz", rgb, frame_time_ms=33.3)
    else:
        vol = sitk.GetImageFromArray(frames[:, 0].astype(np.uint8))
        vol.SetSpacing((0.5, 0.7, 33.3))
        vol.SetOrigin((4.0, -2.0, 0.0))
        image = tmp_path / f"cine.{fmt}"
        sitk.WriteImage(vol, str(image))
    labels = _labels(t, h, w)
    assert write_labels_on_itk_grid(labels, image, tmp_path / "result.nii.gz")
    stored, result = sitk.ReadImage(str(image)), sitk.ReadImage(str(tmp_path / "result.nii.gz"))
    n = stored.GetDimension()  # 4 for the RGB NIfTI: (x, y, t, colour)
    assert result.GetSize() == stored.GetSize()[:3]
    np.testing.assert_allclose(result.GetSpacing(), stored.GetSpacing()[:3], rtol=1e-5)
    np.testing.assert_allclose(result.GetOrigin(), stored.GetOrigin()[:3], atol=1e-4)
    np.testing.assert_allclose(np.reshape(result.GetDirection(), (3, 3)),
                               np.reshape(stored.GetDirection(), (n, n))[:3, :3], atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result), labels)  # frame t is slice t


def test_images_itk_cannot_read_keep_medvos_geometry(tmp_path, echo_small):
    (tmp_path / "frames").mkdir()
    assert itk_grid(tmp_path / "frames") is None
    assert not write_labels_on_itk_grid(_labels(2, 8, 8), tmp_path / "frames", tmp_path / "r.nii.gz")
    image = write_nifti(tmp_path / "cine.nii.gz", echo_small.frames)
    assert not write_labels_on_itk_grid(_labels(2, 8, 8), image, tmp_path / "r.nii.gz")  # another size: refused
    assert not (tmp_path / "r.nii.gz").exists()
