"""MLflow tracking server: a tiny training logs to a real `mlflow server` on 127.0.0.1; an unreachable server
fails fast with a message naming the URI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO
from label_app_speed import free_port
from medvos.engines.tracking import checked_tracking_uri


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("mlflow server did not start within 90 s")
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_training_logs_to_server(tmp_path, synthetic_root, mlflow_server):
    from mlflow import MlflowClient

    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundle/configs/train.yaml",
           "--datalist", str(synthetic_root / "datalist.json"), "--image_size", "64", "--max_epochs", "2",
           "--episodes_per_epoch", "8", "--batch_size", "4", "--output_dir", str(tmp_path / "eval"),
           "--ckpt_dir", str(tmp_path / "models"), "--tracking_uri", mlflow_server, "--run_name", "server-run"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.search_runs([client.get_experiment_by_name("medvos").experiment_id])[0]
    assert run.info.run_name == "server-run" and run.data.params["max_epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mean_dice")] == [1, 2]
    assert {"dice_per_frame.png", "videos.csv", "phase1_config.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}
    assert not (tmp_path / "eval" / "mlruns.db").exists()  # nothing went to the local store


def test_unreachable_server_fails_fast():
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.time()
    with pytest.raises(RuntimeError, match=f"MLflow tracking server {uri} is unreachable"):
        checked_tracking_uri(uri, timeout=3)
    assert time.time() - t0 < 10
    assert checked_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.slow
def test_training_with_unreachable_server_exits_with_clear_error(tmp_path, synthetic_root):
    uri = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundle/configs/train.yaml",
           "--datalist", str(synthetic_root / "datalist.json"), "--max_epochs", "1", "--tracking_uri", uri,
           "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and f"MLflow tracking server {uri} is unreachable" in proc.stderr + proc.stdout
    assert not (tmp_path / "models" / "model.pt").exists()


def test_the_logged_config_is_what_monai_bundle_run_runs(tmp_path):
    """The run's params come from its command line as MONAI's own command line reads it (python-fire, an args file,
    ConfigParser overrides), not from a hand-written argv parser."""
    import json

    from medvos.engines.tracking import config_params, write_config_snapshot

    configs = REPO / "bundle" / "configs"
    files = repr([str(configs / "train.yaml"), str(configs / "relearn.yaml")])
    argv = ["/x/monai/bundle/__main__.py", "run", "relearning", "--config_file", files, "--max_epochs", "2",
            "--lambda_t=0.5", "--frozen_modules", "['head']", "--train#trainer#max_epochs", "7",
            "--meta_file", "m.json"]
    params = config_params({"image_size": 64}, argv=argv)
    assert params["max_epochs"] == "2" and params["lambda_t"] == "0.5" and params["image_size"] == "64"
    assert params["frozen_modules/0"] == "head" and "frozen_modules/1" not in params
    assert params["train/trainer/max_epochs"] == "7" and params["tps_weight"] == "0.1"  # relearn.yaml's own value
    assert not any(k.startswith(("imports", "meta_file")) for k in params)
    args_file = tmp_path / "args.yaml"
    args_file.write_text(f"config_file: {files}\nmax_epochs: 3\nlambda_p: 2.0\n")
    params = config_params(argv=["/x/monai/bundle/__main__.py", "run", "relearning", "--args_file", str(args_file),
                                 "--max_epochs", "4"])
    assert params["max_epochs"] == "4" and params["lambda_p"] == "2.0"  # the command line over the args file
    assert config_params(argv=["pytest", "-q", "tests"]) == {}
    snapshot = json.loads(Path(write_config_snapshot(str(tmp_path / "c.json"), {"k": 1})).read_text())
    assert snapshot == {"config": {}, "resolved": {"k": 1}}  # pytest's command line runs no bundle config
