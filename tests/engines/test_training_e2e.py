"""End-to-end `training` run (the README's main job) on a tiny config; MLflow read back with its own client."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO


def run_bundle(run_id: str, configs: list[str], tmp_path, *overrides: str, timeout: int = 600):
    files = [str(REPO / "bundle" / "configs" / c) for c in configs]
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", repr(files),
           "--meta_file", str(REPO / "bundle" / "configs" / "metadata.json"),
           "--logging_file", str(REPO / "bundle" / "configs" / "logging.conf"),
           "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models"), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.slow
def test_training_tiny(tmp_path, synthetic_root):
    from mlflow import MlflowClient

    run_bundle("training", ["train.yaml"], tmp_path, "--datalist", str(synthetic_root / "datalist.json"),
               "--image_size", "64", "--max_epochs", "2", "--episodes_per_epoch", "8", "--batch_size", "4",
               "--run_name", "e2e")
    assert (tmp_path / "models" / "model.pt").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    exp = client.get_experiment_by_name("medvos")
    run = client.search_runs([exp.experiment_id])[0]
    dice = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert len(dice) == 2 and all(0.0 <= m.value <= 1.0 for m in dice)
    assert run.data.params["image_size"] == "64" and "train_loss" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"dice_per_frame.png", "phase1_config.json", "model.pt"} <= artifacts
    from medvos.networks.checkpoint import load_state

    options = load_state(tmp_path / "models" / "model.pt")["spec"]["training"]["options"]  # the file names its recipe
    assert options["max_epochs"] == 2 and options["episodes_per_epoch"] == 8 and options["image_size"] == 64
    assert options["augment_scale_range"] == 0.2 and options["self_support"] == 0.0
    assert options["train_precision"] == "float32"
    assert "network" not in options and "device" not in options


def test_verify_net_in_out():
    cmd = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
           "--meta_file", "bundle/configs/metadata.json", "--config_file", "bundle/configs/train.yaml",
           "--backbone_weights", "None"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_relearning_evaluating_inferring_tiny(tmp_path, synthetic_root):
    from mlflow import MlflowClient

    common = ["--datalist", str(synthetic_root / "datalist.json"), "--image_size", "64"]
    run_bundle("training", ["train.yaml"], tmp_path, *common, "--max_epochs", "1", "--episodes_per_epoch", "8",
               "--batch_size", "4", "--run_name", "p1", "--train_precision", "bfloat16")  # bf16 forward passes
    run_bundle("relearning", ["train.yaml", "relearn.yaml"], tmp_path, *common, "--max_epochs", "1",
               "--clip_length", "4", "--tau_hidden", "32", "--run_name", "p2",
               "--phase1_checkpoint", str(tmp_path / "models" / "model.pt"))
    relearned = tmp_path / "models" / "relearned.pt"
    assert relearned.is_file()
    from medvos.networks.checkpoint import load_state

    p1_state = load_state(tmp_path / "models" / "model.pt")
    assert p1_state["spec"]["training"]["options"]["train_precision"] == "bfloat16"
    assert all(v.dtype != torch.bfloat16 for v in p1_state["model"].values())  # the weights stay float32
    run_bundle("evaluating", ["train.yaml", "evaluate.yaml"], tmp_path, *common, "--checkpoint", str(relearned),
               "--clip_length", "4", "--tau_hidden", "32", "--run_name", "ev")
    assert (tmp_path / "eval" / "evaluation" / "test" / "videos.csv").is_file()
    assert len(list((tmp_path / "eval" / "evaluation" / "test" / "plots").glob("*.png"))) == 2
    run_bundle("inferring", ["train.yaml", "inference.yaml"], tmp_path, "--datalist",
               str(synthetic_root / "datalist.json"), "--checkpoint", str(relearned), "--overlay_format", "gif")
    assert (tmp_path / "eval" / "inference" / "mask.nii.gz").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    exp = client.get_experiment_by_name("medvos")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert {"p1", "p2", "ev"} <= set(runs)  # both phases side by side in one experiment
    assert "loss_p" in runs["p2"].data.metrics and "val_mean_dice" in runs["p2"].data.metrics
    assert "val_mean_dice" in runs["ev"].data.metrics
