"""Train task "relearn": phase-2 relearning on the datastore's cines, their submitted labels as support."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from medvos.bundle_command import CONFIGS, bundle_command
from medvos.data.datalist import write_datalist
from medvos.io.atomic import atomic_path, atomic_write_bytes
from medvos.io.errors import CineReadError
from medvos.io.readers import read_annotations, read_cine
from medvos.monai_label.datastore import datastore_annotation
from medvos.monai_label.infer import RELEARNED_FILE
from medvos.monai_label.requests import RequestError, check_name
from medvos.networks.checkpoint import checkpoint_spec, input_size, model_state
from medvos.networks.relearn_model import CLIP_LENGTH

logger = logging.getLogger(__name__)


def write_progress(stats_file: Path, ckpt_dir: Path, total_epochs: int) -> dict[str, Any]:
    """Record a running relearning's progress under the names 3D Slicer's plugin polls: ``epoch`` (epochs done, from
    the resume checkpoints written so far), ``total_epochs``, ``best_metric`` (0: no labelled validation frames) and
    no ``total_time`` until it ends."""
    import re

    done = [int(m.group(1)) for p in Path(ckpt_dir).glob("phase2_resume_checkpoint_epoch=*.pt")
            if (m := re.search(r"epoch=(\d+)\.pt$", p.name))]
    progress = {"status": "running", "epoch": max(done, default=0), "total_epochs": int(total_epochs),
                "best_metric": 0.0}
    atomic_write_bytes(stats_file, json.dumps(progress).encode())
    return progress


@lru_cache(maxsize=1)
def relearn_defaults() -> dict[str, Any]:
    """The `relearning` workflow's learning rate and loss weights, as ``relearn.yaml`` sets them (read once: every
    ``/info`` and infer request asks for the task's settings)."""
    import yaml

    relearn = yaml.safe_load((CONFIGS / "relearn.yaml").read_text())
    return {k: relearn[k] for k in ("learning_rate", "lambda_t", "lambda_f", "lambda_p")}


class RelearnTrain(TrainTask):
    """Runs the bundle's ``relearning`` workflow from ``base_model`` (the app's phase-1 model) on every cine with a
    label under ``annotation_tag`` (its non-empty frames are the support), then writes ``relearned.pt`` (weights and
    spec) atomically into ``model_dir``;
    the "propagate" task reloads it on its next request. Progress and losses go to MLflow (``tracking_uri``)."""

    def __init__(self, model_dir: str | Path, base_model: str | Path, image_size: int | None = None,
                 clip_length: int = CLIP_LENGTH, tau_hidden: int | None = None, max_epochs: int = 3,
                 tracking_uri: str | None = None) -> None:
        super().__init__("Phase-2 relearning on the datastore's cines (their labelled frames as support)")
        self.model_dir = Path(model_dir)
        self.base_model = Path(base_model)
        self.image_size, self.clip_length, self.tau_hidden = image_size, clip_length, tau_hidden
        self.max_epochs = max_epochs
        self.tracking_uri = tracking_uri or f"sqlite:///{(self.model_dir / 'mlruns.db').resolve()}"

    def config(self) -> dict[str, Any]:
        return {"max_epochs": self.max_epochs, "annotation_tag": "final", **relearn_defaults()}

    def stats(self) -> dict[str, Any]:
        path = self.model_dir / "relearn_stats.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def entries(self, datastore: Datastore, tag: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """Datalist entries for cines with a usable annotation; the others with the reason they were left out."""
        out, skipped = [], []
        for image_id in sorted(datastore.list_images()):
            if not datastore.get_label_uri(image_id, tag):
                continue
            image = datastore.get_image_uri(image_id)
            try:
                label, frames = datastore_annotation(datastore, image_id, tag)
                found = read_annotations(label, read_cine(image, min_frames=2, lazy=True), frames or None)
            except CineReadError as exc:
                skipped.append({"id": image_id, "error": exc.problem})
                continue
            frames = [t for t in sorted(found) if found[t].any()]
            if frames:
                out.append({"id": image_id, "image": image, "label": label, "labeled_frames": frames})
        return out, skipped

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        cfg = {**self.config(), **{k: v for k, v in request.items() if k in self.config()}}
        tag = check_name(cfg["annotation_tag"], "label tag")
        phase1 = self.base_model
        if not phase1.is_file():
            raise RequestError(409, f"the app's base model {phase1} is missing")
        entries, skipped = self.entries(datastore, tag)
        if not entries:
            raise RequestError(422, f"no cine has a label with an annotated frame under tag '{tag}'")
        epochs = int(cfg["max_epochs"])
        work = self.model_dir / "relearn_work"
        shutil.rmtree(work, ignore_errors=True)  # a new relearning starts from the phase-1 model
        datalist = write_datalist(work / "datalist.json", {"training": entries, "validation": entries})
        cmd = bundle_command(
            "relearning", ["train.yaml", "relearn.yaml"], datalist=datalist, phase1_checkpoint=phase1,
            ckpt_dir=work / "models", output_dir=work / "eval",
            image_size=self.image_size or input_size(phase1, 128)[0],
            clip_length=self.clip_length, **({"tau_hidden": self.tau_hidden} if self.tau_hidden else {}),
            max_epochs=epochs, val_interval=epochs + 1,
            learning_rate=cfg["learning_rate"], lambda_t=cfg["lambda_t"], lambda_f=cfg["lambda_f"],
            lambda_p=cfg["lambda_p"], tracking_uri=self.tracking_uri,
            run_name="monailabel-relearn-" + time.strftime("%Y%m%d-%H%M%S"))
        t0 = time.time()
        logger.info("relearn: %d cines, %d epochs", len(entries), epochs)
        stats_file = self.model_dir / "relearn_stats.json"
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
            while proc.poll() is None:  # progress as 3D Slicer's plugin polls it (/info train_stats)
                write_progress(stats_file, work / "models", epochs)
                time.sleep(1.0)
            if proc.returncode:
                err.seek(0)
                raise RuntimeError(f"relearning failed (exit {proc.returncode}): {err.read()[-2000:]}")
        final = work / "models" / f"phase2_resume_checkpoint_epoch={epochs}.pt"
        with atomic_path(self.model_dir / RELEARNED_FILE) as tmp:  # weights + spec (architecture, input size)
            torch.save({"model": model_state(final), "spec": checkpoint_spec(final)}, tmp)
        stats = {"cines": [e["id"] for e in entries], "skipped": skipped, "epochs": epochs,
                 "seconds": round(time.time() - t0, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "checkpoint": RELEARNED_FILE,
                 # the names 3D Slicer's plugin reads; relearning has no labelled validation frames, so no Dice
                 "epoch": epochs, "total_epochs": epochs, "best_metric": 0.0, "total_time": round(time.time() - t0, 1)}
        atomic_write_bytes(self.model_dir / "relearn_stats.json", json.dumps(stats, indent=1).encode())
        return stats
