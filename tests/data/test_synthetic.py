"""Synthetic default set: deterministic, masks agree with frames, written in real formats with a datalist."""

from __future__ import annotations

import json

import numpy as np

from medvos.data.datalist import load_datalist
from medvos.data.synthetic import echo_cine, endo_cine, make_synthetic_dataset
from medvos.io import read_cine, read_mask


def test_deterministic():
    a, b = echo_cine(5, size=64, num_frames=4), echo_cine(5, size=64, num_frames=4)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    c, d = endo_cine(5, size=64, num_frames=4), endo_cine(5, size=64, num_frames=4)
    np.testing.assert_array_equal(c.frames, d.frames)
    assert not np.array_equal(a.frames, echo_cine(6, size=64, num_frames=4).frames)


def test_masks_agree_with_frames():
    echo = echo_cine(3, size=96, num_frames=16)
    for t in range(16):
        cav = echo.labels[t].astype(bool)
        ring = np.zeros_like(cav)
        ys, xs = np.nonzero(cav)
        ring[max(ys.min() - 6, 0) : ys.max() + 7, max(xs.min() - 6, 0) : xs.max() + 7] = True
        ring &= ~cav
        assert echo.frames[t, 0][cav].mean() < 0.5 * echo.frames[t, 0][ring].mean()  # dark cavity, bright wall
    areas = echo.labels.reshape(16, -1).sum(1)
    assert areas.max() > 1.2 * areas.min()  # contracts and relaxes
    endo = endo_cine(3, size=96, num_frames=16)
    blob = endo.labels[0].astype(bool)
    red = endo.frames[0, 0].astype(float)
    assert red[blob].mean() > red[~blob].mean()  # the polyp is brighter/redder than tissue
    centres = [np.argwhere(m).mean(0) for m in endo.labels]
    assert np.linalg.norm(centres[-1] - centres[0]) > 1.0  # it moves


def test_dataset_layout_and_reuse(synthetic_root):
    dl = synthetic_root / "datalist.json"
    content = json.loads(dl.read_text())
    assert len(content["training"]) == 12 + 4 and len(content["validation"]) == 2
    val = load_datalist(dl, "validation")
    echo = next(e for e in val if e["id"].startswith("echo"))
    assert echo["image"].endswith(".dcm")
    video = read_cine(echo["image"])
    mask = read_mask(echo["label"], like=video)
    assert video.num_frames == 8 and mask.labels.shape == (8, 64, 64)
    mtime = dl.stat().st_mtime_ns
    make_synthetic_dataset(synthetic_root, size=64, images_per_family=6, val_cines=1, test_cines=1, num_frames=8,
                           train_cines=2)
    assert dl.stat().st_mtime_ns == mtime  # reused, not regenerated
