"""A synthetic datastore to try the app (and to test it): cines as 2D+t NIfTI, ground truth kept apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvos.data.synthetic import FAMILIES, synthetic_cine
from medvos.io.writers import write_nifti


def make_demo_studies(root: str | Path, cines: int = 2, size: int = 128, num_frames: int = 20, seed: int = 7
                      ) -> dict[str, dict[str, Path]]:
    """Write ``root/studies/<id>.nii.gz`` (x, y, t), ``root/truth/<id>.nii.gz`` (every frame) and
    ``root/first_frame/<id>.nii.gz`` (only frame 0 labelled, as an annotator would submit).

    Returns ``{id: {"image", "truth", "first_frame"}}``.
    """
    root = Path(root)
    out = {}
    for k in range(cines):
        family = FAMILIES[k % len(FAMILIES)]
        c = synthetic_cine(family, seed * 7919 + k, size, num_frames)
        cid = f"{family}_cine{k}"
        first = np.zeros_like(c.labels)
        first[0] = c.labels[0]
        paths = {"image": root / "studies" / f"{cid}.nii.gz", "truth": root / "truth" / f"{cid}.nii.gz",
                 "first_frame": root / "first_frame" / f"{cid}.nii.gz"}
        write_nifti(paths["image"], c.frames, frame_time_ms=c.frame_time_ms)
        write_nifti(paths["truth"], c.labels, frame_time_ms=c.frame_time_ms)
        write_nifti(paths["first_frame"], first, frame_time_ms=c.frame_time_ms)
        out[cid] = paths
    return out
