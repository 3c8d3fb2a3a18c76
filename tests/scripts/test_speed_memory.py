"""scripts/speed_memory.py and scripts/read_memory.py run end to end at a tiny size (numbers measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_speed_memory_script_tiny(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts/speed_memory.py"), "--image-size", "64", "--clip-length", "4",
           "--tau-hidden", "16", "--speed-frames", "12", "--memory-lengths", "8,16", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["speed"]["fps_end_to_end"] > 0 and set(res["speed"]["stages_ms_per_frame"]) == {
        "preprocess", "backbone", "pseudo mask + fusion + neck", "TAU", "head", "postprocess"}
    assert abs(sum(res["speed"]["stages_share"].values()) - 1) < 1e-6
    pr = res["speed"]["inferring_predictor"]  # the predictor with every default, self-annotation's passes included
    assert pr["fps_propagation"] >= pr["fps_overall"] > 0 and pr["passes"] == 1 + bool(pr["self_annotate"])
    low, high = pr["fps_propagation_range"]
    assert len(pr["runs"]) == 3 and low <= pr["fps_propagation"] <= high
    assert pr["passes"] == 1 or pr["reused"]["hits"] > 0  # the second pass took the first's flows and encodings
    runs = res["memory"]["runs"]
    assert set(runs) == {"8", "16"} and all(r["peak_rss_mb"] >= r["rss_before_inference_mb"] > 0 for r in runs.values())
    assert "frames/s" in (tmp_path / "table.md").read_text()


def test_memory_with_dicom_and_full_length_nifti_annotation(tmp_path):
    """The DICOM memory variant: JPEG multi-frame DICOM + full-length NIfTI labels in, NIfTI mask out."""
    cmd = [sys.executable, str(REPO / "scripts/speed_memory.py"), "--image-size", "64", "--clip-length", "4",
           "--tau-hidden", "16", "--memory-lengths", "8,16", "--memory-input", "dicom", "--skip", "speed",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["memory"]["input"] == "dicom" and set(res["memory"]["runs"]) == {"8", "16"}
    assert "Input: dicom" in (tmp_path / "table.md").read_text()


def test_read_memory_script_eager_and_lazy_agree(tmp_path):
    """scripts/read_memory.py reads one cine both ways (it exits non-zero if their pixels differ)."""
    from medvos.data.synthetic_dicom import write_dicom_cine

    rng = np.random.default_rng(0)
    write_dicom_cine(tmp_path / "c.dcm", rng.integers(0, 255, (20, 3, 32, 48), dtype=np.uint8), compression="jpeg")
    cmd = [sys.executable, str(REPO / "scripts/read_memory.py"), str(tmp_path / "c.dcm"), "--chunk", "4",
           "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "out/results.json").read_text())
    assert res["runs"]["eager"]["shape"] == [20, 3, 32, 48] == res["runs"]["lazy"]["shape"]
    assert all(r["peak_rss_mb"] >= r["rss_before_mb"] > 0 for r in res["runs"].values())
