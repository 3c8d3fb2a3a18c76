"""The general model shipped in bundle/models: fingerprinted, rebuilt from the file alone, the default of every
consumer, never overwritten by the main job; corrupt or non-finite checkpoints are refused."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from conftest import REPO, shared
from medvos.networks.checkpoint import (SHIPPED_MODEL, SHIPPED_PATH, CheckpointError, ModelSpec, checkpoint_spec,
                                       load_model, load_state)

SHIPPED = REPO / "bundle" / "models" / SHIPPED_MODEL


def test_shipped_model_matches_metadata_and_rebuilds_from_file():
    meta = json.loads((REPO / "bundle/configs/metadata.json").read_text())["shipped_model"]
    assert SHIPPED.is_file() and SHIPPED.stat().st_size < 25 * 2**20
    assert SHIPPED_PATH == SHIPPED.resolve()  # the one path the scripts default to
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == meta["sha256"]
    assert load_state(SHIPPED)["spec"] == meta["spec"]  # as the file holds it
    spec = checkpoint_spec(SHIPPED)  # as this version reads it: the network as its `_target_` tree
    assert spec["format"] == 2 and spec["preprocessing"]["image_size"]
    assert spec["network"]["backbone"]["_target_"] == "medvos.networks.backbone.EfficientNetLite0Backbone"
    assert spec == meta["spec"]  # recorded in the format this version writes
    assert spec["training"]["targets"] and "tau" not in spec["network"]
    net = load_model(SHIPPED)
    x = torch.rand(1, 7, *spec["preprocessing"]["image_size"])
    assert net.eval()(x).shape == (1, 2, *x.shape[-2:])


def test_every_consumer_defaults_to_the_shipped_model():
    from monai.bundle import ConfigParser

    configs = REPO / "bundle" / "configs"
    for extra, key in (("inference.yaml", "checkpoint"), ("evaluate.yaml", "checkpoint"),
                       ("relearn.yaml", "phase1_checkpoint")):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.yaml"), str(configs / extra)])
        assert parser.get_parsed_content(key).endswith(f"models/{SHIPPED_MODEL}"), extra
    # the main job writes model.pt and its resume files, never the shipped file
    parser = ConfigParser()
    parser.read_config(str(configs / "train.yaml"))
    assert parser["validate"]["best_saver"]["key_metric_filename"] != SHIPPED_MODEL
    assert not SHIPPED_MODEL.startswith(parser["resume_prefix"])
    from medvos.monai_label.infer import PropagateInfer

    assert PropagateInfer.__init__.__code__.co_varnames[:3] == ("self", "model_dir", "base_model")
    app = (REPO / "bundle/monailabel_app/main.py").read_text()
    assert "SHIPPED_MODEL" in app and "general.pt" in (REPO / "scripts/start_label_server.py").read_text()


def test_corrupt_and_non_finite_checkpoints_are_refused(tmp_path):
    from medvos.networks.image_model import FewShotSegNet

    net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16)
    spec = ModelSpec(net, 64).state_dict()
    good = tmp_path / "good.pt"
    torch.save({"model": net.state_dict(), "spec": spec}, good)
    assert isinstance(load_model(good), FewShotSegNet)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        load_model(truncated)
    state = net.state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone().fill_(float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save({"model": state, "spec": spec}, bad)
    with pytest.raises(CheckpointError, match="nan.pt: non-finite weights"):
        load_model(bad)
    wrong = tmp_path / "wrong.pt"
    wider = ModelSpec(FewShotSegNet.from_sizes(backbone_weights=None, channels=48), 64).state_dict()
    torch.save({"model": net.state_dict(), "spec": wider}, wrong)
    with pytest.raises(CheckpointError, match="wrong.pt: weights do not fit"):
        load_model(wrong)


def test_shipping_replaces_a_fingerprinted_model(tmp_path):
    """``scripts/ship_model.py`` over a file whose sha256 is recorded (the shipped model in metadata.json, or a
    sidecar): the new file is checked under its temporary name, then the record follows it."""
    from ship_model import main  # scripts/ is on pytest's pythonpath

    from medvos.networks.checkpoint import write_fingerprint
    from medvos.networks.image_model import FewShotSegNet

    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"version": "x"}))
    out = tmp_path / "models" / "general.pt"
    shipped = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = FewShotSegNet.from_sizes(backbone_weights=None, channels=16)
        source = tmp_path / f"run{seed}.pt"
        torch.save({"model": net.state_dict(), "optimizer": {}, "spec": ModelSpec(net, 64).state_dict()}, source)
        shipped.append(main([str(source), "--out", str(out), "--metadata", str(metadata)]))
        if seed == 0:
            write_fingerprint(out)  # the first file recorded, as the bundle's is in metadata.json
        assert set(load_state(out)) == {"model", "spec"}  # no optimiser state
    assert shipped[0]["sha256"] != shipped[1]["sha256"]
    assert json.loads(metadata.read_text())["shipped_model"]["sha256"] == shipped[1]["sha256"]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == shipped[1]["sha256"]
    load_model(out)  # the sidecar was brought up to date, so the new file loads


def test_the_shipped_models_load_checks_its_recorded_sha256():
    from medvos.networks.checkpoint import recorded_sha256

    meta = json.loads((REPO / "bundle/configs/metadata.json").read_text())["shipped_model"]
    assert recorded_sha256(SHIPPED) == (meta["sha256"], str(REPO / "bundle/configs/metadata.json"))


@pytest.mark.realdata
@pytest.mark.parametrize("recording, floor", [("202201121837530038", 0.85), ("202201121808450029", 0.70)])
def test_shipped_model_out_of_the_box_on_a_real_carotid_recording(tmp_path, recording, floor):
    """`inferring` defaults (appearance + motion), 1-shot first frame, on real ultrasound recordings the model never
    trained on. Model card: 0.950 and 0.903 Dice with the 0.15.0 model, 0.944 and 0.895 with the 0.12.0 model and
    0.13.0's defaults (0.947 and 0.907 with 0.12.0's, 0.933 and 0.843 with the 0.3.0-0.11.0 model); DIS optical flow
    alone 0.804 (steady) and 0.300 (the mask drifts away at a probe movement); the 0.3.0 network alone 0.593 and
    0.583; copying the first mask 0.051 and 0.188."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from medvos.metrics import frame_scores

    rec = shared("carotid_us_dev") / recording
    masks = sorted((rec / "masks").iterdir())
    ann = tmp_path / "annotation"
    ann.mkdir()
    (ann / masks[0].name).write_bytes(masks[0].read_bytes())
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file",
           repr([str(REPO / "bundle/configs/train.yaml"), str(REPO / "bundle/configs/inference.yaml")]),
           "--video", str(rec / "images"), "--annotation", str(ann), "--inference_dir", str(out),
           "--outputs", "['png']", "--output_dir", str(tmp_path / "eval")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pred = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "masks").iterdir())])
    gt = np.stack([np.asarray(Image.open(p)) > 127 for p in masks]).astype(np.uint8)
    dice = frame_scores((pred > 0).astype(np.uint8), gt, [0])["dice"].mean()
    assert dice >= floor, f"{rec.name}: Dice {dice:.3f}"
