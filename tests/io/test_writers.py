"""Writers: the streamed NIfTI writer equals nibabel's, and refuses wrong frame counts leaving nothing."""

from __future__ import annotations

import numpy as np
import pytest

from medvos.io import read_cine


@pytest.mark.parametrize("name", ["m.nii", "m.nii.gz"])
def test_streamed_nifti_writer_equals_nibabel_save(tmp_path, echo_small, name):
    """NiftiWriter (header, then windows) writes the very bytes nib.save writes for the whole volume."""
    import gzip

    import nibabel as nib

    from medvos.io.writers import NiftiWriter, _nifti_image

    lab = echo_small.labels
    with NiftiWriter(tmp_path / name, len(lab), lab.shape[1:], frame_time_ms=25.0) as w:
        w.append(lab[:4])
        w.append(lab[4:])
    ref = tmp_path / ("ref_" + name)
    nib.save(_nifti_image(np.ascontiguousarray(np.transpose(lab, (2, 1, 0))), None, 25.0), str(ref))
    unpack = (lambda p: gzip.decompress(p.read_bytes())) if name.endswith(".gz") else (lambda p: p.read_bytes())
    assert unpack(tmp_path / name) == unpack(ref)
    c = read_cine(tmp_path / name)
    np.testing.assert_array_equal(c.frames[:, 0], lab)
    assert c.frame_time_ms == pytest.approx(25.0)


def test_streamed_nifti_writer_refuses_wrong_counts_and_leaves_nothing(tmp_path, echo_small):
    from medvos.io.writers import NiftiWriter

    lab = echo_small.labels
    with pytest.raises(ValueError, match=r"short.nii.gz: 4 of the declared 6 frames"):
        with NiftiWriter(tmp_path / "short.nii.gz", 6, lab.shape[1:]) as w:
            w.append(lab[:4])
    with pytest.raises(ValueError, match="more than the declared 6"):
        with NiftiWriter(tmp_path / "long.nii.gz", 6, lab.shape[1:]) as w:
            w.append(lab)
            w.append(lab[:1])
    with pytest.raises(ValueError, match=r"expected \(n, 48, 48\)"):
        with NiftiWriter(tmp_path / "shape.nii", 6, lab.shape[1:]) as w:
            w.append(lab[:, :40])
    assert list(tmp_path.iterdir()) == []
