"""scripts/speed_memory.py runs end to end at a tiny size (the numbers are measured by the script, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_speed_memory_script_tiny(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts/speed_memory.py"), "--image-size", "64", "--window", "4",
           "--tau-hidden", "16", "--speed-frames", "12", "--memory-lengths", "8,16", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["speed"]["fps_end_to_end"] > 0 and set(res["speed"]["stages_ms_per_frame"]) == {
        "preprocess", "backbone", "pseudo mask + fusion + neck", "TAU", "head", "postprocess"}
    assert abs(sum(res["speed"]["stages_share"].values()) - 1) < 1e-6
    runs = res["memory"]["runs"]
    assert set(runs) == {"8", "16"} and all(r["peak_rss_mb"] >= r["rss_before_inference_mb"] > 0 for r in runs.values())
    assert "frames/s" in (tmp_path / "table.md").read_text()
