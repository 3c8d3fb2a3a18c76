"""scripts/speed_memory.py's propagation part and scripts/speed_ab.py at a tiny size (speeds measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def phase1_file(tmp_path_factory):
    from medvos.networks.image_model import FewShotSegNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ab") / "model.pt"
    torch.save(FewShotSegNet.from_sizes(backbone_weights=None).state_dict(), path)
    return path


def test_propagation_part_tunes_once_and_times_the_propagation(tmp_path, phase1_file):
    """Every default (test-time tuning, two passes): each tuning is computed in the first call and reused by the
    timed runs, which give the same masks."""
    cmd = [sys.executable, str(REPO / "scripts/speed_memory.py"), "--checkpoint", str(phase1_file), "--image-size",
           "64", "--speed-frames", "12", "--skip", "speed,memory", "--propagation-repeats", "2", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pg = json.loads((tmp_path / "results.json").read_text())["propagation"]
    assert pg["frames"] == 12 and len(pg["runs"]) == 2 and len(pg["masks_sha256"]) == 1
    assert pg["tunings"] == {"asked": 3 * pg["passes"], "computed": pg["passes"]}  # first call + 2 runs, per pass
    low, high = pg["fps_propagation_range"]
    assert 0 < low <= pg["fps_propagation"] <= high and pg["cores"] > 0
    assert "tunings reused" in (tmp_path / "table.md").read_text()


def test_speed_ab_alternates_trees_and_compares_masks(tmp_path, phase1_file):
    cmd = [sys.executable, str(REPO / "scripts/speed_ab.py"), "--tree", f"a={REPO}", "--tree", f"b={REPO}",
           "--rounds", "2", "--repeats", "1", "--checkpoint", str(phase1_file), "--image-size", "64",
           "--speed-frames", "12", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text())
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("round")] == [
        "round 1 a", "round 1 b", "round 2 a", "round 2 b"]  # alternated
    assert {n: len(r) for n, r in out["rounds"].items()} == {"a": 2, "b": 2} and out["ratio_to_first"]["a"] == 1.0
    assert out["same_masks"] is True  # one tree twice: the same network, the same masks
    assert "| b |" in (tmp_path / "table.md").read_text()


def test_speed_ab_refuses_a_folder_without_medvos(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts/speed_ab.py"), "--tree", f"a={REPO}", "--tree",
                           f"b={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bundle/medvos" in proc.stderr


def test_an_option_instead_of_the_default_is_timed(tmp_path, phase1_file):
    """``--option``: the timed predictor takes it (one pass: one tuning); a key that is no inference option is refused."""
    cmd = [sys.executable, str(REPO / "scripts/speed_memory.py"), "--checkpoint", str(phase1_file), "--image-size",
           "64", "--speed-frames", "12", "--skip", "speed,memory", "--propagation-repeats", "1", "--option",
           "self_annotate=0", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pg = json.loads((tmp_path / "results.json").read_text())["propagation"]
    assert pg["passes"] == 1 and pg["tunings"] == {"asked": 2, "computed": 1}
    assert "self_annotate=0" in (tmp_path / "table.md").read_text()
    bad = subprocess.run(cmd[:-4] + ["--option", "self_annotation=0"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "self_annotation=0" in bad.stderr and "inference option" in bad.stderr


def test_the_one_tuning_row_takes_the_tuning_and_propagation_options():
    """``--option``: speed_memory's one-tuning row tunes and propagates with it (its tuning options were ignored)."""
    import argparse
    import importlib.util

    import numpy as np

    from medvos.networks.image_model import FewShotSegNet

    spec = importlib.util.spec_from_file_location("speed_memory", REPO / "scripts/speed_memory.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = argparse.Namespace(image_size=32, clip_length=4, option=["tune_steps=2", "tune_views=4",
                                                                    "tune_precision=bfloat16", "runtime=torch"])
    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=8).eval()
    frames, labels = torch.rand(8, 3, 32, 32), np.zeros((8, 32, 32), np.uint8)
    labels[:, 8:20, 10:22] = 1
    row = script.tuned_speed(net, frames, labels, args)
    assert (row["tune_steps"], row["tune_precision"], row["runtime"]) == (2, "bfloat16", "torch")
    assert row["tuning_seconds"] > 0 and row["fps_propagation"] > 0
