"""Two CPU processes (gloo) through torchrun: both ranks take part, metrics are reduced, rank 0 alone writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, synthetic_root):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "-m", "monai.bundle", "run", "training", "--config_file",
           "['bundle/configs/train.yaml','bundle/configs/multi_gpu_train.yaml']",
           "--datalist", str(synthetic_root / "datalist.json"), "--image_size", "64", "--max_epochs", "2",
           "--episodes_per_epoch", "16", "--batch_size", "4", "--output_dir", str(tmp_path / "eval"),
           "--ckpt_dir", str(tmp_path / "models")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "[rank1]" not in log  # no rank failed
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("medvos").experiment_id])
    assert len(runs) == 1  # only rank 0 logs
    dice = client.get_metric_history(runs[0].info.run_id, "val_mean_dice")
    assert [m.step for m in dice] == [1, 2]  # one reduced value per epoch, not one per rank
    videos = client.get_metric_history(runs[0].info.run_id, "val_videos")
    assert all(m.value == 2.0 for m in videos)  # 1 validation cine per family, 1 per rank, gathered: both ranks
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_torchrun_relearning_two_cpu_processes(tmp_path, synthetic_root):
    import torch

    from medvos.networks.image_model import FewShotSegNet

    torch.save(FewShotSegNet.from_sizes(backbone_weights=None).state_dict(), tmp_path / "phase1.pt")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "-m", "monai.bundle", "run", "relearning", "--config_file",
           "['bundle/configs/train.yaml','bundle/configs/relearn.yaml','bundle/configs/multi_gpu_train.yaml']",
           "--datalist", str(synthetic_root / "datalist.json"), "--image_size", "64", "--max_epochs", "1",
           "--clip_length", "4", "--tau_hidden", "32", "--phase1_checkpoint", str(tmp_path / "phase1.pt"),
           "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "models" / "relearned.pt").is_file()
