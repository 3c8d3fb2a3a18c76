"""A training killed mid-run (SIGKILL) and started again with the same command continues from its last checkpoint
in the same MLflow run; a corrupt checkpoint fails clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from medvos.engines.resume import prepare_resume
from medvos.networks.checkpoint import CheckpointError


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path, synthetic_root):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundle/configs/train.yaml",
           "--datalist", str(synthetic_root / "datalist.json"), "--image_size", "64", "--max_epochs", "5",
           "--episodes_per_epoch", "32", "--batch_size", "4", "--output_dir", str(tmp_path / "eval"),
           "--ckpt_dir", str(tmp_path / "models")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = tmp_path / "models" / "phase1_resume_checkpoint_epoch=2.pt"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "models" / "phase1_resume_checkpoint_epoch=5.pt").exists()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Restored all variables from" in done.stdout + done.stderr
    assert (tmp_path / "models" / "phase1_resume_checkpoint_epoch=5.pt").exists()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    exp = client.get_experiment_by_name("medvos")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # the interrupted run was continued, not a new one
    steps = sorted({m.step for m in client.get_metric_history(runs[0].info.run_id, "val_mean_dice")})
    assert steps == [1, 2, 3, 4, 5]


def test_corrupt_checkpoint_is_clear(tmp_path):
    (tmp_path / "phase1_resume_checkpoint_epoch=3.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"epoch=3.pt: not a readable checkpoint"):
        prepare_resume(tmp_path, "phase1_resume", max_epochs=10)


def test_completed_run_starts_fresh(tmp_path):
    (tmp_path / "phase1_resume_checkpoint_epoch=10.pt").write_bytes(b"old")
    assert prepare_resume(tmp_path, "phase1_resume", max_epochs=10) is None
    assert not list(tmp_path.glob("*.pt"))


def test_checkpoint_saves_are_atomic(tmp_path, monkeypatch):
    import torch
    from ignite.engine import Engine

    from medvos.engines.handlers import AtomicCheckpointSaver

    net = torch.nn.Linear(2, 2)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, n_saved=1)
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    real_save = torch.save

    def crash_mid_write(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        real_save(obj, f, *args, **kwargs)
        raise KeyboardInterrupt("killed during the save")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        engine.run([0], max_epochs=1)
    assert not list(tmp_path.glob("*.pt"))  # no half-written checkpoint under the final name
    assert not list(tmp_path.glob(".*tmp*"))  # nor its temporary file
    monkeypatch.setattr(torch, "save", real_save)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, n_saved=1).attach(engine)
    engine.run([0], max_epochs=1)
    assert len(list(tmp_path.glob("*.pt"))) == 1


def test_resumed_best_saver_keeps_the_better_model_and_stale_resume_files_go(tmp_path):
    """Issue 14: resume restores the best-metric record (a worse epoch no longer replaces model.pt) and prunes the
    resume checkpoint of the interrupted process."""
    import torch
    from ignite.engine import Engine, Events

    from medvos.engines.handlers import AtomicCheckpointSaver
    from medvos.engines.resume import best_model_state

    net = torch.nn.Linear(2, 2)

    def evaluate(score: float, saver: AtomicCheckpointSaver) -> None:
        engine = Engine(lambda e, b: None)
        engine.state.metrics = {}
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(val_mean_dice=score))
        engine.state.key_metric_name = "val_mean_dice"
        saver.attach(engine)
        engine.run([0], max_epochs=1)

    def best_saver(restore: str | None) -> AtomicCheckpointSaver:
        return AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True,
                                     key_metric_name="val_mean_dice", key_metric_filename="model.pt",
                                     key_metric_save_state=True, restore_best_from=restore)

    evaluate(0.9, best_saver(None))
    with torch.no_grad():
        net.weight.add_(1.0)  # a later, different network
    assert best_model_state(tmp_path, "model.pt", resuming=False) is None
    restore = best_model_state(tmp_path, "model.pt", resuming=True)
    before = (tmp_path / "model.pt").read_bytes()
    evaluate(0.5, best_saver(restore))  # worse: the best model stays
    assert (tmp_path / "model.pt").read_bytes() == before
    evaluate(0.95, best_saver(restore))  # better: replaced
    assert (tmp_path / "model.pt").read_bytes() != before

    (tmp_path / "phase1_resume_checkpoint_epoch=2.pt").write_bytes(b"from the killed process")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)  # several objects: ignite names the file "..._checkpoint_..."
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net, "optimizer": opt}, save_interval=1,
                                  n_saved=1, file_prefix="phase1_resume", prune_stale=True)
    trainer = Engine(lambda e, b: None)
    saver.attach(trainer)
    trainer.load_state_dict({"iteration": 2, "epoch_length": 1, "max_epochs": 3})  # resumed after epoch 2
    trainer.run([0])
    assert sorted(p.name for p in tmp_path.glob("phase1_resume_*.pt")) == ["phase1_resume_checkpoint_epoch=3.pt"]


def test_saved_checkpoints_carry_a_sha256_that_every_load_checks(tmp_path):
    """Issue 14 item 5: a flipped byte in a saved checkpoint used to load silently; the savers record each file's
    sha256 beside it and loading compares (the record goes with the file when the saver removes it)."""
    import torch
    from ignite.engine import Engine

    from medvos.engines.handlers import AtomicCheckpointSaver
    from medvos.networks.checkpoint import CheckpointError, load_state

    net = torch.nn.Linear(64, 64)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, n_saved=1,
                          file_prefix="phase1_resume").attach(engine)
    engine.run([0], max_epochs=2)
    (ckpt,) = tmp_path.glob("*.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.name, ckpt.name + ".sha256"]  # epoch 1's went
    assert torch.equal(load_state(ckpt)["weight"], net.weight.detach())
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the weight tensor's bytes
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 .* differs .* corrupt or was changed"):
        load_state(ckpt)
