"""Event handlers: per-frame results (CSV) and Dice-per-frame plots written after each evaluation."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from medvos.io.atomic import atomic_path, atomic_write_bytes


def plot_dice_per_frame(series: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """One line per video (or method): ``{name: (frames, dice)}`` -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker=".", label=f"{name} ({np.nanmean(y):.3f})")
    ax.set_xlabel("frame")
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if len(series) <= 12:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)


class VideoResultsWriter:
    """After each evaluator epoch write ``frames.csv`` (video, frame, dice, iou), ``videos.csv`` (per-video means)
    and ``dice_per_frame.png`` into ``output_dir``; with ``per_video_plots`` also one plot per video.

    Only rank 0 writes (the other ranks' videos are not gathered: run evaluation single-process for full CSVs).
    """

    def __init__(self, output_dir: str | Path, per_video_plots: bool = False, enabled: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.per_video_plots = per_video_plots
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _collect(self, engine: Engine) -> None:
        self.rows.append({k: engine.state.output[k] for k in ("id", "support", "frame", "frame_dice", "frame_iou",
                                                                "dice", "iou", "confidence")})

    def _write(self, engine: Engine) -> None:
        if not self.enabled or not self.rows:
            return
        frames, videos = io.StringIO(), io.StringIO()
        fw, vw = csv.writer(frames), csv.writer(videos)
        fw.writerow(["video", "frame", "dice", "iou", "confidence"])
        vw.writerow(["video", "support_frames", "frames", "mean_dice", "mean_iou"])
        series = {}
        for r in self.rows:
            for t, d, i in zip(r["frame"], r["frame_dice"], r["frame_iou"]):
                fw.writerow([r["id"], int(t), f"{d:.4f}", f"{i:.4f}", f"{r['confidence'][int(t)]:.4f}"])
            vw.writerow([r["id"], " ".join(map(str, r["support"])), len(r["frame"]), f"{r['dice']:.4f}",
                         f"{r['iou']:.4f}"])
            series[r["id"]] = (r["frame"], r["frame_dice"])
            if self.per_video_plots:
                plot_dice_per_frame({r["id"]: series[r["id"]]}, self.output_dir / "plots" / f"{r['id']}.png",
                                    f"{r['id']}: Dice per frame")
        vw.writerow(["mean", "", sum(len(r["frame"]) for r in self.rows),
                     f"{np.mean([r['dice'] for r in self.rows]):.4f}", f"{np.mean([r['iou'] for r in self.rows]):.4f}"])
        atomic_write_bytes(self.output_dir / "frames.csv", frames.getvalue().encode())
        atomic_write_bytes(self.output_dir / "videos.csv", videos.getvalue().encode())
        epoch = getattr(engine.state, "epoch", 0)
        plot_dice_per_frame(series, self.output_dir / "dice_per_frame.png", f"Dice per frame (evaluation {epoch})")


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing every file to a temporary name then renaming it (MONAI's own saver writes
    in place), so a kill during a save never leaves a corrupt checkpoint, with its sha256 recorded beside it
    (:class:`FingerprintingSaver`).

    Args (besides MONAI's):
        restore_best_from: a best-model file saved with ``key_metric_save_state=True``; its record of the best
            metric is restored, so a resumed run replaces the best model only with a better epoch.
        prune_stale: after each interval save, remove older ``<file_prefix>_checkpoint_epoch=N.pt`` files in
            ``save_dir`` (those of an interrupted process, which this saver never wrote and would keep forever).
    """

    def __init__(self, *args: Any, restore_best_from: str | None = None, prune_stale: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, name, None)
            if checkpoint is not None:
                checkpoint.save_handler = FingerprintingSaver(checkpoint.save_handler)
        if restore_best_from:
            from medvos.networks.checkpoint import load_state

            self.load_state_dict(load_state(restore_best_from)["checkpointer"])
        self.prune_stale = prune_stale

    def interval_completed(self, engine: Engine) -> None:
        super().interval_completed(engine)
        if self.prune_stale and self._interval_checkpoint is not None:
            ckpt = self._interval_checkpoint
            prune_resume_checkpoints(self.save_dir, ckpt.filename_prefix, keep={item.filename for item in ckpt._saved})


class FingerprintingSaver(DiskSaver):
    """Takes the place of MONAI's disk saver (whose settings it keeps: folder, fixed file name, saving rank,
    ``torch.save`` arguments): writes each checkpoint to a temporary name and renames it
    (:func:`medvos.io.atomic.atomic_path`), then records its sha256 beside it (``<file>.sha256``, checked on every
    load by :func:`medvos.networks.checkpoint.load_state`), removing the record with the file. A ``DiskSaver``
    itself, so ignite treats it as one."""

    def __init__(self, inner: DiskSaver) -> None:  # noqa: D107 - the inner saver holds the settings
        self.inner = inner
        self.dirname, self.save_on_rank, self.kwargs = inner.dirname, inner.save_on_rank, inner.kwargs

    def _path(self, filename: str) -> Path:
        return Path(self.dirname) / (getattr(self.inner, "filename", None) or filename)

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        import ignite.distributed as idist
        import torch

        from medvos.io.atomic import atomic_path
        from medvos.networks.checkpoint import write_fingerprint

        if idist.get_rank() != self.save_on_rank:
            return
        path = self._path(filename)
        with atomic_path(path) as tmp:  # a kill mid-save leaves the previous file, never a torn one
            torch.save(checkpoint, tmp, **self.kwargs)
        write_fingerprint(path)

    def remove(self, filename: str) -> None:
        from medvos.networks.checkpoint import FINGERPRINT_SUFFIX

        self.inner.remove(filename)
        path = self._path(filename)
        path.with_name(path.name + FINGERPRINT_SUFFIX).unlink(missing_ok=True)


def prune_resume_checkpoints(save_dir: str | Path, prefix: str, keep: set[str] = frozenset()) -> list[Path]:
    """Remove every ``<prefix>_checkpoint_epoch=N.pt`` in ``save_dir`` but the highest N and the names in ``keep``
    (those a saver still tracks); the removed paths."""
    import re

    from medvos.networks.checkpoint import FINGERPRINT_SUFFIX

    pattern = re.compile(rf"^{re.escape(prefix)}_checkpoint_epoch=(\d+)\.pt$")
    found = sorted((int(m.group(1)), p) for p in Path(save_dir).glob(f"{prefix}_checkpoint_epoch=*.pt")
                   if (m := pattern.match(p.name)))
    stale = [p for _, p in found[:-1] if p.name not in keep]
    for p in stale:
        p.unlink(missing_ok=True)
        p.with_name(p.name + FINGERPRINT_SUFFIX).unlink(missing_ok=True)
    return stale
