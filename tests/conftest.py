"""Shared fixtures: synthetic cines in temp folders, and the real data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# exported ONNX graphs of the test networks go to a throwaway cache (the tests' subprocesses inherit it)
os.environ["MEDVOS_CACHE"] = tempfile.mkdtemp(prefix="medvos_test_cache_")
SHARED_DATA = Path(os.environ.get("MEDVOS_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(sub: str) -> Path:
    """A folder of the real data; skips the test with a reason when it is not there."""
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (set MEDVOS_SHARED_DATA to the shared data folder)")
    return p


def pydicom_file(name: str) -> Path:
    """A file of pydicom's own test files or of the pydicom-data package; skips the test when neither has it."""
    import pydicom

    folders = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # the pydicom-data package

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is in neither pydicom's test files nor pydicom-data (pip install pydicom-data)")


def tool(name: str) -> str:
    """The path of a command-line tool (dcmtk, dicom3tools, dcmqi); skips the test with the install hint."""
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install dcmtk dicom3tools; pip install dcmqi)")
    return path


@pytest.fixture(scope="module")
def tiny_net():
    """A small untrained few-shot network (random weights, seed 0)."""
    import torch

    from medvos.networks.image_model import FewShotSegNet

    torch.manual_seed(0)
    return FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()


@pytest.fixture(scope="session")
def echo_small():
    from medvos.data.synthetic import echo_cine

    return echo_cine(seed=1, size=48, num_frames=6)


@pytest.fixture(scope="session")
def endo_small():
    from medvos.data.synthetic import endo_cine

    return endo_cine(seed=2, size=48, num_frames=6)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from medvos.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, size=64, images_per_family=6, val_cines=1, test_cines=1, num_frames=8, train_cines=2)
    return root


def rgb_frames(t: int = 5, h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, 3, h, w)).astype(np.uint8)


@pytest.fixture(scope="module")
def endo_nifti(tmp_path_factory):
    """A 12-frame 64x64 synthetic endoscopy cine and its mask as NIfTI files: ``(folder, frames, labels)``."""
    from medvos.data.synthetic import endo_cine
    from medvos.io.writers import write_nifti

    root = tmp_path_factory.mktemp("endo_nifti")
    c = endo_cine(seed=5, size=64, num_frames=12)
    write_nifti(root / "cine.nii.gz", c.frames)
    write_nifti(root / "mask.nii.gz", c.labels)
    return root, c.frames, c.labels
