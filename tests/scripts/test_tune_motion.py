"""scripts/tune_motion.py: caches appearance once and scores a grid of motion-fusion settings (tiny synthetic set)."""

from __future__ import annotations

import json

from tune_motion import main  # scripts/ is on pytest's pythonpath


def test_tune_motion_scores_a_grid(tmp_path, synthetic_root):
    out = tmp_path / "tune.json"
    res = main(["--set", f"synthetic={synthetic_root / 'datalist.json'}:test", "--grid", "motion_weight=0,3",
                "--out", str(out)])
    rows = res["rows"]
    assert [r["settings"] for r in rows] == [{"motion_weight": 0.0}, {"motion_weight": 3.0}]
    assert all(0.0 <= r["dice"]["synthetic"] <= 1.0 for r in rows)
    assert rows[0]["dice"] != rows[1]["dice"]  # the motion prior changes the masks
    assert json.loads(out.read_text())["best"] in rows
