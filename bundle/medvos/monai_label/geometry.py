"""Results on the exact grid SimpleITK reads from the stored image (what 3D Slicer loads a cine with).

For a DICOM cine, ITK places the frames at spacing 1 and origin 0 (it reads no Sequence of Ultrasound Regions and no
Frame Time), while medvos' own NIfTI carries the physical spacing and frame time; for NRRD/MHA the frame axis
spacing differs too. A label on another grid than the volume covers a fraction of the frame in Slicer and saves
back corrupted, so the app writes every result with the image's own ITK geometry: size, spacing, origin and
direction as SimpleITK reads them from the file the datastore holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvos.io.atomic import atomic_path


def itk_grid(image: str | Path) -> dict | None:
    """``{"size", "spacing", "origin", "direction"}`` of an image file as SimpleITK reads it, or None (a folder, or a
    format ITK does not read, such as MP4)."""
    import SimpleITK as sitk

    path = Path(image)
    if not path.is_file():
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return {"size": reader.GetSize(), "spacing": reader.GetSpacing(), "origin": reader.GetOrigin(),
            "direction": reader.GetDirection()}


def write_labels_on_itk_grid(labels: np.ndarray, image: str | Path, out: str | Path) -> bool:
    """Write ``labels (T,H,W)`` uint8 to ``out`` (NIfTI) on the grid SimpleITK reads ``image`` on; False (nothing
    written) when ITK cannot read the image or its grid does not hold ``(W, H, T)`` voxels."""
    import SimpleITK as sitk

    grid = itk_grid(image)
    labels = np.asarray(labels, np.uint8)
    t, h, w = labels.shape
    if grid is None or len(grid["size"]) < 3 or tuple(grid["size"][:2]) != (w, h):
        return False
    size, n = grid["size"], len(grid["size"])
    # the label's dimensions: (x, y, t), or (x, y, 1, t); a trailing colour axis (an RGB NIfTI read as 4-D) dropped
    k = next((k for k in range(3, n + 1) if int(np.prod(size[:k])) == labels.size), None)
    if k is None:
        return False
    img = sitk.GetImageFromArray(labels.reshape(tuple(reversed(size[:k]))))
    img.SetSpacing(grid["spacing"][:k])
    img.SetOrigin(grid["origin"][:k])
    direction = np.asarray(grid["direction"], float).reshape(n, n)[:k, :k]
    img.SetDirection(tuple(direction.ravel()))
    with atomic_path(out) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
    return True
