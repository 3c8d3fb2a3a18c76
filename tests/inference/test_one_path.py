"""One propagation path: training validation, the benchmark, the `inferring` workflow and the MONAI Label app
return identical masks for the same checkpoint, cine and annotation (issue: they used to disagree)."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REPO

SIZE = 48


@pytest.fixture(scope="module")
def case(endo_nifti):
    """A synthetic cine (NIfTI) + mask, and a checkpoint with a non-default architecture that carries its spec."""
    from medvos.networks.checkpoint import ModelSpec
    from medvos.networks.image_model import FewShotSegNet

    root, frames, labels = endo_nifti
    torch.manual_seed(3)
    args = {"channels": 16, "neck_levels": 2, "neck_depth": 2}
    net = FewShotSegNet.from_sizes(backbone_weights=None, **args).eval()
    # a random but decisive network: shift the foreground logit so that about half the pixels are foreground
    x = torch.from_numpy(frames[:2].astype(np.float32) / 255)
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear")
    m = torch.nn.functional.interpolate(torch.from_numpy(labels[:1, None]).float(), size=(SIZE, SIZE))
    with torch.no_grad():
        logits = net.segment(x[1:], net.encode_support(x[None, :1], m[None]), (SIZE, SIZE))
        last = [mod for mod in net.head.modules() if isinstance(mod, torch.nn.Conv2d)][-1]
        last.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    torch.save({"model": net.state_dict(), "spec": ModelSpec(net, SIZE).state_dict()}, root / "model.pt")
    entry = {"id": "cine", "image": str(root / "cine.nii.gz"), "label": str(root / "mask.nii.gz"),
             "labeled_frames": [0]}
    return root, entry


def _validation(entry, ckpt):
    from medvos.data.videos import VideoDataset
    from medvos.engines.video_evaluator import VideoEvaluator
    from medvos.networks.checkpoint import load_model

    net = load_model(ckpt).eval()
    ev = VideoEvaluator("cpu", [VideoDataset([entry])[0]], net, image_size=SIZE, clip_length=8)
    return ev._iteration(ev, VideoDataset([entry])[0])["pred"]


def _inferring(root, entry, ckpt, *extra):
    out = root / ("infer" + "_".join(extra).replace("-", ""))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file",
           repr([str(REPO / "bundle/configs/train.yaml"), str(REPO / "bundle/configs/inference.yaml")]),
           "--checkpoint", str(ckpt), "--video", entry["image"], "--annotation", entry["label"],
           "--annotated_frames", "[0]", "--outputs", "['nifti']", "--inference_dir", str(out),
           "--output_dir", str(root / "eval"), *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.transpose(np.asarray(nib.load(out / "mask.nii.gz").dataobj), (2, 1, 0))


def test_validation_benchmark_inferring_app_agree(case):
    from medvos.data.videos import VideoDataset
    from medvos.benchmarking.methods import model_method
    from medvos.inference.defaults import inference_defaults
    from medvos.monai_label.infer import APP_OPTIONS, PropagateInfer

    root, entry = case
    ckpt = root / "model.pt"
    item = VideoDataset([entry])[0]
    frames, labels = item["image"].numpy(), item["label"][:, 0].numpy()

    # validation scores the network (the appearance cue, single path, PyTorch: the weights change every epoch; no
    # test-time tuning, one pass); inferring does the same with those options
    single = model_method(ckpt, memory_tree=False, motion=False, runtime="torch", tune_steps=0, self_annotate=0)(
        frames, labels, [0], entry)
    assert 0.02 < (single[1:] > 0).mean() < 0.98, "the test network must segment part of each frame"
    np.testing.assert_array_equal(_validation(entry, ckpt), single)
    np.testing.assert_array_equal(_inferring(root, entry, ckpt, "--memory_tree", "False", "--motion", "False",
                                             "--runtime", "torch", "--tune_steps", "0", "--self_annotate", "0"),
                                  single)

    default = model_method(ckpt)(frames, labels, [0], entry)  # the inferring defaults (motion, tuning ... as set)
    assert not np.array_equal(default, single), "the defaults add motion: the test must tell them apart"
    np.testing.assert_array_equal(_inferring(root, entry, ckpt), default)

    def app(name, **options):  # the app's defaults, network and size from the checkpoint
        PropagateInfer(root / "app_models", ckpt, options=options).propagate(
            entry["image"], entry["label"], annotated=[0], output=root / name)
        return np.transpose(np.asarray(nib.load(root / name).dataobj), (2, 1, 0))

    # the app tunes less and propagates once (APP_OPTIONS: seconds per request): it equals inferring with the same
    # options
    short = model_method(ckpt, **APP_OPTIONS)(frames, labels, [0], entry)
    assert not np.array_equal(short, default), "the tunings differ: the test must tell them apart"
    np.testing.assert_array_equal(app("app.nii.gz"), short)
    np.testing.assert_array_equal(_inferring(root, entry, ckpt, *(a for k, v in APP_OPTIONS.items()
                                                                  for a in (f"--{k}", str(v)))), short)
    untuned = model_method(ckpt, **{**APP_OPTIONS, "tune_steps": 0})(frames, labels, [0], entry)
    np.testing.assert_array_equal(app("app_untuned.nii.gz", tune_steps=0), untuned)
    full = {k: inference_defaults()[k] for k in APP_OPTIONS}  # inferring's own tuning and passes, asked of the app
    np.testing.assert_array_equal(app("app_tuned.nii.gz", **full), default)
