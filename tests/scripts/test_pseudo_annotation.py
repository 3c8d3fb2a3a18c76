"""scripts/pseudo_annotation.py: the most trusted propagated frames taken as annotations, and a second pass with
them (tiny synthetic set)."""

from __future__ import annotations

import numpy as np

from pseudo_annotation import main, trusted_frames  # scripts/ is on pytest's pythonpath


def test_one_frame_per_stretch_the_most_trusted_with_a_mask():
    labels = np.ones((9, 4, 4), np.uint8)
    labels[8] = 0  # the most trusted frame of the second stretch is empty: the next one is taken
    confidence = np.array([1, 0.2, 0.9, 0.5, 0.6, 0.3, 0.4, 0.5, 0.99])
    drift = np.array([0, 0, 0.5, 0, 0, 0, 0, 0, 0])
    assert trusted_frames(confidence, drift, labels, 2, 0.0) == [4, 7]  # frames 1-4 and 5-8; 2's trust is 0.45
    assert trusted_frames(confidence, drift, labels, 2, 0.55) == [4]  # 7's trust (0.5) is below the floor


def test_pseudo_annotation_scores_both_passes(tmp_path, synthetic_root):
    res = main(["--set", f"synthetic={synthetic_root / 'datalist.json'}:test", "--frames", "1", "--tune-steps", "0",
                "--tune-seed", "1", "--out", str(tmp_path / "p.json")])
    assert res["tuning"] == {"tune_steps": 0, "tune_seed": 1}
    cines = res["sets"]["synthetic"]["videos"]
    assert cines and all(0.0 <= v["first"] <= 1.0 and 0.0 <= v["second"] <= 1.0 for v in cines.values())
    assert all(len(v["picked"]) <= 1 and all(t > 0 for t in v["picked"]) for v in cines.values())
    assert any(v["picked"] for v in cines.values())
    assert (tmp_path / "p.json").is_file() and res["mean"]["first"] == res["sets"]["synthetic"]["first"]
