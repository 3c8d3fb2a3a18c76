"""End-to-end `training` run (the README's main job) on a tiny config; MLflow read back with its own client."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


def test_verify_net_in_out():
    cmd = [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
           "--meta_file", "bundle/configs/metadata.json", "--config_file", "bundle/configs/train.yaml",
           "--backbone_weights", "None"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
