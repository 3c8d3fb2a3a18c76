"""scripts/relearn_ablation.py end to end on the tiny synthetic set (one variant, one epoch; numbers not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.slow


def test_relearn_ablation_tiny(tmp_path, synthetic_root):
    from medvos.networks.image_model import FewShotSegNet

    torch.manual_seed(0)
    torch.save(FewShotSegNet.from_sizes(backbone_weights=None).state_dict(), tmp_path / "model.pt")
    cmd = [sys.executable, str(REPO / "scripts/relearn_ablation.py"), "--datalist", str(synthetic_root / "datalist.json"),
           "--phase1-checkpoint", str(tmp_path / "model.pt"), "--relearn-splits", "training", "--eval-split", "test",
           "--image-size", "64", "--max-epochs", "1", "--clip-length", "4", "--variants", "L only",
           "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(res["overall"]) == {"no relearning (phase 1)", "L only"}
    assert all(0.0 <= o["dice"] <= 1.0 for o in res["overall"].values())
    assert "| L only |" in (tmp_path / "out" / "table.md").read_text()
