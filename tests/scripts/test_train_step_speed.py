"""scripts/train_step_speed.py runs end to end at a tiny size (seconds measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_train_step_speed_script_tiny(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [sys.executable, str(REPO / "scripts/train_step_speed.py"), "--image_size", "64", "--batch_size", "2",
           "--steps", "1", "--rounds", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {p: len(v) for p, v in res["seconds_per_step"].items()} == {"float32": 2, "bfloat16": 2}
    assert all(s > 0 for v in res["seconds_per_step"].values() for s in v) and res["image_size"] == 64
