"""scripts/sweep_inference.py: the full `inferring` path for a grid of options (tiny synthetic set, shipped model)."""

from __future__ import annotations

import json

import pytest

from sweep_inference import main  # scripts/ is on pytest's pythonpath


def test_sweep_scores_a_grid_and_resumes(tmp_path, synthetic_root):
    out = tmp_path / "sweep.json"
    args = ["--set", f"synthetic={synthetic_root / 'datalist.json'}:test", "--grid", "tune_steps=0,2",
            "--grid", "motion=false", "--out", str(out)]
    rows = main(args)["combinations"]
    assert [r["options"] for r in rows] == [{"tune_steps": 0, "motion": False}, {"tune_steps": 2, "motion": False}]
    for r in rows:
        videos = r["sets"]["synthetic"]["videos"]
        assert videos and all(0.0 <= d <= 1.0 for d in videos.values())
        assert r["mean"] == r["sets"]["synthetic"]["dice"]
    assert rows[0]["sets"] != rows[1]["sets"]  # tuning changes the masks
    again = main(args)["combinations"]  # a rerun with the same --out skips what is there
    assert again == json.loads(out.read_text())["combinations"] == rows
    with pytest.raises(SystemExit, match="not an inference option"):
        main(["--set", f"s={synthetic_root / 'datalist.json'}:test", "--grid", "nonsense=1", "--out", str(out)])
