"""Infer task "propagate": a cine plus a label volume with some frames annotated -> every frame segmented."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from torch import nn

from medvos.inference.predictor import VideoPredictor
from medvos.inference.propagator import FUSION_MODES
from medvos.inference.workflow import run_inference
from medvos.io.dicom_seg import dicom_sources, write_dicom_seg
from medvos.io.errors import CineReadError
from medvos.io.readers import read_cine
from medvos.io.writers import write_nifti
from medvos.monai_label.geometry import write_labels_on_itk_grid
from medvos.networks.checkpoint import input_size, is_relearned, load_model, checkpoint_clip_length
from medvos.networks.relearn_model import CLIP_LENGTH

logger = logging.getLogger(__name__)
RELEARNED_FILE = "relearned.pt"
# the app's inference options where they differ from `inferring`'s: a shorter test-time tuning (30 steps on a bank of
# 16 views, about 2.7 s, against `inferring`'s 200 on 64) and one pass (no self-annotation: a second tuning and pass
# would double a request) keep an infer request within seconds (model card, "The app's short tuning",
# "Self-annotation"); and float32 tuning: bf16 (`inferring`'s ``auto`` since 0.27.0) lowered the app's worst carotid
# recording by more than the rule fixed before allowed (model card, "The tuning in bf16"); ``options`` override them
# (``tune_steps`` 0: untuned; ``self_annotate`` 2: `inferring`'s)
APP_OPTIONS: dict[str, Any] = {"tune_steps": 30, "tune_views": 16, "self_annotate": 0, "tune_precision": "float32"}


def _stamp(path: str | Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return str(path), st.st_mtime_ns, st.st_size


class PropagateInfer(InferTask):
    """Few-shot propagation with the relearned model when ``relearned.pt`` is in ``model_dir`` (written by the
    "relearn" task), else ``base_model`` (default: the bundle's shipped general model); weights are reloaded when
    either file changes, so a finished "relearn" task is picked up. The network, its input size and TAU clip length come
    from the checkpoint itself (``image_size`` overrides the size; only needed for older files without a spec).

    Propagation is the ``inferring`` workflow's (:func:`medvos.inference.defaults.make_propagator`: appearance and
    motion fused by default), except a shorter test-time tuning and one pass (:data:`APP_OPTIONS`; ``--conf tune_steps
    0`` turns tuning off, and the motion fusion then takes ``inference.yaml``'s ``untuned`` settings); ``options``
    override its settings (``memory_tree``, ``motion``, ``tune_steps``, ``tune_views``, ``self_annotate``, ...).
    Request keys (the app fills ``image`` and ``annotation`` with checked paths): ``fusion``, ``annotated_frames``
    (a list or text such as ``"0, 40"``; empty for "every non-empty frame of the label"; a listed frame without an
    object says the object is absent there), ``dicom_seg`` (true: also write a DICOM SEG referencing the DICOM cine).
    ``labels`` names the label values (``{"lv": 1, "myocardium": 2}``); a value without a name is ``object <v>``.
    The response JSON holds the per-frame confidence and drift and the name of every propagated object.
    """

    def __init__(self, model_dir: str | Path, base_model: str | Path, image_size: int | None = None,
                 clip_length: int = CLIP_LENGTH, tau_hidden: int | None = None, fusion: str = "nearest",
                 threshold: float = 0.5,
                 labels: dict[str, int] | None = None, options: dict[str, Any] | None = None) -> None:
        super().__init__(type=InferType.SEGMENTATION, labels=dict(labels or {"object": 1}), dimension=3,
                         description="Propagate the annotated frame(s) of a cine to every frame (few-shot)",
                         # settings as 3D Slicer's plugin shows them: a list is a drop-down (first item = default),
                         # text a text field; an empty list would crash the plugin's /info handling
                         config={"fusion": [fusion] + [m for m in FUSION_MODES if m != fusion],
                                 "annotated_frames": "", "annotation_tag": "final"})
        self.fusion = fusion
        self.model_dir = Path(model_dir)
        self.base_model = Path(base_model)
        self.image_size, self.clip_length, self.tau_hidden = image_size, clip_length, tau_hidden
        self.threshold, self.options = threshold, {**APP_OPTIONS, **(options or {})}
        self._lock = threading.Lock()
        self._net: tuple[tuple, nn.Module] | None = None
        self._predictor: tuple[tuple, VideoPredictor] | None = None
        self._confidence: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

    def names(self, values: Sequence[int]) -> dict[int, str]:
        """The name of each label value (``labels``; ``object <v>`` for a value without one)."""
        by_value = {int(v): str(k) for k, v in self.labels.items()}
        return {int(v): by_value.get(int(v), f"object {int(v)}") for v in values}

    def checkpoint(self) -> Path | None:
        for path in (self.model_dir / RELEARNED_FILE, self.base_model):
            if path.is_file():
                return path
        return None

    def is_valid(self) -> bool:
        return self.checkpoint() is not None

    def info(self) -> dict[str, Any]:
        ckpt = self.checkpoint()
        return {**super().info(), "checkpoint": ckpt.name if ckpt else None}

    def network(self) -> tuple[nn.Module, Path, int, int]:
        """``(model, checkpoint, input size, clip length)`` of the current model (loaded once per file version)."""
        ckpt = self.checkpoint()
        if ckpt is None:
            raise FileNotFoundError(f"no {RELEARNED_FILE} in {self.model_dir} and no base model {self.base_model}")
        key = _stamp(ckpt)
        with self._lock:
            if self._net is None or self._net[0] != key:
                device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
                net = load_model(ckpt, None, self.clip_length, self.tau_hidden)
                size = self.image_size or input_size(ckpt, 128)[0]
                self._net = (key, net.to(device).eval(), size, checkpoint_clip_length(ckpt, self.clip_length))
                logger.info("propagate: loaded %s (input %d px)", ckpt, size)
            return self._net[1], ckpt, self._net[2], self._net[3]

    def predictor(self, net: nn.Module, size: int, clip_length: int, fusion: str) -> VideoPredictor:
        """The `inferring` predictor with the app's options (one per network version and fusion; each video's state
        lives in its own :class:`VideoState`)."""
        key = (id(net), size, clip_length, fusion)
        with self._lock:
            if self._predictor is None or self._predictor[0] != key:
                self._predictor = (key, VideoPredictor.with_defaults(net, size, clip_length, fusion=fusion,
                                                                      threshold=self.threshold, **self.options))
            return self._predictor[1]

    def propagate(self, image: str, annotation: str, fusion: str = "nearest",
                  annotated: Sequence[int] | None = None, output: str | Path | None = None,
                  dicom_seg: str | Path | None = None) -> dict[str, Any]:
        """Run the propagation; with ``output`` the labels are written there as NIfTI (on the grid SimpleITK reads the
        image on), with ``dicom_seg`` also as a DICOM SEG referencing the cine (a DICOM cine only).

        Results are cached per (image, annotation, checkpoint) file version and annotated frames, both as asked
        (none: "the non-empty frames") and as resolved, so the strategy reuses an infer's propagation.
        """
        net, ckpt, size, clip_length = self.network()
        key = (_stamp(image), _stamp(annotation), _stamp(ckpt), fusion, tuple(annotated or ()))
        with self._lock:
            cached = self._confidence.get(key)
        if cached is not None and output is None and dicom_seg is None:
            return cached
        cine = read_cine(image, lazy=True)
        if dicom_seg is not None and cine.format not in ("dicom", "dicom-series"):
            raise CineReadError(image, f"a DICOM SEG result needs a DICOM cine (this one is {cine.format}); ask for "
                                       "the NIfTI result (output=image)")
        predictor = self.predictor(net, size, clip_length, fusion)
        res = run_inference(cine, annotation, Path(tempfile.gettempdir()), net, size, clip_length, fusion, outputs=(),
                            threshold=self.threshold, annotated=annotated or None, progress=False,
                            keep_labels=output is not None or dicom_seg is not None,
                            predictor=predictor)  # nothing written: labels kept
        if output:  # on the grid SimpleITK (3D Slicer) reads the stored image on, else medvos' own geometry
            if not write_labels_on_itk_grid(res["labels"], image, output):
                write_nifti(output, res["labels"], like=cine)
        if dicom_seg:
            write_dicom_seg(dicom_seg, res["labels"], dicom_sources(cine), label_names=self.names(res["objects"]),
                            annotated=res["annotated"])
        out = {"frame_confidence": [round(float(c), 4) for c in res["confidence"]],
               "frame_drift": [round(float(d), 4) for d in res["drift"]],
               "annotated_frames": res["annotated"], "num_frames": int(len(res["confidence"])),
               "objects": res["objects"], "object_names": {str(v): n for v, n in self.names(res["objects"]).items()},
               "model": "relearned" if is_relearned(ckpt) else "phase1", "checkpoint": ckpt.name}
        with self._lock:
            self._confidence[key] = out
            self._confidence[key[:-1] + (tuple(res["annotated"]),)] = out
            while len(self._confidence) > 256:
                self._confidence.popitem(last=False)
        return out

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``(NIfTI result, response JSON)``; with ``request["dicom_seg"]`` the JSON's ``dicom_seg`` names the SEG
        file (temporary, like the NIfTI: the caller removes both)."""
        made = []
        for suffix in (".nii.gz",) + ((".dcm",) if request.get("dicom_seg") else ()):
            fd, path = tempfile.mkstemp(suffix=suffix, prefix="medvos_label_")
            os.close(fd)
            made.append(path)
        try:
            params = self.propagate(request["image"], request["annotation"], request.get("fusion", "nearest"),
                                    request.get("annotated_frames") or None, output=made[0],
                                    dicom_seg=made[1] if len(made) > 1 else None)
        except BaseException:
            for path in made:
                os.unlink(path)
            raise
        if len(made) > 1:
            params = {**params, "dicom_seg": made[1]}
        return made[0], params
