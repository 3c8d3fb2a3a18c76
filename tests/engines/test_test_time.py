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


def test_relearning_starts_from_the_model_tuned_on_the_annotation(cine):
    """With test-time tuning on (`inferring`'s default) relearning adds to it: the tuned model is the teacher and the
    starting point (its tuned head, frozen while relearning, is in the student), and the predictor takes the motion
    settings for a tuned network; tuning off relearns from the input model."""
    from medvos.engines.test_time import relearn_on_cine
    from medvos.inference.defaults import inference_defaults
    from medvos.inference.predictor import VideoPredictor
    from medvos.inference.tuning import AnnotationTuning
    from medvos.networks.image_model import FewShotSegNet

    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16).eval()
    video, mask = cine / "cine.nii.gz", cine / "mask.nii.gz"
    tuning = AnnotationTuning(steps=2, views=4, learning_rate=3e-3)
    student = relearn_on_cine(net, video, mask, 48, [0], steps=1, clip_length=4, tau_hidden=16, tuning=tuning,
                              progress=False)
    reader = VideoPredictor(lambda: None)
    state = reader.init_state(video)
    reader.add_annotations(state, mask, [0])
    tuned = tuning(net, *reader.annotated_at_size(state, 48)).state_dict()  # the same seed: the same tuned model
    base, s = net.state_dict(), student.state_dict()
    head = [k for k in base if k.startswith("head.") and base[k].is_floating_point()]
    assert head and all(torch.equal(s[k], tuned[k]) for k in head)
    assert not all(torch.equal(base[k], tuned[k]) for k in head)  # (tuning moved the head)
    assert student.annotation_tuned
    weight = inference_defaults()["motion_weight"]
    strategy = VideoPredictor.with_defaults(student, 48, 4, runtime="torch").make_strategy()
    assert strategy.rule.motion_weight == float(weight["tuned"])

    plain = relearn_on_cine(net, video, mask, 48, [0], steps=1, clip_length=4, tau_hidden=16,
                            tuning={"tune_steps": 0}, progress=False)
    assert not plain.annotation_tuned and all(torch.equal(plain.state_dict()[k], base[k]) for k in head)
    strategy = VideoPredictor.with_defaults(plain, 48, 4, runtime="torch").make_strategy()
    assert strategy.rule.motion_weight == float(weight["untuned"])


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


def test_a_network_relearned_on_one_cine_is_not_exported_into_the_cache(cine):
    """The relearned network serves one cine: its exported graph goes to a temporary folder, so relearning on many
    cines does not fill the export cache (a relearned checkpoint, served on many, is cached as any model)."""
    from medvos.engines.test_time import relearn_on_cine
    from medvos.inference.predictor import VideoPredictor
    from medvos.networks.exported import OnnxNetwork, cache_dir
    from medvos.networks.image_model import FewShotSegNet

    def cached() -> list:
        return sorted(cache_dir().glob("*.onnx")) if cache_dir().is_dir() else []

    torch.manual_seed(1)
    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16, neck_levels=2, neck_depth=2).eval()
    student = relearn_on_cine(net, cine / "cine.nii.gz", cine / "mask.nii.gz", 48, [0], steps=1, clip_length=4,
                              tau_hidden=16, tuning={"tune_steps": 0}, progress=False)
    assert student.one_cine
    before = cached()
    strategy = VideoPredictor.with_defaults(student, 48, 4, runtime="openvino").make_strategy()
    assert isinstance(strategy.network, OnnxNetwork) and cached() == before
    student.one_cine = False  # as a relearned checkpoint: kept in the cache
    VideoPredictor.with_defaults(student, 48, 4, runtime="openvino")
    assert len(cached()) > len(before)
