"""scripts/tune_motion.py: caches appearance once (the predictor's network, tuned as `inferring` tunes it) and
scores a grid of motion-fusion settings (tiny synthetic set)."""

from __future__ import annotations

import json

from tune_motion import main  # scripts/ is on pytest's pythonpath


def test_tune_motion_scores_a_grid(tmp_path, synthetic_root):
    out, store = tmp_path / "tune.json", tmp_path / "cache"
    args = ["--set", f"synthetic={synthetic_root / 'datalist.json'}:test", "--grid", "motion_weight=0,3",
            "--tune-steps", "0", "--cache", str(store), "--out", str(out)]
    rows = main(args)["rows"]
    assert [r["settings"] for r in rows] == [{"motion_weight": 0.0}, {"motion_weight": 3.0}]
    assert all(0.0 <= r["worst"]["synthetic"] <= r["dice"]["synthetic"] <= 1.0 for r in rows)
    assert rows[0]["dice"] != rows[1]["dice"]  # the motion prior changes the masks
    videos = rows[1]["videos"]["synthetic"]
    assert videos and abs(sum(videos.values()) / len(videos) - rows[1]["dice"]["synthetic"]) < 1e-3
    assert json.loads(out.read_text())["best"] in rows
    assert len(list(store.iterdir())) == 1
    assert main(args)["rows"] == rows  # the cached appearance and flows score the same
    tuned = main(args[:-6] + ["--tune-steps", "2", "--cache", str(store)])["rows"]
    assert len(list(store.iterdir())) == 2  # another tuning: another cache entry
    assert tuned[0]["dice"] != rows[0]["dice"]  # the tuned network's appearance differs
