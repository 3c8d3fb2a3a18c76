"""Resuming a killed training: the last full checkpoint and the MLflow run name to continue."""

from __future__ import annotations

import re
from pathlib import Path

from medvos.io.atomic import atomic_write_bytes
from medvos.networks.checkpoint import CheckpointError, load_state


def prepare_resume(ckpt_dir: str | Path, prefix: str, max_epochs: int) -> str | None:
    """The checkpoint to resume from: ``<prefix>_checkpoint_epoch=N.pt`` with the highest N < ``max_epochs``.

    A run that already reached ``max_epochs`` is complete: its resume checkpoints are removed (the best model
    stays) and ``None`` starts a fresh run. A corrupt checkpoint raises :class:`CheckpointError` naming the file.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}_checkpoint_epoch=(\d+)\.pt$")
    found = sorted(((int(m.group(1)), p) for p in Path(ckpt_dir).glob(f"{prefix}_checkpoint_epoch=*.pt")
                    if (m := pattern.match(p.name))), reverse=True)
    if not found:
        return None
    epoch, path = found[0]
    if epoch >= max_epochs:
        for _, p in found:
            p.unlink(missing_ok=True)
        return None
    state = load_state(path)
    if "trainer" not in state:
        raise CheckpointError(f"{path}: not a resume checkpoint (no trainer state)")
    return str(path)


def resume_run_name(ckpt_dir: str | Path, prefix: str, default: str, resuming: bool) -> str:
    """The MLflow run name: the interrupted run's (stored beside its checkpoints) when resuming, else ``default``."""
    path = Path(ckpt_dir) / f"{prefix}_run_name.txt"
    if resuming and path.is_file():
        return path.read_text().strip()
    atomic_write_bytes(path, default.encode())
    return default


def broadcast_str(value: str, src: int = 0) -> str:
    """Rank ``src``'s string on every rank (identity without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def best_model_state(ckpt_dir: str | Path, filename: str, resuming: bool) -> str | None:
    """The best-model file whose best-metric record a resumed run restores (see ``AtomicCheckpointSaver``): only
    when resuming, and only a file that carries the record (``key_metric_save_state``)."""
    path = Path(ckpt_dir) / filename
    if not resuming or not path.is_file():
        return None
    return str(path) if "checkpointer" in load_state(path) else None
