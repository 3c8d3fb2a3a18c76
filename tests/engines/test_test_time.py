"""Test-time relearning: phase 2 on the one cine being segmented (an `inferring` option)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO


@pytest.fixture(scope="module")
def cine(endo_nifti):
    return endo_nifti[0]


def test_relearn_on_cine_adapts_a_copy(cine):
    from medvos.engines.test_time import relearn_on_cine
    from medvos.inference.workflow import run_inference
    from medvos.networks.image_model import FewShotSegNet
    from medvos.networks.relearn_model import RelearnNet

    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    student = relearn_on_cine(net, cine / "cine.nii.gz", cine / "mask.nii.gz", 48, [0], steps=2, clip_length=4,
                              tau_hidden=16, progress=False)
    assert isinstance(student, RelearnNet) and not student.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the input model is untouched
    s = student.state_dict()
    assert any(not torch.equal(before[k], s[k]) for k in before if k in s and before[k].is_floating_point())
    head = [k for k in before if k.startswith("head.")]
    assert head and all(torch.equal(before[k], s[k]) for k in head)  # the head stays frozen
    out = run_inference(str(cine / "cine.nii.gz"), str(cine / "mask.nii.gz"), cine / "out", student, 48, 4,
                        outputs=(), annotated=[0], progress=False)
    assert out["labels"].shape == (12, 64, 64)
    with pytest.raises(ValueError, match="already relearned"):
        relearn_on_cine(student, cine / "cine.nii.gz", cine / "mask.nii.gz", 48, [0], steps=1, progress=False)


def test_inferring_with_test_time_relearning(cine, tmp_path):
    from medvos.networks.checkpoint import ModelSpec
    from medvos.networks.image_model import FewShotSegNet

    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16)
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "spec": ModelSpec(net, 48).state_dict()}, ckpt)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file",
           repr([str(REPO / "bundle/configs/train.yaml"), str(REPO / "bundle/configs/inference.yaml")]),
           "--checkpoint", str(ckpt), "--video", str(cine / "cine.nii.gz"), "--annotation",
           str(cine / "mask.nii.gz"), "--annotated_frames", "[0]", "--relearn_steps", "2", "--tau_hidden", "16",
           "--outputs", "['csv']", "--inference_dir", str(out), "--output_dir", str(tmp_path / "eval")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test-time relearning" in proc.stderr + proc.stdout
    rows = (out / "confidence.csv").read_text().splitlines()
    assert len(rows) == 13 and np.isclose(float(rows[1].split(",")[2]), 1.0)
