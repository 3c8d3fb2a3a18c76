"""Bundle conformance: metadata.json carries the fields MONAI's bundle specification requires (its JSON schema is
fetched from the internet by `verify_metadata`, so the required fields are checked here), and every config parses."""

from __future__ import annotations

import json

import pytest

from conftest import REPO

CONFIGS = REPO / "bundle" / "configs"


def test_metadata_required_fields():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    for io_key, name in (("inputs", "image"), ("outputs", "pred")):
        spec = meta["network_data_format"][io_key][name]
        for key in ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data"):
            assert key in spec, f"{io_key}.{name}.{key}"
    import monai
    import numpy
    import torch

    assert meta["monai_version"] == monai.__version__
    assert meta["numpy_version"] == numpy.__version__
    assert torch.__version__.startswith(meta["pytorch_version"])


def _workflow(*extra: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml")] + [str(CONFIGS / e) for e in extra])
    parser["backbone_weights"] = None
    parser.parse()
    return parser


def _is_run(parser, run_id: str) -> None:
    """A run id is a non-empty list of expressions (what `monai.bundle run <id>` executes)."""
    steps = parser.get(run_id)
    if isinstance(steps, str) and steps.startswith("@"):
        steps = parser.get(steps[1:])
    assert isinstance(steps, list) and steps and all(str(s).startswith("$") for s in steps), (run_id, steps)


def test_training_config_tells_the_method():
    from monai.losses import DiceCELoss

    from medvos.networks.image_model import FewShotSegNet

    p = _workflow()
    _is_run(p, "training")
    assert isinstance(p.get_parsed_content("network_def"), FewShotSegNet)
    assert isinstance(p.get_parsed_content("loss"), DiceCELoss)
    assert p["train#trainer#_target_"] == "SupervisedTrainer" and p["train#trainer#loss_function"] == "@loss"
    assert p["validate#evaluator#_target_"] == "medvos.engines.video_evaluator.VideoEvaluator"
    assert p["validate#evaluator#clip_length"] == "@clip_length" and p["clip_length"] == 8
    assert (p["image_size"], p["max_epochs"], p["shots"]) == (128, 15, 1)  # the main job's defaults (model card)
    assert p["model_spec#network"] == "@network_base" and p["resume"] is True


def test_relearning_config_tells_phase_2():
    from medvos.losses.relearning import RelearnLoss

    p = _workflow("relearn.yaml")
    _is_run(p, "relearning")
    assert p.get("training") == []
    loss = p.get_parsed_content("relearn_loss")
    assert isinstance(loss, RelearnLoss)
    assert (loss.lambda_t, loss.lambda_f, loss.lambda_p) == (p["lambda_t"], p["lambda_f"], p["lambda_p"])
    assert loss.tps_weight == p["tps_weight"] > 0  # TPS on by default (model card)
    assert p["train#trainer#loss_function"] == "@relearn_loss"
    assert p["train#trainer#iteration_update#_target_"] == "medvos.engines.relearning.RelearnStep"
    assert p["network_base"] == "@relearn_net" and p["relearn_net#frozen"] == "@frozen_modules"
    assert p["frozen_modules"] == ["head", "backbone.f_stages"]
    assert p["relearn_net#tau#_target_"] == "medvos.networks.tau.TAUTranslator"
    assert p["relearn_net#tau#frames"] == "@clip_length"


def test_evaluation_and_inference_configs_read_the_checkpoint():
    from medvos.inference.sinks import SINKS

    for extra, run_id in (("evaluate.yaml", "evaluating"), ("inference.yaml", "inferring")):
        p = _workflow(extra)
        _is_run(p, run_id)
        assert p["checkpoint"] == "@shipped_model"
        assert "checkpoint_clip_length(@checkpoint" in p["clip_length"] and "input_size(@checkpoint" in p["image_size"]
    assert p["predictor#_target_"] == "medvos.inference.predictor.VideoPredictor.with_defaults"
    assert p["predictor#clip_length"] == "@clip_length" and p["predictor#motion"] == "@motion"
    from medvos.inference.defaults import KEYS, PREDICTOR_KEYS, TUNING_KEYS

    assert all(p[f"predictor#{k}"] == f"@{k}" for k in KEYS + PREDICTOR_KEYS)  # every default reaches the predictor
    # the tune_* options are gathered once and feed both the predictor's tuning and test-time relearning
    assert p["predictor#tuning"] == "@tuning" and all(p[f"tuning#{k}"] == f"@{k}" for k in TUNING_KEYS)
    assert "tuning=@tuning)" in p["network"]
    p["tune_steps"] = 7  # a command-line override reaches both through the one dict
    assert p.get_parsed_content("tuning")["tune_steps"] == 7
    assert set(p["outputs"]) <= set(p["sinks"]) and set(p["sinks"]) == set(SINKS)
    batch = _workflow("inference.yaml", "batch_inference.yaml")
    _is_run(batch, "batch_inferring")
    assert batch["predictor#network"] == "@model"


def test_multi_process_config_wraps_the_network():
    p = _workflow("multi_gpu_train.yaml")
    assert "DistributedDataParallel(@network_base" in p["network"]
    assert p["train#dataloader#sampler"].replace("::", "#") == "@train#sampler" and p["initialize"][0].endswith("distributed.init()")


def test_one_version():
    import medvos

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] == medvos.__version__ and medvos.__version__ in meta["changelog"]
    assert 'version = { attr = "medvos.__version__" }' in (REPO / "pyproject.toml").read_text()


@pytest.mark.slow
def test_ckpt_export_torchscript_matches_eager(tmp_path, echo_small):
    import subprocess
    import sys

    import torch

    from medvos.networks.image_model import FewShotSegNet, pack_episode

    torch.manual_seed(0)
    net = FewShotSegNet.from_sizes(backbone_weights=None).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(tmp_path / "m.ts"),
           "--ckpt_file", str(tmp_path / "model.pt"), "--meta_file", str(CONFIGS / "metadata.json"),
           "--config_file", str(CONFIGS / "train.yaml"), "--backbone_weights", "None", "--use_trace", "True",
           "--input_shape", "[1, 7, 128, 128]"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ts = torch.jit.load(str(tmp_path / "m.ts"))
    frames = torch.nn.functional.interpolate(torch.from_numpy(echo_small.frames).float().repeat(1, 3, 1, 1) / 255,
                                             size=(128, 128), mode="bilinear")
    mask = torch.nn.functional.interpolate(torch.from_numpy(echo_small.labels[:1, None]).float(), size=(128, 128))
    for t in range(1, frames.shape[0]):
        x = pack_episode(frames[t : t + 1], frames[None, :1], mask[None])
        with torch.no_grad():
            eager, exported = net(x), ts(x)
        torch.testing.assert_close(exported, eager, rtol=1e-4, atol=1e-4)
        assert torch.equal(exported.argmax(1), eager.argmax(1))
